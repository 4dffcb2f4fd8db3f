"""Check our model builder against the official YOLOv7 configs and their published sizes.

    python benchmarks/check_reference_configs.py [--ref DIR] [--json]

DIR (default: $ELAN_YOLO_REFERENCE, else ../shared/reference/yolov7 next to the checkout)
holds the official cfg/ files and README.md with the table "params (training cfg) | params
fused | GFLOPs fused". Each official file is built unchanged (on the meta device: shapes
only), and so is our compact config of the same name, whose weights must map one to one onto
the official model's (models.yolo.unrolled_key_map). Exit status 1 on any mismatch.

The published fused count of YOLOR-CSP keeps the implicit vectors (the official
IDetect.fuse folds them but leaves them in the model); the YOLOv7 rows come from the deploy
configs without them. Our fuse() removes them, so a row matches when the table equals our
fused count or our fused count plus the removed implicit parameters; the report says which.
GFLOPs (FlopCounterMode, 2 x MACs) must agree to 0.02 with the table's (thop).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.parse import resolve_cfg_path  # noqa: E402
from models.yolo import Model, unrolled_key_map  # noqa: E402
from utils.config import ConfigError  # noqa: E402

GFLOPS_TOLERANCE = 0.02
_ROW = re.compile(r"^\|\s*(\S[^|]*?)\s*\|\s*([\d,]+)\s*\|\s*([\d,]+|-)\s*\|\s*([\d.]+)\s*@(\d+)\s*\|")


def default_reference() -> Path:
    return Path(os.environ.get("ELAN_YOLO_REFERENCE", ROOT.parent / "shared" / "reference" / "yolov7"))


def read_table(ref: Path) -> dict[str, dict]:
    """Official config path (relative to ``ref``) -> {params, fused_params, gflops, img}."""
    table = {}
    for line in (ref / "README.md").read_text().splitlines():
        match = _ROW.match(line)
        if not match:
            continue
        name, params, fused, gflops, img = match.groups()
        if name.endswith(".yaml"):
            path = f"cfg/training/{name}"
        else:  # "YOLOR-CSP (baseline)"
            path = f"cfg/baseline/{name.split()[0].lower()}.yaml"
        table[path] = {
            "params": int(params.replace(",", "")),
            "fused_params": None if fused == "-" else int(fused.replace(",", "")),
            "gflops": float(gflops),
            "img": int(img),
        }
    return table


def implicit_params(model: Model) -> int:
    head = model.head
    return sum(p.numel() for mods in (head.ia, head.im) if mods is not None for p in mods.parameters())


def measure(path: Path | str, img: int) -> tuple[dict, Model]:
    """Params, fused params (and + implicit), fused GFLOPs of a config built on the meta device."""
    with torch.device("meta"):
        model = Model(path)
        params, implicit = sum(p.numel() for p in model.parameters()), implicit_params(model)
        fused = Model(path).fuse()
    fused_params = sum(p.numel() for p in fused.parameters())
    return {
        "params": params,
        "fused_params": fused_params,
        "fused_params_with_implicit": fused_params + implicit,
        "gflops": fused.info(img)["gflops"],
    }, model


def key_map_matches(compact: Model, official: Model) -> bool:
    """Our compact model's state dict maps one to one, in order and shape, onto the official one."""
    key_map = unrolled_key_map(compact)
    src, dst = compact.state_dict(), official.state_dict()
    return ([key_map[k] for k in src] == list(dst)
            and all(src[k].shape == dst[key_map[k]].shape for k in src))


def check(ref: Path) -> list[dict]:
    """One result dict per table row (see the module docstring for the rules)."""
    results = []
    for rel, want in read_table(ref).items():
        got, official = measure(ref / rel, want["img"])
        fused_rule = ("ours" if want["fused_params"] in (None, got["fused_params"]) else
                      "ours + implicit" if want["fused_params"] == got["fused_params_with_implicit"] else None)
        row = {"config": rel, "table": want, **got, "fused_rule": fused_rule}
        row["ok"] = (got["params"] == want["params"] and fused_rule is not None
                     and abs(got["gflops"] - want["gflops"]) <= GFLOPS_TOLERANCE)
        try:  # our compact config of the same name (yolor-csp-x.yaml: yolor-csp.yaml at scale x)
            resolve_cfg_path(Path(rel).name)
        except ConfigError:
            results.append(row)
            continue
        with torch.device("meta"):
            compact = Model(Path(rel).name)
        row["compact_params"] = sum(p.numel() for p in compact.parameters())
        row["compact_key_map"] = key_map_matches(compact, official)
        row["ok"] &= row["compact_params"] == got["params"] and row["compact_key_map"]
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, default=default_reference(), help="official YOLOv7 checkout")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    if not (args.ref / "README.md").is_file():
        print(f"error: {args.ref}/README.md not found (set --ref or ELAN_YOLO_REFERENCE)", file=sys.stderr)
        return 2
    results = check(args.ref)
    ok = bool(results) and all(r["ok"] for r in results)
    if not args.json:
        for r in results:
            print(f"{'ok ' if r['ok'] else 'BAD'} {r['config']:<32} params {r['params']:>12,} "
                  f"(table {r['table']['params']:,}), fused {r['fused_params']:>12,} [{r['fused_rule']}], "
                  f"GFLOPs {r['gflops']:.2f} (table {r['table']['gflops']:.2f}), "
                  f"compact {r.get('compact_key_map', '-')}")
    print(json.dumps({"ok": ok, "configs": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
