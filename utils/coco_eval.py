"""COCO box detection metric in torch, equal to pycocotools' ``COCOeval`` (iouType='bbox').

``coco_evaluate`` = ``COCOeval.evaluate`` (utils/coco_match.py: ``match``), then
``COCOeval.accumulate`` and ``COCOeval.summarize`` (this file). The accumulation runs on the
sparse matches, batched over classes, IoU thresholds and area ranges; the only Python loop is
over the three max-detection cuts.

pycocotools details reproduced here, because each one changes the numbers:
- accumulation sorts each class's detections by score (stable: ties in image-id order, then
  per-image order); unmatched detections outside the area range are ignored;
- precision gets its monotone envelope and is read at 101 recall thresholds with
  ``searchsorted(side='left')``; -1 marks settings without ground truth, and the summary
  averages only the entries > -1.
The matching's details are listed in utils/coco_match.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from utils.coco_match import (
    AREA_RANGES,
    IOU_THRESHOLDS,
    MAX_DETS,
    DatasetDetections,
    GroundTruth,
    Matching,
    match,
    overlapping_pairs,
    pair_iou,
)
from utils.grouped_ops import run_starts, segment_cumsum, take, take2

# The matching's names, for the callers that import the whole metric from here.
__all__ = [
    "AREA_NAMES", "AREA_RANGES", "IOU_THRESHOLDS", "MAX_DETS", "RECALL_THRESHOLDS", "STAT_NAMES",
    "CocoResult", "DatasetDetections", "GroundTruth", "Matching", "accumulate", "accumulation_order",
    "coco_evaluate", "match", "overlapping_pairs", "pair_iou", "summarize",
]

# The exact float64 values pycocotools uses (np.linspace, not torch.linspace: the last bits differ).
RECALL_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101).tolist())
AREA_NAMES = ("all", "small", "medium", "large")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class CocoResult:
    """pycocotools' ``eval['precision']``, ``eval['recall']`` and ``stats``, as float64 tensors."""

    precision: Tensor  # [T, R, K, A, M], -1 where a class has no ground truth
    recall: Tensor  # [T, K, A, M]
    stats: Tensor  # [12] in STAT_NAMES order

    def as_dict(self) -> dict[str, float]:
        """The 12 summary numbers keyed by STAT_NAMES."""
        return dict(zip(STAT_NAMES, self.stats.tolist(), strict=True))

    def per_class_ap(self) -> tuple[Tensor, Tensor]:
        """(AP@.5, AP@.5:.95) per class, area all, 100 dets: two [K] tensors, -1 without gt."""
        p = self.precision[:, :, :, 0, -1]  # [T, R, K]
        valid = p[0, 0] > -1
        minus = torch.full_like(valid, -1.0, dtype=p.dtype)
        ap50 = torch.where(valid, p[0].mean(0), minus)
        ap = torch.where(valid, p.mean((0, 1)), minus)
        return ap50, ap


def accumulation_order(m: Matching) -> Tensor:
    """Detection order of COCOeval.accumulate: (class, -score, image id, rank in image). [D']

    accumulate concatenates each image's first maxDet detections (images in id order) and
    sorts them by -score with a mergesort, per class.
    """
    order = torch.argsort(m.image_rank * MAX_DETS[-1] + m.rank)
    order = take(order, torch.sort(-take(m.scores, order), stable=True)[1])
    return take(order, torch.sort(take(m.category, order), stable=True)[1])


def _true_positive_curves(m: Matching) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Running counts at each true positive of COCOeval.accumulate's detection order, for each
    MAX_DETS cut: a list of (class [E'], setting [E'], true positives so far [E'], counted
    detections = true + false positives so far [E']).

    accumulate's ``tp_sum`` and ``tp_sum + fp_sum`` (with ``dtIg`` entries counted in neither),
    read only at the true positives. Works on the sparse matches only: the count of ignored
    detections up to a position is the count of detections outside the area range, corrected at
    each match (a match is ignored exactly when its gt is, whatever the detection's area).
    """
    device = m.rank.device
    num_k = m.num_gt.shape[0]
    num_t = len(IOU_THRESHOLDS)
    acc_order = accumulation_order(m)
    num_d = acc_order.numel()
    acc_pos = torch.empty_like(acc_order).index_copy_(0, acc_order, torch.arange(num_d, device=device))
    # Matches sorted once by (setting, accumulation position) = (setting, class, position).
    order = torch.argsort(m.match_setting * max(num_d, 1) + take(acc_pos, m.match_det))
    match_det, match_setting = take(m.match_det, order), take(m.match_setting, order)
    match_ignored = take(m.match_ignored, order)
    match_rank, match_pos, match_class = take(m.rank, match_det), take(acc_pos, match_det), take(m.category, match_det)
    match_area = match_setting // num_t
    # +1 where a match is ignored (its gt is) although the detection's area is inside the
    # range, -1 where it counts although the area is outside: the correction to "outside".
    ignore_correction = match_ignored.long() - take2(m.outside, match_det, match_area).long()
    curve = match_setting * num_k + match_class  # one precision/recall curve per (setting, class)
    acc_rank, acc_class = take(m.rank, acc_order), take(m.category, acc_order)
    acc_outside = take(m.outside, acc_order).long()
    curves = []
    for max_det in MAX_DETS:  # accumulate's loop over maxDets: each image's first max_det detections
        in_cut = acc_rank < max_det
        cut = torch.nonzero(in_cut).squeeze(1)  # in accumulation order
        cut_pos = in_cut.long().cumsum(0) - 1  # position among the kept ones
        class_start = torch.searchsorted(take(acc_class, cut), torch.arange(num_k, device=device))  # [K]
        outside_before = torch.cat(  # exclusive prefix count per area range [D'' + 1, A]
            [acc_outside.new_zeros(1, acc_outside.shape[1]), take(acc_outside, cut).cumsum(0)]
        )
        sel = torch.nonzero(match_rank < max_det).squeeze(1)  # the matches inside the cut
        cls, area, ignored = take(match_class, sel), take(match_area, sel), take(match_ignored, sel)
        pos = take(cut_pos, take(match_pos, sel))
        starts = run_starts(take(curve, sel))
        correction = segment_cumsum(take(ignore_correction, sel), starts)
        tp_count = segment_cumsum((~ignored).long(), starts)
        first = take(class_start, cls)
        ignored_so_far = take2(outside_before, pos + 1, area) - take2(outside_before, first, area) + correction
        counted = pos - first + 1 - ignored_so_far
        tp = torch.nonzero(~ignored).squeeze(1)
        curves.append((take(cls, tp), take(take(match_setting, sel), tp), take(tp_count, tp), take(counted, tp)))
    return curves


def accumulate(m: Matching) -> tuple[Tensor, Tensor]:
    """COCOeval.accumulate: precision [T, R, K, A, M] and recall [T, K, A, M], float64,
    -1 for classes without (non-ignored) ground truth.

    Precision at recall threshold r is max(pr[i] : rc[i] >= thr[r]) (the envelope read at
    searchsorted(rc, thr, 'left')). That maximum is reached at a true positive (a false positive
    lowers pr at equal rc, an ignored detection repeats the previous pr), so only true positives
    are visited: each gives a max into its recall bucket, then a suffix max runs over buckets.
    """
    device = m.scores.device
    num_k, num_a = m.num_gt.shape
    num_t = len(IOU_THRESHOLDS)
    num_s = num_a * num_t
    rec_thr = torch.tensor(RECALL_THRESHOLDS, dtype=torch.float64, device=device)
    num_r = rec_thr.numel()
    num_gt = m.num_gt.repeat_interleave(num_t, 1)  # [K, S]
    valid = num_gt > 0  # accumulate skips (leaves -1) where npig == 0
    precision, recall = [], []
    for cls, setting, tps, counted in _true_positive_curves(m):
        curve = cls * num_s + setting
        found = torch.bincount(curve, minlength=num_k * num_s).view(num_k, num_s)
        recall.append(torch.where(valid, found.double() / num_gt.clamp(min=1), -1.0))  # rc[-1]
        rc = tps.double() / take2(num_gt, cls, setting).clamp(min=1)
        pr = tps.double() / (counted.double() + np.spacing(1))  # accumulate's tp / (fp + tp + eps)
        bucket = torch.searchsorted(rec_thr, rc, right=True) - 1
        best = torch.zeros(num_k * num_s * num_r, dtype=torch.float64, device=device)
        best.scatter_reduce_(0, curve * num_r + bucket, pr, "amax")
        # accumulate's envelope `pr[i-1] = max(pr[i-1], pr[i])` read at searchsorted: a suffix max
        envelope = best.view(num_k, num_s, num_r).flip(-1).cummax(-1).values.flip(-1)
        precision.append(torch.where(valid[..., None], envelope, -1.0))
    # [K, S, R] per max-dets -> pycocotools' [T, R, K, A, M] (S = a * T + t).
    precision_t = torch.stack(precision, -1).view(num_k, num_a, num_t, num_r, len(MAX_DETS)).permute(2, 3, 0, 1, 4)
    recall_t = torch.stack(recall, -1).view(num_k, num_a, num_t, len(MAX_DETS)).permute(2, 0, 1, 3)
    return precision_t.contiguous(), recall_t.contiguous()


def _mean_valid(x: Tensor) -> Tensor:
    """Mean of the entries > -1, or -1 when there are none (COCOeval.summarize)."""
    valid = x[x > -1]
    return valid.mean() if valid.numel() else x.new_tensor(-1.0)


def summarize(precision: Tensor, recall: Tensor) -> Tensor:
    """COCOeval.summarize's 12 numbers [12] (STAT_NAMES order) from accumulate()'s output."""
    t50, t75 = IOU_THRESHOLDS.index(0.5), IOU_THRESHOLDS.index(0.75)
    m100 = len(MAX_DETS) - 1
    ap = [  # summarize's _summarize(1, iouThr, areaRng, maxDets) rows: AP, AP50, AP75, APs/m/l
        precision[..., 0, m100],
        precision[t50, :, :, 0, m100],
        precision[t75, :, :, 0, m100],
        precision[..., 1, m100],
        precision[..., 2, m100],
        precision[..., 3, m100],
    ]
    # _summarize(0, ...) rows: AR1, AR10, AR100 (area all), ARs/m/l (100 dets)
    ar = [recall[:, :, 0, mi] for mi in range(len(MAX_DETS))] + [recall[:, :, a, m100] for a in (1, 2, 3)]
    return torch.stack([_mean_valid(x) for x in ap + ar])


def coco_evaluate(gt: GroundTruth, dt: DatasetDetections, num_classes: int) -> CocoResult:
    """Evaluate detections against ground truth exactly as pycocotools' COCOeval (bbox):
    evaluate (``match``), accumulate, summarize."""
    precision, recall = accumulate(match(gt, dt, num_classes))
    return CocoResult(precision, recall, summarize(precision, recall))
