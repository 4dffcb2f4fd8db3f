"""COCO box matching in torch: the per-image step of pycocotools' ``COCOeval`` (iouType='bbox').

Mirrors ``COCOeval.evaluate`` -> ``computeIoU`` + ``evaluateImg`` for every (image, class) at
once; the accumulation that follows is utils/coco_eval.py. Everything runs on the device of the
input tensors, batched over all images, IoU thresholds and area ranges. The only Python loops
are over a detection's score rank inside its (image, class) group (at most ``MAX_DETS[-1]``
steps: the greedy matching is sequential by nature) and over chunks of (detection, gt) pairs.

pycocotools details reproduced here, because each one changes the numbers:
- per (image, class) the detections are sorted by score with a stable sort (ties keep file
  order) and only the first 100 take part;
- a detection matches the unmatched, non-ignored ground truth of highest IoU >= threshold (the
  last one on IoU ties); only when there is none may it match an ignored one (crowd, or outside
  the area range); crowd boxes match any number of detections and their IoU is
  intersection / detection area;
- a ground truth's area is its ``area`` field (the segment area on COCO), a detection's is w*h;
  area-range bounds are inclusive on both sides.
One known difference: pycocotools treats a match to a ground truth whose annotation id is 0 as
no match; ids here are positions, so that quirk is not reproduced.

Boxes are xywh (COCO: top-left corner, width, height) in pixels, computed in float64 as
pycocotools does so that IoUs that sit exactly on a threshold compare the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from utils.grouped_ops import group_pairs, run_starts, take, take2

# The exact float64 values pycocotools uses (np.linspace, not torch.linspace: the last bits differ).
IOU_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
AREA_RANGES: tuple[tuple[float, float], ...] = ((0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10))
MAX_DETS = (1, 10, 100)
# Pairs evaluated per chunk when computing IoUs: bounds memory on crowded data sets.
_PAIR_CHUNK = 1 << 22


class GroundTruth(NamedTuple):
    """Ground-truth boxes of a whole data set, in annotation order (order breaks IoU ties).

    image: int64 [G] image id; category: int64 [G] class index in [0, num_classes);
    boxes: [G, 4] xywh pixels; area: [G] (COCO ``area`` field, else w*h); crowd: bool [G].
    """

    image: Tensor
    category: Tensor
    boxes: Tensor
    area: Tensor
    crowd: Tensor


class DatasetDetections(NamedTuple):
    """Detections of a whole data set, in file order (order breaks score ties).

    image: int64 [D] image id; category: int64 [D] class index; boxes: [D, 4] xywh pixels;
    scores: [D].
    """

    image: Tensor
    category: Tensor
    boxes: Tensor
    scores: Tensor


@dataclass
class Matching:
    """Greedy COCO matching of the top-100 detections of each (image, class).

    ``S = len(AREA_RANGES) * len(IOU_THRESHOLDS)`` settings, index ``a * T + t``. Detection
    tensors cover only the kept detections, in (image, class, -score) order.
    """

    category: Tensor  # int64 [D'] class of each kept detection
    image_rank: Tensor  # int64 [D'] position of its image id among the sorted ids
    rank: Tensor  # int64 [D'] rank by score inside its (image, class)
    scores: Tensor  # float64 [D']
    outside: Tensor  # bool [D', A] detection area outside the range (ignored when unmatched)
    # The matches, one entry per (detection, setting) that found a gt; all other pairs are unmatched.
    match_det: Tensor  # int64 [E] detection index
    match_setting: Tensor  # int64 [E] setting a * T + t
    match_ignored: Tensor  # bool [E] the matched gt is ignored (crowd or outside the area range)
    num_gt: Tensor  # int64 [K, A] non-ignored ground truths per class and area range


def pair_iou(dt_boxes: Tensor, gt_boxes: Tensor, crowd: Tensor) -> Tensor:
    """Element-wise IoU of xywh boxes [P, 4] and [P, 4]; for crowd gts (bool [P]) the
    denominator is the detection's area, as in COCO's ``maskUtils.iou``. Returns [P]."""
    w = torch.minimum(dt_boxes[:, 0] + dt_boxes[:, 2], gt_boxes[:, 0] + gt_boxes[:, 2]) - torch.maximum(
        dt_boxes[:, 0], gt_boxes[:, 0]
    )
    h = torch.minimum(dt_boxes[:, 1] + dt_boxes[:, 3], gt_boxes[:, 1] + gt_boxes[:, 3]) - torch.maximum(
        dt_boxes[:, 1], gt_boxes[:, 1]
    )
    inter = w * h
    dt_area = dt_boxes[:, 2] * dt_boxes[:, 3]
    union = torch.where(crowd, dt_area, dt_area + gt_boxes[:, 2] * gt_boxes[:, 3] - inter)
    overlap = (w > 0) & (h > 0)
    return torch.where(overlap, inter / torch.where(overlap, union, torch.ones_like(union)), torch.zeros_like(inter))


def overlapping_pairs(
    det_group: Tensor, dt_boxes: Tensor, gt_group: Tensor, gt_boxes: Tensor, gt_crowd: Tensor, min_iou: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Same-group (det, gt) pairs with IoU >= min_iou, built in chunks of detections.

    COCOeval.computeIoU, kept sparse: pairs below the lowest threshold can never match.
    gt_group must be ascending. Returns det_idx [P], gt_idx [P], iou [P] (float64).
    """
    lo = torch.searchsorted(gt_group, det_group, right=False)
    hi = torch.searchsorted(gt_group, det_group, right=True)
    pairs_before = torch.cat([torch.zeros(1, dtype=torch.long, device=lo.device), (hi - lo).cumsum(0)])
    # Split detections so that each chunk holds about _PAIR_CHUNK pairs.
    cuts = torch.searchsorted(pairs_before, torch.arange(0, int(pairs_before[-1]) + 1, _PAIR_CHUNK, device=lo.device))
    bounds = sorted(set(cuts.tolist()) | {0, det_group.numel()})
    out_det, out_gt, out_iou = [], [], []
    for start, end in pairwise(bounds):
        det, gt = group_pairs(det_group[start:end], gt_group)
        det = det + start
        iou = pair_iou(take(dt_boxes, det), take(gt_boxes, gt), take(gt_crowd, gt))
        keep = torch.nonzero(iou >= min_iou).squeeze(1)
        out_det.append(take(det, keep))
        out_gt.append(take(gt, keep))
        out_iou.append(take(iou, keep))
    if not out_det:
        empty = torch.zeros(0, dtype=torch.long, device=lo.device)
        return empty, empty, torch.zeros(0, dtype=torch.float64, device=lo.device)
    return torch.cat(out_det), torch.cat(out_gt), torch.cat(out_iou)


def _preference_key(iou: Tensor, preference: Tensor) -> Tensor:
    """An int64 key ordered like (preference, iou) for iou in [0.5, 1] float64 and preference in
    {1, 2}: positive doubles order like their bit patterns, and this range spans 2**52 + 1 of them."""
    bits = iou.view(torch.int64) - torch.tensor(0.5, dtype=torch.float64).view(torch.int64)
    return (preference << 53) + bits


def _greedy_match(
    pair_det: Tensor, pair_gt: Tensor, pair_ious: Tensor, det_rank: Tensor, gt_ignore: Tensor, gt_crowd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """COCO's greedy matching for every (area range, IoU threshold) setting at once.

    The matching loop of COCOeval.evaluateImg (for each threshold, for each detection by score,
    the best still-free gt), run for all settings and all (image, class) groups together.
    Pairs [P] (IoU >= 0.5) link detections to group-sorted gts; det_rank [D] is each detection's
    score rank in its group; gt_ignore bool [G, A]; gt_crowd bool [G]. Detections of equal rank
    are in different groups, so one step per rank handles all of them without conflicts.
    Returns the matches as (det [E], setting [E] = a * T + t, gt [E]).
    """
    device = pair_ious.device
    num_t = len(IOU_THRESHOLDS)
    # evaluateImg's `iou = min([t, 1 - 1e-10])`, per setting a * T + t
    thresholds = torch.tensor(IOU_THRESHOLDS, dtype=torch.float64, device=device).clamp(max=1 - 1e-10)
    thresholds = thresholds.repeat(gt_ignore.shape[1])  # [S]
    # evaluateImg's preference: a non-ignored gt (2) beats an ignored one (1) (it stops at the
    # first ignored gt once it has a match, gts being sorted non-ignored first); then the higher
    # IoU; then the later gt (it keeps the last of equal IoUs).
    gt_preference = 2 - gt_ignore.repeat_interleave(num_t, 1).long()  # [G, S]
    num_s = thresholds.numel()
    gt_taken = torch.zeros_like(gt_preference, dtype=torch.bool)  # evaluateImg's gtm > 0
    pair_rank = take(det_rank, pair_det)
    order = torch.argsort(pair_rank * max(det_rank.numel(), 1) + pair_det)
    pair_det, pair_gt, pair_ious, pair_rank = (take(x, order) for x in (pair_det, pair_gt, pair_ious, pair_rank))
    # Threshold test and preference key of every pair, computed once: -1 below the threshold.
    pair_key = torch.where(
        pair_ious[:, None] >= thresholds, _preference_key(pair_ious[:, None], take(gt_preference, pair_gt)), -1
    )  # [P, S]
    crowd = gt_crowd[:, None].expand(-1, num_s)  # a crowd gt stays free after a match
    bounds = [0] + torch.bincount(pair_rank).cumsum(0).tolist()
    matches = []
    for start, end in pairwise(bounds):  # one step per score rank
        if start == end:
            continue
        det, gt = pair_det[start:end], pair_gt[start:end]
        # det_slot: which of this step's detections each pair belongs to
        det_slot = torch.unique_consecutive(det, return_inverse=True)[1][:, None].expand(-1, num_s)
        num_slots = int(det_slot[-1, 0]) + 1
        key = torch.where(take(gt_taken, gt) & ~take(crowd, gt), -1, pair_key[start:end])
        best_key = key.new_full((num_slots, num_s), -1).scatter_reduce(0, det_slot, key, "amax")
        is_best = (key >= 0) & (key == best_key.gather(0, det_slot))
        # Among equal keys (same preference and IoU) the last gt wins.
        gt_if_best = torch.where(is_best, gt[:, None], -1)
        last_gt = gt_if_best.new_full((num_slots, num_s), -1).scatter_reduce(0, det_slot, gt_if_best, "amax")
        won_pair, won_setting = torch.nonzero(is_best & (gt_if_best == last_gt.gather(0, det_slot)), as_tuple=True)
        won_gt = take(gt, won_pair)
        gt_taken.view(-1).index_fill_(0, won_gt * num_s + won_setting, True)
        matches.append((take(det, won_pair), won_setting, won_gt))
    if not matches:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty
    return tuple(torch.cat(column) for column in zip(*matches, strict=True))


def outside_area_ranges(area: Tensor) -> Tensor:
    """bool [N, A]: ``area`` [N] lies outside each area range (bounds inclusive, as evaluateImg's
    ``g['area'] < aRng[0] or g['area'] > aRng[1]``)."""
    lo = area.new_tensor([r[0] for r in AREA_RANGES])
    hi = area.new_tensor([r[1] for r in AREA_RANGES])
    return (area[:, None] < lo) | (area[:, None] > hi)


def match(gt: GroundTruth, dt: DatasetDetections, num_classes: int) -> Matching:
    """Sort, truncate and greedily match detections to ground truth the way COCOeval does.

    Detections of classes outside [0, num_classes) are dropped, as pycocotools drops
    categories absent from the ground-truth file.
    """
    device = gt.boxes.device
    f64 = torch.float64
    if gt.category.numel() and not (0 <= int(gt.category.min()) and int(gt.category.max()) < num_classes):
        raise ValueError(f"ground-truth classes must lie in [0, {num_classes}), got "
                         f"{int(gt.category.min())}..{int(gt.category.max())}")
    keep_cls = (dt.category >= 0) & (dt.category < num_classes)
    dt = DatasetDetections(*(t[keep_cls] for t in dt))
    # COCOeval.evaluate groups by (imgId, catId): one int64 group id per (image, class).
    _, image_index = torch.unique(torch.cat([gt.image, dt.image]), return_inverse=True)
    gt_image, dt_image = image_index[: gt.image.numel()], image_index[gt.image.numel() :]
    gt_group_all, dt_group_all = gt_image * num_classes + gt.category, dt_image * num_classes + dt.category

    # evaluateImg: detections by -score (mergesort, ties in file order), cut at maxDets[-1].
    order = torch.sort(-dt.scores.to(f64), stable=True)[1]
    order = take(order, torch.sort(take(dt_group_all, order), stable=True)[1])
    rank = torch.arange(order.numel(), device=device) - run_starts(take(dt_group_all, order))
    kept = torch.nonzero(rank < MAX_DETS[-1]).squeeze(1)
    order, rank = take(order, kept), take(rank, kept)
    det_group = take(dt_group_all, order)
    det_boxes, det_scores = take(dt.boxes, order).to(f64), take(dt.scores, order).to(f64)

    # evaluateImg: the gts of a group, with their ignore flag per area range (crowd or outside).
    gt_order = torch.sort(gt_group_all, stable=True)[1]
    gt_group, gt_boxes = take(gt_group_all, gt_order), take(gt.boxes, gt_order).to(f64)
    gt_crowd, gt_category = take(gt.crowd, gt_order).bool(), take(gt.category, gt_order)
    gt_ignore = outside_area_ranges(take(gt.area, gt_order).to(f64)) | gt_crowd[:, None]  # [G, A]

    pair_det, pair_gt, pair_ious = overlapping_pairs(
        det_group, det_boxes, gt_group, gt_boxes, gt_crowd, min(IOU_THRESHOLDS)
    )
    match_det, match_setting, match_gt = _greedy_match(pair_det, pair_gt, pair_ious, rank, gt_ignore, gt_crowd)
    # accumulate's npig: the non-ignored gts per class and area range
    num_gt = torch.zeros(num_classes, len(AREA_RANGES), dtype=torch.long, device=device)
    num_gt.index_add_(0, gt_category, (~gt_ignore).long())
    return Matching(
        category=det_group % num_classes,
        image_rank=det_group // num_classes,
        rank=rank,
        scores=det_scores,
        outside=outside_area_ranges(det_boxes[:, 2] * det_boxes[:, 3]),
        match_det=match_det,
        match_setting=match_setting,
        match_ignored=take2(gt_ignore, match_gt, match_setting // len(IOU_THRESHOLDS)),
        num_gt=num_gt,
    )
