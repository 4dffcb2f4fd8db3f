"""Model summary: ``python -m models --cfg FILE [--img 640] [--scale S] [--nc N] [--json]``.

Prints one line per config row (index, inputs, parameters, module) and the totals before and
after ``fuse()``; with ``--json`` the last line is one JSON object with ``layers``, ``params``,
``fused_params``, ``gflops``, ``fused_gflops`` (GFLOPs = 2 x MACs of one image at --img).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

from models.yolo import Model
from utils.config import ConfigError
from utils.errors import command_main


def summary(cfg: str, img: int = 640, scale: str | None = None, nc: int | None = None) -> tuple[Model, dict]:
    """Build ``cfg`` and return (model, totals dict) with unfused and fused numbers."""
    model = Model(cfg, nc=nc, scale=scale).eval()
    info = model.info(img)
    fused = copy.deepcopy(model).fuse().info(img)
    totals = {
        "cfg": cfg,
        "scale": model.yaml.get("scale"),
        "img_size": img,
        "layers": info["layers"],
        "conv_layers": info["conv_layers"],
        "params": info["params"],
        "gflops": round(info["gflops"], 4),
        "fused_layers": fused["layers"],
        "fused_params": fused["params"],
        "fused_gflops": round(fused["gflops"], 4),
        "stride": [int(s) for s in model.stride.tolist()],
    }
    return model, totals


def _layer_lines(model: Model) -> list[str]:
    lines = [f"{'':>4}{'from':>18}{'params':>12}  module"]
    for i, (layer, f) in enumerate(zip(model.model, model.froms, strict=True)):
        params = sum(p.numel() for p in layer.parameters())
        lines.append(f"{i:>4}{str(f):>18}{params:>12,}  {type(layer).__name__}")
    return lines


@command_main("python -m models")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="model YAML (path, or a name in cfg/)")
    parser.add_argument("--img", type=int, default=640, help="square image size for GFLOPs")
    parser.add_argument("--scale", default=None, help="entry of the config's scales table")
    parser.add_argument("--nc", type=int, default=None, help="number of classes (default: the config's)")
    parser.add_argument("--json", action="store_true", help="print only one JSON object")
    args = parser.parse_args(argv)
    try:
        model, totals = summary(args.cfg, args.img, args.scale, args.nc)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(totals))
        return 0
    print("\n".join(_layer_lines(model)))
    print(f"{args.cfg}: {totals['layers']} layers ({totals['conv_layers']} convolutions), "
          f"{totals['params']:,} parameters, {totals['gflops']:.2f} GFLOPs @{args.img}; "
          f"fused: {totals['fused_layers']} layers, {totals['fused_params']:,} parameters, "
          f"{totals['fused_gflops']:.2f} GFLOPs; strides {totals['stride']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
