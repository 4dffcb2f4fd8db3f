"""Convert an official YOLOv7 checkpoint: ``python -m models.convert SRC.pt [--out DST.pt] [--json]``.

Reads a file written by WongKinYiu/yolov7 (train.py's checkpoints, the released weights, a
reparameterized deploy model) without running its pickle (``models.official``) and writes one
of ours (docs/design.md, "Checkpoint contract"; default: SRC's stem + ``-elan.pt`` beside it).
Where the network is one of our compact configs the weights move onto it;
``--keep-official-cfg`` keeps the file's own unrolled rows. ``--json``: the last line is one
JSON object with ``out``, ``cfg``, ``params``, ``nc``, ``names`` (and ``epoch``, ``weights``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.official import is_official, pickle_globals
from models.official_convert import convert_official
from utils.checkpoint import CheckpointError, save_checkpoint
from utils.errors import command_main


def default_out(src: str | Path) -> Path:
    """SRC's stem + ``-elan.pt``, beside SRC (``yolov7.pt`` -> ``yolov7-elan.pt``)."""
    src = Path(src)
    return src.with_name(f"{src.stem}-elan.pt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.convert", description=__doc__.splitlines()[0])
    p.add_argument("src", help="official YOLOv7 checkpoint (.pt)")
    p.add_argument("--out", default=None, help="output checkpoint (default: SRC stem + -elan.pt)")
    p.add_argument("--keep-official-cfg", action="store_true",
                   help="keep the file's own unrolled config instead of our compact one")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p.parse_args(argv)


@command_main("python -m models.convert")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    src = Path(args.src)
    out = Path(args.out) if args.out else default_out(src)
    if src.is_file() and not is_official(pickle_globals(src)):
        raise CheckpointError(f"{src}: not an official YOLOv7 checkpoint (it names no models.yolo / models.common "
                              "classes); checkpoints of this project need no conversion")
    if out.resolve() == src.resolve():
        raise CheckpointError(f"{out}: --out would overwrite the source checkpoint")
    conv = convert_official(src, keep_official_cfg=args.keep_official_cfg)
    save_checkpoint(conv.checkpoint, out)
    info = conv.summary()
    cfg = info["cfg"] if info["cfg"] != "official" else "the file's own unrolled config"
    print(f"{src}: official YOLOv7 checkpoint, head {info['head']}, epoch {info['epoch']}, "
          f"weights from '{info['weights']}'")
    print(f"config: {cfg}; {info['params']:,} parameters; nc {info['nc']}; names {info['names']}")
    for note in info["notes"]:
        print(f"note: {note}")
    print(f"wrote {out}")
    if args.json:
        print(json.dumps({"out": str(out), **{k: info[k] for k in ("cfg", "params", "nc", "names", "epoch",
                                                                   "weights", "head")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
