"""The real-photo check: yolov7-tiny from scratch on the raccoon set (data/raccoon.yaml).

    python benchmarks/bench_raccoon.py [--epochs 30] [--hyp FILE] [--json] [-- key=value ...]

Protocol (docs/benchmarks.md, "Real photos: raccoon"): yolov7-tiny from scratch, 320 px, batch 16, 2
loader workers, 160 training photos, mAP on the 40 validation photos. Runs train.py as a user
would (so the recipe train.py picks when --hyp is not given is what is measured) and prints
mAP@.5 and mAP@.5:.95 of the best epoch and of the last, and the wall time of the whole run.
Takes ~10 minutes on 2 CPU cores at 30 epochs; on a shared machine run it under
``flock /tmp/elan-cpu.lock``. Needs the raccoon folder (see data/raccoon.yaml).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = ["--data", "raccoon", "--cfg", "cfg/yolov7-tiny.yaml", "--img-size", "320", "--batch-size", "16",
            "--workers", "2"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--hyp", default="", help="hyper-parameter YAML ('' = train.py's automatic choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="", help="where the run folder goes (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object last")
    p.add_argument("overrides", nargs="*", help="extra train.py arguments (after --), e.g. lr0=0.02")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "train.py", *PROTOCOL, "--epochs", str(args.epochs), "--seed", str(args.seed),
               "--project", args.project or tmp, "--name", "raccoon", "--json", *args.overrides]
        if args.hyp:
            cmd += ["--hyp", args.hyp]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if run.returncode != 0:
        sys.exit(f"bench_raccoon: train.py failed ({run.returncode}):\n{run.stderr[-3000:]}")
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    log = (run.stdout + run.stderr).splitlines()
    recipe = next((line.split("recipe: ", 1)[1] for line in log if line.startswith("recipe: ")), args.hyp or "?")
    precision = next((line.split()[1].rstrip(";") for line in log if line.startswith("precision ")), "?")
    result = {
        "epochs": args.epochs, "hyp": recipe, "precision": precision, "best_epoch": summary["best_epoch"],
        "mAP50": round(summary["mAP50"], 4), "mAP50_95": round(summary["mAP50_95"], 4),
        "final_mAP50": round(summary["final_mAP50"], 4), "final_mAP50_95": round(summary["final_mAP50_95"], 4),
        "train_seconds": summary["seconds"], "wall_seconds": round(wall, 1),
    }
    print(f"raccoon, yolov7-tiny from scratch, 320 px, {args.epochs} epochs ({recipe}; {precision}): "
          f"best epoch {result['best_epoch']}: mAP@.5 {result['mAP50']:.3f}, mAP@.5:.95 {result['mAP50_95']:.3f}; "
          f"last: {result['final_mAP50']:.3f} / {result['final_mAP50_95']:.3f}; wall {wall:.0f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
