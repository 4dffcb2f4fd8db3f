"""Write a training batch with its boxes (and the outlines of polygon labels) drawn, like YOLOv7's train_batch0.jpg.

    python -m data.preview --data shapes --out runs/preview.jpg [--img 320 --batch 16 --hyp FILE] [key=value ...]

Also writes labels.jpg (label statistics) beside it with ``--labels``. Prints one JSON object
(paths, image and box counts) as its last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from data.config import load_data_config
from data.dataset import DetectionDataset
from data.loader import Batch, build_dataloader
from utils.config import Hyp, apply_overrides, load
from utils.plots import plot_images, plot_labels


def _outlines(dataset: DetectionDataset, batch: Batch) -> list[list[np.ndarray | None]]:
    """Per batch image, the outline of each target row in batch-image pixels (None: a box row).

    Samples are deterministic in (seed, epoch, index), so the augmenter rebuilds each batch
    sample with its polygons, which the Batch does not carry.
    """
    out = []
    for index in batch.indices.tolist():
        if dataset.augmenter is not None:
            _, _, polygons = dataset.augmenter.sample(index, dataset.rng(index))
        else:
            _, _, polygons, _ = dataset.letterboxed(index)
        out.append(polygons)
    return out


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
    p.add_argument("overrides", nargs="*", metavar="key=value", help="hyper-parameter overrides, e.g. paste_in=1")
    args = p.parse_args(argv)
    cfg = load_data_config(args.data)
    hyp = apply_overrides(load(Hyp, args.hyp) if args.hyp else Hyp(), args.overrides)
    augment = not args.no_augment
    loader, dataset = build_dataloader(cfg.split(args.split), cfg.nc, img_size=args.img, batch_size=args.batch, hyp=hyp,
                                       augment=augment, shuffle=augment, seed=args.seed, names=cfg.names)
    batch = next(iter(loader))
    out = Path(args.out)
    polygons = _outlines(dataset, batch)
    plot_images(batch.images, batch.targets, batch.paths, cfg.names, out, polygons=polygons)
    result = {"out": str(out), "images": len(batch.paths), "boxes": len(batch.targets),
              "polygons": sum(p is not None for image in polygons for p in image),
              "shape": list(batch.images.shape)}
    if args.labels:
        result["labels"] = str(plot_labels(dataset.labels, cfg.names, out.with_name("labels.jpg")))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
