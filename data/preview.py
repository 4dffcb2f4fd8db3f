"""Write a training batch with its boxes (and the outlines of polygon labels) drawn, like YOLOv7's train_batch0.jpg.

    python -m data.preview --data shapes --out runs/preview.jpg [--img 320 --batch 16 --hyp FILE] [key=value ...]

Also writes labels.jpg (label statistics) beside it with ``--labels``. Prints one JSON object
(paths, image and box counts) as its last line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.config import SPLITS, load_data_config
from data.dataset import DetectionDataset
from data.loader import Batch, build_dataloader
from utils import cli
from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, option
from utils.config import Hyp, apply_overrides, load
from utils.errors import command_main
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


@dataclass
class PreviewOptions:
    """The flags of ``python -m data.preview``."""

    data: str = option("shapes", "data-set YAML or built-in name")
    split: str = option("train", choices=SPLITS)
    hyp: str | None = option(None, "hyper-parameter YAML (default: Hyp() defaults)")
    img: int = option(320, "image size", at_least=MIN_IMG_SIZE, at_most=MAX_IMG_SIZE)
    batch: int = option(16, at_least=1)
    seed: int = option(0)
    no_augment: bool = option(False, "letterboxed images instead of the training pipeline")
    labels: bool = option(False, "also write labels.jpg beside --out")
    out: str = option("runs/preview.jpg")
    json: bool = option(False, "(accepted; the JSON summary is always printed last)")
    overrides: list[str] = option([], "hyper-parameter overrides, e.g. paste_in=1", positional=True, nargs="*",
                                  metavar="key=value")


def preview(opt: PreviewOptions) -> dict:
    """Draw one batch of ``opt.data``'s split to ``opt.out`` (and labels.jpg with ``opt.labels``);
    returns the summary: paths, image / box / polygon counts, the batch shape."""
    cfg = load_data_config(opt.data)
    hyp = apply_overrides(load(Hyp, opt.hyp) if opt.hyp else Hyp(), opt.overrides)
    augment = not opt.no_augment
    loader, dataset = build_dataloader(cfg.split(opt.split), cfg.nc, img_size=opt.img, batch_size=opt.batch, hyp=hyp,
                                       augment=augment, shuffle=augment, seed=opt.seed, names=cfg.names)
    batch = next(iter(loader))
    out = Path(opt.out)
    polygons = _outlines(dataset, batch)
    plot_images(batch.images, batch.targets, batch.paths, cfg.names, out, polygons=polygons)
    result = {"out": str(out), "images": len(batch.paths), "boxes": len(batch.targets),
              "polygons": sum(p is not None for image in polygons for p in image),
              "shape": list(batch.images.shape)}
    if opt.labels:
        result["labels"] = str(plot_labels(dataset.labels, cfg.names, out.with_name("labels.jpg")))
    return result


@command_main("python -m data.preview")
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser(PreviewOptions, __doc__, prog="python -m data.preview")
    print(json.dumps(preview(cli.namespace_to(PreviewOptions, parser.parse_args(argv)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
