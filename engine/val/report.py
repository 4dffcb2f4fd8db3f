"""What val.py prints and writes: the results table, COCO summary lines, plots, label files,
the COCO results json and its pycocotools cross-check."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.val.evaluator import EvalResult
from utils.coco_eval import RECALL_THRESHOLDS, STAT_NAMES
from utils.coco_json import detections_to_json
from utils.metric_plots import plot_confidence_curve, plot_confusion_matrix, plot_pr_curve

_STAT_LABELS = (
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


def format_stats(stats: dict[str, float], other: dict[str, float] | None = None, other_name: str = "") -> str:
    """pycocotools' 12 summary lines; with ``other``, two columns: ours and ``other_name``'s."""
    if other is None:
        return "\n".join(f" {label} = {stats[k]:0.3f}" for k, label in zip(STAT_NAMES, _STAT_LABELS, strict=True))
    lines = [f" {'':71} {'ours':>8} {other_name:>12}"]
    lines += [f" {label} {stats[k]:8.4f} {other[k]:12.4f}" for k, label in zip(STAT_NAMES, _STAT_LABELS, strict=True)]
    return "\n".join(lines)


def results_table(result: EvalResult, names: Sequence[str], per_class: bool) -> str:
    """YOLOv7's table: class, images, labels, P, R, mAP@.5, mAP@.5:.95 ('all' first)."""
    fmt = "%20s" + "%12s" * 6
    lines = [fmt % ("Class", "Images", "Labels", "P", "R", "mAP@.5", "mAP@.5:.95")]
    row = "%20s" + "%12i" * 2 + "%12.3g" * 4
    m = result.metrics
    lines.append(row % ("all", result.num_images, int(result.num_labels.sum()), m["precision"], m["recall"],
                        m["mAP_0.5"], m["mAP_0.5:0.95"]))
    if per_class:
        ap50, ap = result.coco.per_class_ap()
        gt = result.gt
        for k in torch.nonzero(result.f1.has_gt).squeeze(1).tolist():
            images = int(torch.unique(gt.image[(gt.category == k) & ~gt.crowd]).numel())
            lines.append(row % (names[k] if k < len(names) else k, images, int(result.num_labels[k]),
                                result.f1.precision[k], result.f1.recall[k], ap50[k], ap[k]))
    return "\n".join(lines)


def save_plots(result: EvalResult, names: Sequence[str], save_dir: Path) -> list[Path]:
    """PR_curve.png, F1/P/R_curve.png and confusion_matrix.png in ``save_dir``."""
    ap50, _ = result.coco.per_class_ap()
    pr = result.coco.precision[0, :, :, 0, -1].T  # [K, R] at IoU 0.5, area all, 100 dets
    f1 = result.f1
    conf, has_gt = f1.conf_grid.cpu().numpy(), f1.has_gt.cpu().numpy()
    paths = [plot_pr_curve(np.array(RECALL_THRESHOLDS), pr.cpu().numpy(), ap50.cpu().numpy(), names,
                           save_dir / "PR_curve.png")]
    for curve, label, file in ((f1.f1_curve, "F1", "F1_curve.png"), (f1.precision_curve, "Precision", "P_curve.png"),
                               (f1.recall_curve, "Recall", "R_curve.png")):
        paths.append(plot_confidence_curve(conf, curve.cpu().numpy(), has_gt, names, label, save_dir / file))
    paths.append(plot_confusion_matrix(result.confusion.cpu().numpy(), names, save_dir / "confusion_matrix.png"))
    return paths


def write_label_files(dets: Sequence[Tensor], paths: Sequence[str], shapes: Sequence, folder: Path,
                      save_conf: bool) -> None:
    """One YOLO label file per image: ``class cx cy w h [conf]``, normalised to the original image.
    ``dets`` per image [n, 6] xyxy original pixels; ``shapes`` the batch's ((h0, w0), ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    for d, path, ((h0, w0), _) in zip(dets, paths, shapes, strict=True):
        d = d.double().cpu()
        gain = torch.tensor([w0, h0, w0, h0], dtype=torch.float64)
        xyxy = d[:, :4] / gain
        cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
        with open(folder / f"{Path(path).stem}.txt", "w") as f:
            for box, score, cls in zip(cxcywh.tolist(), d[:, 4].tolist(), d[:, 5].long().tolist(), strict=True):
                values = [cls, *box] + ([score] if save_conf else [])
                f.write(("%g " * len(values)).rstrip() % tuple(values) + "\n")


def save_coco_json(result: EvalResult, key_to_image_id: dict[int, int], category_ids: Sequence[int],
                   path: Path) -> Path:
    """The detections as a COCO results file (original category ids and image ids)."""
    entries = detections_to_json(result.detections, list(category_ids))
    for e in entries:
        e["image_id"] = key_to_image_id[e["image_id"]]
    path.write_text(json.dumps(entries))
    return path


def pycocotools_stats(annotation_file: Path, results_file: Path, image_ids: Sequence[int]) -> dict[str, float]:
    """pycocotools' 12 numbers for ``results_file`` on the images ``image_ids`` of the annotations."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotation_file))
        dt = gt.loadRes(str(results_file))
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(set(image_ids))
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, (float(v) for v in ev.stats[:12]), strict=True))
