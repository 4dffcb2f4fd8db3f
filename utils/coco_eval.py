"""COCO box detection metric in torch, equal to pycocotools' ``COCOeval`` (iouType='bbox').

Everything runs on the device of the input tensors, batched over all images, IoU thresholds and
area ranges at once. The only Python loops are over a detection's score rank inside its
(image, class) group (at most ``MAX_DETS[-1]`` steps: the greedy matching is sequential by
nature), over the three max-detection cuts, and over chunks of (detection, gt) pairs.

pycocotools details reproduced here, because each one changes the numbers:
- per (image, class) the detections are sorted by score with a stable sort (ties keep file
  order) and only the first 100 take part;
- a detection matches the unmatched, non-ignored ground truth of highest IoU >= threshold (the
  last one on IoU ties); only when there is none may it match an ignored one (crowd, or outside
  the area range); crowd boxes match any number of detections and their IoU is
  intersection / detection area;
- a ground truth's area is its ``area`` field (the segment area on COCO), a detection's is w*h;
  area-range bounds are inclusive on both sides; unmatched detections outside the range are
  ignored;
- accumulation sorts each class's detections by score (stable: ties in image-id order, then
  per-image order), precision gets its monotone envelope and is read at 101 recall thresholds
  with ``searchsorted(side='left')``; -1 marks settings without ground truth, and the
  summary averages only the entries > -1.
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

from utils.grouped_ops import group_pairs, run_starts, segment_cumsum, take, take2

# The exact float64 values pycocotools uses (np.linspace, not torch.linspace: the last bits differ).
IOU_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
RECALL_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101).tolist())
AREA_RANGES: tuple[tuple[float, float], ...] = ((0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10))
AREA_NAMES = ("all", "small", "medium", "large")
MAX_DETS = (1, 10, 100)
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
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


class Detections(NamedTuple):
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

    gt_group must be ascending. Returns det_idx [P], gt_idx [P], iou [P] (float64).
    """
    lo = torch.searchsorted(gt_group, det_group, right=False)
    hi = torch.searchsorted(gt_group, det_group, right=True)
    pairs_before = torch.cat([torch.zeros(1, dtype=torch.long, device=lo.device), (hi - lo).cumsum(0)])
    # Split detections so that each chunk holds about _PAIR_CHUNK pairs.
    cuts = torch.searchsorted(pairs_before, torch.arange(0, int(pairs_before[-1]) + 1, _PAIR_CHUNK, device=lo.device))
    bounds = sorted(set(cuts.tolist()) | {0, det_group.numel()})
    out_d, out_g, out_iou = [], [], []
    for start, end in pairwise(bounds):
        d, g = group_pairs(det_group[start:end], gt_group)
        d = d + start
        iou = pair_iou(take(dt_boxes, d), take(gt_boxes, g), take(gt_crowd, g))
        keep = torch.nonzero(iou >= min_iou).squeeze(1)
        out_d.append(take(d, keep))
        out_g.append(take(g, keep))
        out_iou.append(take(iou, keep))
    if not out_d:
        empty = torch.zeros(0, dtype=torch.long, device=lo.device)
        return empty, empty, torch.zeros(0, dtype=torch.float64, device=lo.device)
    return torch.cat(out_d), torch.cat(out_g), torch.cat(out_iou)


def _iou_key(iou: Tensor, level: Tensor) -> Tensor:
    """An int64 key ordered like (level, iou) for iou in [0.5, 1] float64 and level in {1, 2}:
    positive doubles order like their bit patterns, and this range spans 2**52 + 1 of them."""
    bits = iou.view(torch.int64) - torch.tensor(0.5, dtype=torch.float64).view(torch.int64)
    return (level << 53) + bits


def _greedy_match(
    pair_det: Tensor, pair_gt: Tensor, pair_iou_: Tensor, det_rank: Tensor, gt_ignore: Tensor, gt_crowd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """COCO's greedy matching for every (area range, IoU threshold) setting at once.

    Pairs [P] (IoU >= 0.5) link detections to group-sorted gts; det_rank [D] is each detection's
    score rank in its group; gt_ignore bool [G, A]; gt_crowd bool [G]. Detections of equal rank
    are in different groups, so one step per rank handles all of them without conflicts.
    Returns the matches as (det [E], setting [E] = a * T + t, gt [E]).
    """
    device = pair_iou_.device
    num_t = len(IOU_THRESHOLDS)
    thr = torch.tensor(IOU_THRESHOLDS, dtype=torch.float64, device=device).clamp(max=1 - 1e-10)
    thr = thr.repeat(gt_ignore.shape[1])  # [S]
    # A non-ignored gt (level 2) beats an ignored one (1); then the higher IoU; then the later gt.
    level_gt = 2 - gt_ignore.repeat_interleave(num_t, 1).long()  # [G, S]
    num_s = thr.numel()
    taken = torch.zeros_like(level_gt, dtype=torch.bool)
    rank = take(det_rank, pair_det)
    order = torch.argsort(rank * max(det_rank.numel(), 1) + pair_det)
    pair_det, pair_gt, pair_iou_, rank = (take(x, order) for x in (pair_det, pair_gt, pair_iou_, rank))
    # Threshold test and preference key of every pair, computed once: -1 below the threshold.
    key_all = torch.where(pair_iou_[:, None] >= thr, _iou_key(pair_iou_[:, None], take(level_gt, pair_gt)), -1)  # [P, S]
    free_crowd = gt_crowd[:, None].expand(-1, num_s)
    bounds = [0] + torch.bincount(rank).cumsum(0).tolist()
    events = []
    for start, end in pairwise(bounds):
        if start == end:
            continue
        d, g = pair_det[start:end], pair_gt[start:end]
        local = torch.unique_consecutive(d, return_inverse=True)[1][:, None].expand(-1, num_s)
        n_local = int(local[-1, 0]) + 1
        key = torch.where(take(taken, g) & ~take(free_crowd, g), -1, key_all[start:end])
        best = key.new_full((n_local, num_s), -1).scatter_reduce(0, local, key, "amax")
        cand = (key >= 0) & (key == best.gather(0, local))
        pos = torch.where(cand, g[:, None], -1)
        best_pos = pos.new_full((n_local, num_s), -1).scatter_reduce(0, local, pos, "amax")
        p_idx, s_idx = torch.nonzero(cand & (pos == best_pos.gather(0, local)), as_tuple=True)
        won_gt = take(g, p_idx)
        taken.view(-1).index_fill_(0, won_gt * num_s + s_idx, True)
        events.append((take(d, p_idx), s_idx, won_gt))
    if not events:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty
    return tuple(torch.cat(e) for e in zip(*events, strict=True))


def _outside(area: Tensor) -> Tensor:
    """bool [N, A]: ``area`` [N] lies outside each area range (bounds inclusive)."""
    lo = area.new_tensor([r[0] for r in AREA_RANGES])
    hi = area.new_tensor([r[1] for r in AREA_RANGES])
    return (area[:, None] < lo) | (area[:, None] > hi)


def match(gt: GroundTruth, dt: Detections, num_classes: int) -> Matching:
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
    dt = Detections(*(t[keep_cls] for t in dt))
    _, inverse = torch.unique(torch.cat([gt.image, dt.image]), return_inverse=True)
    gt_img, dt_img = inverse[: gt.image.numel()], inverse[gt.image.numel() :]
    gt_key, dt_key = gt_img * num_classes + gt.category, dt_img * num_classes + dt.category

    # Detections in (group, -score, file order); the score rank inside each group decides the cut.
    order = torch.sort(-dt.scores.to(f64), stable=True)[1]
    order = take(order, torch.sort(take(dt_key, order), stable=True)[1])
    rank = torch.arange(order.numel(), device=device) - run_starts(take(dt_key, order))
    kept = torch.nonzero(rank < MAX_DETS[-1]).squeeze(1)
    order, rank = take(order, kept), take(rank, kept)
    d_key, d_boxes, d_scores = take(dt_key, order), take(dt.boxes, order).to(f64), take(dt.scores, order).to(f64)

    gt_order = torch.sort(gt_key, stable=True)[1]
    g_key, g_boxes, g_crowd = take(gt_key, gt_order), take(gt.boxes, gt_order).to(f64), take(gt.crowd, gt_order).bool()
    g_cat, g_area = take(gt.category, gt_order), take(gt.area, gt_order).to(f64)
    gt_ignore = _outside(g_area) | g_crowd[:, None]  # [G, A]

    pd, pg, piou = overlapping_pairs(d_key, d_boxes, g_key, g_boxes, g_crowd, min(IOU_THRESHOLDS))
    det, setting, g = _greedy_match(pd, pg, piou, rank, gt_ignore, g_crowd)
    num_gt = torch.zeros(num_classes, len(AREA_RANGES), dtype=torch.long, device=device)
    num_gt.index_add_(0, g_cat, (~gt_ignore).long())
    return Matching(
        category=d_key % num_classes,
        image_rank=d_key // num_classes,
        rank=rank,
        scores=d_scores,
        outside=_outside(d_boxes[:, 2] * d_boxes[:, 3]),
        match_det=det,
        match_setting=setting,
        match_ignored=take2(gt_ignore, g, setting // len(IOU_THRESHOLDS)),
        num_gt=num_gt,
    )


def accumulation_order(m: Matching) -> Tensor:
    """Detection order of COCOeval.accumulate: (class, -score, image id, rank in image). [D']"""
    order = torch.argsort(m.image_rank * MAX_DETS[-1] + m.rank)
    order = take(order, torch.sort(-take(m.scores, order), stable=True)[1])
    return take(order, torch.sort(take(m.category, order), stable=True)[1])


def _true_positive_curves(m: Matching) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Running counts at each true positive of COCOeval.accumulate's detection order, for each
    MAX_DETS cut: a list of (class [E'], setting [E'], true positives so far [E'], counted
    detections = true + false positives so far [E']).

    Works on the sparse matches only: the count of ignored detections up to a position is the
    count of detections outside the area range, corrected at each match (a match is ignored
    exactly when its gt is, whatever the detection's area).
    """
    device = m.rank.device
    num_k = m.num_gt.shape[0]
    num_t = len(IOU_THRESHOLDS)
    base = accumulation_order(m)
    num_d = base.numel()
    base_pos = torch.empty_like(base).index_copy_(0, base, torch.arange(num_d, device=device))
    # Matches sorted once by (setting, accumulation position) = (setting, class, position).
    order = torch.argsort(m.match_setting * max(num_d, 1) + take(base_pos, m.match_det))
    det, setting, ign = take(m.match_det, order), take(m.match_setting, order), take(m.match_ignored, order)
    ev_rank, ev_pos, k = take(m.rank, det), take(base_pos, det), take(m.category, det)
    a = setting // num_t
    ign_minus_out = ign.long() - take2(m.outside, det, a).long()
    run_key = setting * num_k + k
    base_rank, base_cat, base_out = take(m.rank, base), take(m.category, base), take(m.outside, base).long()
    curves = []
    for max_det in MAX_DETS:
        kept = torch.nonzero(base_rank < max_det).squeeze(1)  # in accumulation order
        new_pos = (base_rank < max_det).long().cumsum(0) - 1
        first = torch.searchsorted(take(base_cat, kept), torch.arange(num_k, device=device))  # [K]
        out_cum = torch.cat([base_out.new_zeros(1, base_out.shape[1]), take(base_out, kept).cumsum(0)])  # exclusive
        e = torch.nonzero(ev_rank < max_det).squeeze(1)
        ek, ea, ekey, eign = take(k, e), take(a, e), take(run_key, e), take(ign, e)
        pos = take(new_pos, take(ev_pos, e))
        starts = run_starts(ekey)
        correction = segment_cumsum(take(ign_minus_out, e), starts)
        tp_count = segment_cumsum((~eign).long(), starts)
        ek_first = take(first, ek)
        ignored = take2(out_cum, pos + 1, ea) - take2(out_cum, ek_first, ea) + correction
        counted = pos - ek_first + 1 - ignored
        t = torch.nonzero(~eign).squeeze(1)
        curves.append((take(ek, t), take(take(setting, e), t), take(tp_count, t), take(counted, t)))
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
    valid = num_gt > 0
    precision, recall = [], []
    for k, s, tps, counted in _true_positive_curves(m):
        found = torch.bincount(k * num_s + s, minlength=num_k * num_s).view(num_k, num_s)
        recall.append(torch.where(valid, found.double() / num_gt.clamp(min=1), -1.0))
        rc = tps.double() / take2(num_gt, k, s).clamp(min=1)
        pr = tps.double() / (counted.double() + np.spacing(1))
        bucket = torch.searchsorted(rec_thr, rc, right=True) - 1
        q = torch.zeros(num_k * num_s * num_r, dtype=torch.float64, device=device)
        q.scatter_reduce_(0, (k * num_s + s) * num_r + bucket, pr, "amax")
        q = q.view(num_k, num_s, num_r).flip(-1).cummax(-1).values.flip(-1)
        precision.append(torch.where(valid[..., None], q, -1.0))
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
    ap = [
        precision[..., 0, m100],
        precision[t50, :, :, 0, m100],
        precision[t75, :, :, 0, m100],
        precision[..., 1, m100],
        precision[..., 2, m100],
        precision[..., 3, m100],
    ]
    ar = [recall[:, :, 0, mi] for mi in range(len(MAX_DETS))] + [recall[:, :, a, m100] for a in (1, 2, 3)]
    return torch.stack([_mean_valid(x) for x in ap + ar])


def coco_evaluate(gt: GroundTruth, dt: Detections, num_classes: int) -> CocoResult:
    """Evaluate detections against ground truth exactly as pycocotools' COCOeval (bbox)."""
    precision, recall = accumulate(match(gt, dt, num_classes))
    return CocoResult(precision, recall, summarize(precision, recall))
