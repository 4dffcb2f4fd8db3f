"""Model summary: ``python -m models --cfg FILE [--img 640] [--scale S] [--nc N] [--json]``.

Prints one line per config row (index, inputs, parameters, module) and the totals before and
after ``fuse()``; with ``--json`` the last line is one JSON object with ``layers``, ``params``,
``fused_params``, ``gflops``, ``fused_gflops`` (GFLOPs = 2 x MACs of one image at --img).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys

from models.yolo import Model
from utils import cli
from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, option
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


@dataclasses.dataclass
class SummaryOptions:
    """The flags of ``python -m models``."""

    cfg: str = option("", "model YAML (path, or a name in cfg/)", required=True)
    img: int = option(640, "square image size for GFLOPs", at_least=MIN_IMG_SIZE, at_most=MAX_IMG_SIZE)
    scale: str | None = option(None, "entry of the config's scales table")
    nc: int | None = option(None, "number of classes (default: the config's)", at_least=1)
    json: bool = option(False, "print only one JSON object")


@command_main("python -m models")
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser(SummaryOptions, __doc__.splitlines()[0], prog="python -m models")
    args = cli.namespace_to(SummaryOptions, parser.parse_args(argv))
    model, totals = summary(args.cfg, args.img, args.scale, args.nc)
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
