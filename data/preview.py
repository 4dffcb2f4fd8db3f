"""Write a training batch with its boxes drawn, like YOLOv7's train_batch0.jpg.

    python -m data.preview --data shapes --out runs/preview.jpg [--img 320 --batch 16 --hyp FILE]

Also writes labels.jpg (label statistics) beside it with ``--labels``. Prints one JSON object
(paths, image and box counts) as its last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data.config import load_data_config
from data.loader import build_dataloader
from utils.config import Hyp, load
from utils.plots import plot_images, plot_labels


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes", help="data-set YAML or built-in name")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--hyp", default=None, help="hyper-parameter YAML (default: Hyp() defaults)")
    p.add_argument("--img", type=int, default=320, help="image size")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true", help="letterboxed images instead of the training pipeline")
    p.add_argument("--labels", action="store_true", help="also write labels.jpg beside --out")
    p.add_argument("--out", default="runs/preview.jpg")
    p.add_argument("--json", action="store_true", help="(accepted; the JSON summary is always printed last)")
    args = p.parse_args(argv)
    cfg = load_data_config(args.data)
    hyp = load(Hyp, args.hyp) if args.hyp else Hyp()
    augment = not args.no_augment
    loader, dataset = build_dataloader(cfg.split(args.split), cfg.nc, img_size=args.img, batch_size=args.batch, hyp=hyp,
                                       augment=augment, shuffle=augment, seed=args.seed)
    batch = next(iter(loader))
    out = Path(args.out)
    plot_images(batch.images, batch.targets, batch.paths, cfg.names, out)
    result = {"out": str(out), "images": len(batch.paths), "boxes": len(batch.targets),
              "shape": list(batch.images.shape)}
    if args.labels:
        result["labels"] = str(plot_labels(dataset.labels, cfg.names, out.with_name("labels.jpg")))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
