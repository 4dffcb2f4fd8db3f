"""Write a data set in any format we read (YOLO txt, COCO json, Pascal VOC) as YOLO txt or COCO json:

    python -m data.convert --to yolo --data data/raccoon.yaml --out datasets/raccoon-yolo
    python -m data.convert --to coco --data SRC.yaml --out DIR [--copy]

Both write ``DIR/images/<split>/`` (symbolic links to the images, or copies with ``--copy`` or
where links are not possible) and ``DIR/data.yaml`` for train.py. ``--to yolo`` writes
``DIR/labels/<split>/<image>.txt``; YOLO txt has no crowd or difficult flag, so those boxes are
left out (counted in the summary). ``--to coco`` writes ``DIR/annotations/instances_<split>.json``
with crowd / VOC difficult boxes as ``iscrowd: 1``. Labels are read through the label scan, so
what is written is what training would see (corrupt files reported and skipped). Prints one JSON
object (images and boxes per split) as its last line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from data.config import SPLITS, DataConfig, load_data_config
from data.scan import ScanResult, load_or_scan
from data.sources import is_coco_json
from utils import cli
from utils.cli import option
from utils.errors import UserError, command_main

FORMATS = ("yolo", "coco")


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file + rename): an interrupted run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def place_images(files: list[str], folder: Path, copy: bool) -> list[Path]:
    """Link (or copy) ``files`` into ``folder`` under unique stems (``a.jpg``, ``a_1.png``, ...
    when two sources hold the same stem: label files are named by stem); returns the new paths."""
    folder.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    placed = []
    for file in map(Path, files):
        stem, k = file.stem, 0
        while stem.lower() in taken:
            k += 1
            stem = f"{file.stem}_{k}"
        taken.add(stem.lower())
        dest = folder / f"{stem}{file.suffix}"
        dest.unlink(missing_ok=True)
        try:
            if copy:
                raise OSError("copy asked for")
            dest.symlink_to(file.resolve())
        except OSError:
            shutil.copy2(file, dest)
        placed.append(dest)
    return placed


def yolo_lines(labels: np.ndarray) -> str:
    """Rows ``cls cx cy w h`` (normalised, 6 decimals) of labels float [n, 5]."""
    return "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels.tolist())


def write_yolo_split(scan: ScanResult, split: str, out: Path, copy: bool) -> dict[str, int]:
    """``out/images/<split>`` and ``out/labels/<split>``; crowd / difficult boxes are left out."""
    images = place_images(scan.files, out / "images" / split, copy)
    for image, labels in zip(images, scan.labels, strict=True):
        _write_text(out / "labels" / split / f"{image.stem}.txt", yolo_lines(labels))
    return {"images": len(images), "boxes": sum(map(len, scan.labels)),
            "crowd_left_out": sum(map(len, scan.crowd))}


def coco_annotations(scan: ScanResult, category_ids: list[int]) -> list[dict]:
    """COCO annotations (bbox xywh in original pixels) of a scan; image ids are 1-based indices."""
    annotations = []
    for i, (shape, labels, crowd) in enumerate(zip(scan.shapes, scan.labels, scan.crowd, strict=True)):
        h0, w0 = shape
        for rows, iscrowd in ((labels, 0), (crowd, 1)):
            for c, cx, cy, w, h in rows.tolist():
                box = [(cx - w / 2) * w0, (cy - h / 2) * h0, w * w0, h * h0]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category_ids[int(c)],
                                    "bbox": [round(v, 3) for v in box], "area": round(box[2] * box[3], 3),
                                    "iscrowd": iscrowd})
    return annotations


def write_coco_split(scan: ScanResult, split: str, out: Path, names: list[str], copy: bool,
                     category_ids: list[int]) -> dict[str, int]:
    """``out/annotations/instances_<split>.json`` and its images in ``out/images/<split>``."""
    images = place_images(scan.files, out / "images" / split, copy)
    data = {
        "images": [{"id": i + 1, "file_name": p.name, "height": s[0], "width": s[1]}
                   for i, (p, s) in enumerate(zip(images, scan.shapes, strict=True))],
        "annotations": coco_annotations(scan, category_ids),
        "categories": [{"id": cid, "name": name} for cid, name in zip(category_ids, names, strict=True)],
    }
    _write_text(out / "annotations" / f"instances_{split}.json", json.dumps(data))
    return {"images": len(images), "boxes": sum(map(len, scan.labels)), "crowd": sum(map(len, scan.crowd))}


def convert(cfg: DataConfig, to: str, out: Path, copy: bool = False) -> dict[str, dict[str, int]]:
    """Write every split of ``cfg`` to ``out`` as ``to`` ('yolo' or 'coco') with its data.yaml;
    returns counts per split."""
    if to not in FORMATS:
        raise UserError(f"unknown format {to!r} (choose {', '.join(FORMATS)})", what="--to")
    if out.resolve() == cfg.root.resolve():
        raise UserError("the output folder is the source data set's root", what="--out", where=out)
    summary, data_yaml = {}, {"path": ".", "names": list(cfg.names)}
    for split in SPLITS:
        sources = getattr(cfg, split)
        if not sources:
            continue
        scan, _ = load_or_scan(sources, cfg.nc, None, cfg.names)  # no cache: never write into the source
        if to == "yolo":
            summary[split] = write_yolo_split(scan, split, out, copy)
            data_yaml[split] = f"images/{split}"
        else:
            coco_ids = scan.category_ids if any(map(is_coco_json, sources)) else list(range(1, cfg.nc + 1))
            summary[split] = write_coco_split(scan, split, out, cfg.names, copy, coco_ids)
            data_yaml[split] = f"annotations/instances_{split}.json"
    _write_text(out / "data.yaml", yaml.safe_dump(data_yaml, sort_keys=False))
    return summary


@dataclass
class ConvertOptions:
    """The flags of ``python -m data.convert``."""

    to: str = option("", "output format", choices=FORMATS, required=True)
    data: str = option("", "source data-set YAML (YOLO, COCO json or VOC sources)", required=True)
    out: str = option("", "output folder", required=True)
    copy: bool = option(False, "copy the images instead of linking them")
    json: bool = option(False, "(accepted; the JSON summary is always printed last)")


@command_main("python -m data.convert")
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser(ConvertOptions, __doc__, prog="python -m data.convert")
    args = cli.namespace_to(ConvertOptions, parser.parse_args(argv))
    out = Path(args.out)
    summary = convert(load_data_config(args.data), args.to, out, args.copy)
    for split, counts in summary.items():
        print(f"{split}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    print(f"wrote {out / 'data.yaml'}")
    print(json.dumps({"out": str(out), "to": args.to, "splits": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
