"""Hyper-parameter evolution on a shapes subset: best trial vs the hyp file, wall time with and
without the pruner.

    python benchmarks/bench_evolve.py --trials 12 --epochs 3 --img 256 --n-train 300 --n-val 100 \
        --weights runs/train/exp/weights/best.pt [--json]

From scratch, a few epochs of the shapes set score ~0 (fitness under 0.004 after 5 epochs at 160 px),
so every trial looks alike; fine-tuning the default run's checkpoint (``--weights``) starts near
its mAP and the trials differ by what their hyper-parameters do. The subset's images are the
first ones of the built-in set's splits (the generator is seeded per image), so its val images
are not among those the checkpoint trained on.

The studies train with the built-in set's recipe (hyp.shapes.yaml, SGD, no close-mosaic) and
trial 0 of each is that hyp file itself (the baseline at the same epochs). Both studies use
the same TPE seed, so they draw the same trials until pruning changes what TPE has seen.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path

import optuna
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.shapes import CLASSES, ShapesSpec, ensure_shapes  # noqa: E402
from engine.evolve.run import STARTUP_TRIALS, evolve  # noqa: E402
from engine.train.options import TrainOptions  # noqa: E402
from engine.train.recipe import SHAPES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--img", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=240)
    parser.add_argument("--n-val", type=int, default=60)
    parser.add_argument("--weights", default="", help="start every trial from this checkpoint (fine-tuning)")
    parser.add_argument("--root", default="runs/bench_evolve")
    parser.add_argument("--json", action="store_true", help="(accepted; the JSON summary is always printed last)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root).resolve()
    data = ensure_shapes(root / "shapes_subset", ShapesSpec(splits=(("train", args.n_train), ("val", args.n_val))))
    data_yaml = root / "shapes_subset.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(data), "train": "images/train", "val": "images/val",
                                         "names": list(CLASSES)}))
    out = {"protocol": vars(args)}
    for prune in (True, False):
        name = "pruned" if prune else "unpruned"
        opt = TrainOptions(data=str(data_yaml), weights=args.weights, epochs=args.epochs, img_size=[args.img, args.img], batch_size=16,
                           workers=1, device="cpu", project=str(root), name=name, exist_ok=True,
                           # the built-in set's recipe (a subset YAML alone would get the small-set one)
                           hyp=SHAPES.hyp, optimizer=SHAPES.optimizer, close_mosaic=SHAPES.close_mosaic,
                           evolve=args.trials, evolve_prune=prune)
        t0 = time.time()
        summary = evolve(opt, sampler=optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS, seed=0))
        seconds = time.time() - t0
        with open(Path(summary["save_dir"]) / "evolve.csv") as f:
            rows = list(csv.DictReader(f))
        out[name] = {"seconds": round(seconds, 1), "best_trial": summary["best_trial"],
                     "best_fitness": round(summary["fitness"], 4),
                     "hyp_file_fitness": round(float(rows[0]["fitness"]), 4),
                     "states": [r["state"] for r in rows], "epochs_run": sum(int(r["epochs_run"] or 0) for r in rows)}
        print(json.dumps({name: out[name]}), flush=True)  # each study's numbers as soon as they exist
    print(json.dumps(out))


if __name__ == "__main__":
    main()
