"""YOLO-style summary numbers next to the COCO metric: precision, recall and F1 at the confidence
that maximises the mean F1 (IoU 0.5, COCO matching), and a class confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from utils.coco_match import DatasetDetections, GroundTruth, Matching, overlapping_pairs
from utils.grouped_ops import take

CONF_STEPS = 1000


@dataclass
class F1Result:
    """Per-class precision, recall and F1 at ``conf``; curves over CONF_STEPS confidences."""

    conf: float  # the confidence threshold with the best mean F1
    precision: Tensor  # [K] at ``conf``
    recall: Tensor  # [K]
    f1: Tensor  # [K]
    has_gt: Tensor  # bool [K] classes with ground truth (the means run over these)
    conf_grid: Tensor  # [C] confidences 0..1
    precision_curve: Tensor  # [K, C]
    recall_curve: Tensor  # [K, C]
    f1_curve: Tensor  # [K, C]


def best_f1(m: Matching) -> F1Result:
    """Precision / recall / F1 per class when keeping detections with score >= c, at the c of
    best mean F1 over classes with ground truth. Uses the COCO matching at IoU 0.5, area all,
    100 detections per image and class; detections matched to crowd regions do not count.

    A threshold above every score has precision 0 (no detections), so F1 is 0 there.
    """
    device = m.scores.device
    num_k = m.num_gt.shape[0]
    num_d = m.scores.numel()
    at50 = m.match_setting == 0  # setting 0: area 'all', IoU 0.5
    hit = torch.zeros(num_d, dtype=torch.bool, device=device)
    ignored = m.outside[:, 0].clone()
    hit[m.match_det[at50 & ~m.match_ignored]] = True
    ignored[m.match_det[at50]] = m.match_ignored[at50]
    grid = torch.linspace(0, 1, CONF_STEPS, dtype=torch.float64, device=device)
    bucket = torch.searchsorted(grid, m.scores, right=True) - 1  # last threshold <= score
    counted = ~ignored & (bucket >= 0)
    index = m.category * CONF_STEPS + bucket.clamp(min=0)
    size = num_k * CONF_STEPS
    n_det = torch.bincount(index[counted], minlength=size).view(num_k, CONF_STEPS)
    n_tp = torch.bincount(index[counted & hit], minlength=size).view(num_k, CONF_STEPS)
    # Counts of detections with score >= grid[j]: suffix sums over the buckets.
    n_det = n_det.flip(1).cumsum(1).flip(1).double()
    n_tp = n_tp.flip(1).cumsum(1).flip(1).double()
    num_gt = m.num_gt[:, 0].double()
    p = n_tp / n_det.clamp(min=1)
    r = n_tp / num_gt.clamp(min=1)[:, None]
    f1 = 2 * p * r / (p + r).clamp(min=1e-16)
    has_gt = m.num_gt[:, 0] > 0
    mean_f1 = f1[has_gt].mean(0) if bool(has_gt.any()) else f1.sum(0)
    j = int(mean_f1.argmax())
    return F1Result(float(grid[j]), p[:, j], r[:, j], f1[:, j], has_gt, grid, p, r, f1)


def confusion_matrix(
    gt: GroundTruth, dt: DatasetDetections, num_classes: int, conf: float = 0.25, iou_thres: float = 0.45
) -> Tensor:
    """YOLO's confusion matrix, int64 [K + 1, K + 1]: rows predicted class, columns true class,
    index K = background (a missed gt counts in row K, a detection on background in column K).

    Per image, detections with score > ``conf`` and non-crowd gts (boxes xywh pixels) pair up
    class-agnostically at IoU > ``iou_thres``, each detection and each gt at most once, highest
    IoU first.
    """
    device = gt.boxes.device
    matrix = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.long, device=device)
    g_keep = torch.nonzero(~gt.crowd.bool()).squeeze(1)
    d_keep = torch.nonzero(dt.scores > conf).squeeze(1)
    g_img, g_cls, g_box = take(gt.image, g_keep), take(gt.category, g_keep), take(gt.boxes, g_keep).double()
    d_img, d_cls, d_box = take(dt.image, d_keep), take(dt.category, d_keep), take(dt.boxes, d_keep).double()
    g_order = torch.argsort(g_img)
    g_img, g_cls, g_box = take(g_img, g_order), take(g_cls, g_order), take(g_box, g_order)
    no_crowd = torch.zeros_like(g_img, dtype=torch.bool)
    pd, pg, iou = overlapping_pairs(d_img, d_box, g_img, g_box, no_crowd, 0.0)
    strict = torch.nonzero(iou > iou_thres).squeeze(1)
    pd, pg, iou = take(pd, strict), take(pg, strict), take(iou, strict)
    # Highest IoU first; keep each detection's first pair, then each gt's first remaining pair.
    order = torch.sort(iou, descending=True, stable=True)[1]
    pd, pg = take(pd, order), take(pg, order)
    for side in (0, 1):  # detections, then gts: filter with the pairs left by the first pass
        key = pd if side == 0 else pg
        first = torch.full((int(key.max()) + 1 if key.numel() else 1,), key.numel(), dtype=torch.long, device=device)
        first.scatter_reduce_(0, key, torch.arange(key.numel(), device=device), "amin")
        keep = torch.nonzero(take(first, key) == torch.arange(key.numel(), device=device)).squeeze(1)
        pd, pg = take(pd, keep), take(pg, keep)
    k1 = num_classes + 1
    matrix.view(-1).index_add_(0, take(d_cls, pd) * k1 + take(g_cls, pg), torch.ones_like(pd))
    gt_hit = torch.zeros_like(g_cls, dtype=torch.bool).index_fill_(0, pg, True)
    dt_hit = torch.zeros_like(d_cls, dtype=torch.bool).index_fill_(0, pd, True)
    matrix[num_classes].index_add_(0, g_cls[~gt_hit], torch.ones_like(g_cls[~gt_hit]))
    matrix[:, num_classes].index_add_(0, d_cls[~dt_hit], torch.ones_like(d_cls[~dt_hit]))
    return matrix

