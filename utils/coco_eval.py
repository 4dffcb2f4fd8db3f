"""COCO box detection metric in torch, equal to pycocotools' ``COCOeval`` (iouType='bbox').

Everything runs on the device of the input tensors, batched over all images, IoU thresholds and
area ranges at once. The only Python loops are over a detection's score rank inside its
(image, class) group (at most ``MAX_DETS[-1]`` steps: the greedy matching is sequential by
nature) and over the small (area range, max-detections) grid.

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
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

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
    matched: Tensor  # bool [S, D'] matched a ground truth
    ignored: Tensor  # bool [S, D'] matched an ignored gt, or unmatched and outside the area range
    num_gt: Tensor  # int64 [A, K] non-ignored ground truths per area range and class


@dataclass
class CocoResult:
    """pycocotools' ``eval['precision']``, ``eval['recall']`` and ``stats``, as float64 tensors."""

    precision: Tensor  # [T, R, K, A, M], -1 where a class has no ground truth
    recall: Tensor  # [T, K, A, M]
    stats: Tensor  # [12] in STAT_NAMES order

    def as_dict(self) -> dict[str, float]:
        """The 12 summary numbers keyed by STAT_NAMES."""
        return dict(zip(STAT_NAMES, self.stats.tolist()))

    def per_class_ap(self) -> tuple[Tensor, Tensor]:
        """(AP@.5, AP@.5:.95) per class, area all, 100 dets: two [K] tensors, -1 without gt."""
        p = self.precision[:, :, :, 0, -1]  # [T, R, K]
        valid = p[0, 0] > -1
        minus = torch.full_like(valid, -1.0, dtype=p.dtype)
        ap50 = torch.where(valid, p[0].mean(0), minus)
        ap = torch.where(valid, p.mean((0, 1)), minus)
        return ap50, ap


def run_starts(sorted_keys: Tensor) -> Tensor:
    """For a sorted key tensor [N], the index of the first element of each element's run [N]."""
    n = sorted_keys.numel()
    new_run = torch.ones(n, dtype=torch.bool, device=sorted_keys.device)
    new_run[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = torch.nonzero(new_run).squeeze(1)
    return starts[new_run.cumsum(0) - 1]


def _group_pairs(det_group: Tensor, gt_group_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """All (detection, gt) index pairs that share a group id.

    det_group: int64 [D]; gt_group_sorted: int64 [G], ascending. Returns (det_idx, gt_idx), each
    [P], gt_idx indexing the sorted gts and ascending per detection.
    """
    lo = torch.searchsorted(gt_group_sorted, det_group, right=False)
    hi = torch.searchsorted(gt_group_sorted, det_group, right=True)
    counts = hi - lo
    det_idx = torch.repeat_interleave(torch.arange(det_group.numel(), device=det_group.device), counts)
    first_pair = counts.cumsum(0) - counts
    offset = torch.arange(det_idx.numel(), device=det_group.device) - first_pair[det_idx]
    return det_idx, lo[det_idx] + offset


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


def _overlapping_pairs(
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
    for start, end in zip(bounds[:-1], bounds[1:]):
        d, g = _group_pairs(det_group[start:end], gt_group)
        d = d + start
        iou = pair_iou(dt_boxes[d], gt_boxes[g], gt_crowd[g])
        keep = iou >= min_iou
        out_d.append(d[keep])
        out_g.append(g[keep])
        out_iou.append(iou[keep])
    if not out_d:
        empty = torch.zeros(0, dtype=torch.long, device=lo.device)
        return empty, empty, torch.zeros(0, dtype=torch.float64, device=lo.device)
    return torch.cat(out_d), torch.cat(out_g), torch.cat(out_iou)


def _greedy_match(
    pair_det: Tensor, pair_gt: Tensor, pair_iou_: Tensor, det_rank: Tensor, gt_ignore: Tensor, gt_crowd: Tensor, num_det: int
) -> Tensor:
    """COCO's greedy matching for every (area range, IoU threshold) setting at once.

    Pairs [P] link detections to sorted gts; det_rank [D] is each detection's score rank in its
    group; gt_ignore bool [A, G]; gt_crowd bool [G]. Detections of equal rank are in different
    groups, so one step per rank handles all of them without conflicts. Returns the matched gt
    index per setting and detection, int64 [A * T, D], -1 where unmatched.
    """
    device = pair_iou_.device
    num_t = len(IOU_THRESHOLDS)
    thr = torch.tensor(IOU_THRESHOLDS, dtype=torch.float64, device=device).clamp(max=1 - 1e-10)
    thr = thr.repeat(gt_ignore.shape[0])[:, None]  # [S, 1]
    ignore = gt_ignore.repeat_interleave(num_t, 0)  # [S, G]
    num_s = ignore.shape[0]
    taken = torch.zeros_like(ignore)
    det_gt = torch.full((num_s, num_det), -1, dtype=torch.long, device=device)
    if pair_det.numel() == 0:
        return det_gt
    rank = det_rank[pair_det]
    order = torch.argsort(rank * num_det + pair_det)
    pair_det, pair_gt, pair_iou_, rank = pair_det[order], pair_gt[order], pair_iou_[order], rank[order]
    bounds = [0] + torch.bincount(rank).cumsum(0).tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if start == end:
            continue
        d, g, iou = pair_det[start:end], pair_gt[start:end], pair_iou_[start:end]
        local = torch.unique_consecutive(d, return_inverse=True)[1].expand(num_s, -1)
        n_local = int(local[0, -1]) + 1
        valid = (iou >= thr) & (~taken[:, g] | gt_crowd[g])
        # Preference: a non-ignored gt (level 2) over an ignored one (1), then IoU, then the last gt.
        level = valid.long() * (2 - ignore[:, g].long())
        best = torch.zeros(num_s, n_local, dtype=torch.long, device=device).scatter_reduce(1, local, level, "amax")
        cand = valid & (level == best.gather(1, local))
        iou_c = torch.where(cand, iou.expand(num_s, -1), -1.0)
        best_iou = torch.full((num_s, n_local), -1.0, dtype=iou.dtype, device=device).scatter_reduce(1, local, iou_c, "amax")
        cand &= iou_c == best_iou.gather(1, local)
        pos = torch.where(cand, g.expand(num_s, -1), -1)
        best_pos = torch.full((num_s, n_local), -1, dtype=torch.long, device=device).scatter_reduce(1, local, pos, "amax")
        s_idx, p_idx = torch.nonzero(cand & (pos == best_pos.gather(1, local)), as_tuple=True)
        det_gt[s_idx, d[p_idx]] = g[p_idx]
        taken[s_idx, g[p_idx]] = True
    return det_gt


def _outside(area: Tensor) -> Tensor:
    """bool [A, N]: ``area`` [N] lies outside each area range (bounds inclusive)."""
    lo = area.new_tensor([r[0] for r in AREA_RANGES])[:, None]
    hi = area.new_tensor([r[1] for r in AREA_RANGES])[:, None]
    return (area[None] < lo) | (area[None] > hi)


def match(gt: GroundTruth, dt: Detections, num_classes: int) -> Matching:
    """Sort, truncate and greedily match detections to ground truth the way COCOeval does.

    Detections of classes outside [0, num_classes) are dropped, as pycocotools drops
    categories absent from the ground-truth file.
    """
    device = gt.boxes.device
    f64 = torch.float64
    keep_cls = (dt.category >= 0) & (dt.category < num_classes)
    dt = Detections(*(t[keep_cls] for t in dt))
    image_ids, inverse = torch.unique(torch.cat([gt.image, dt.image]), return_inverse=True)
    gt_img, dt_img = inverse[: gt.image.numel()], inverse[gt.image.numel() :]
    gt_key, dt_key = gt_img * num_classes + gt.category, dt_img * num_classes + dt.category

    # Detections in (group, -score, file order); the score rank inside each group decides the cut.
    order = torch.sort(-dt.scores.to(f64), stable=True)[1]
    order = order[torch.sort(dt_key[order], stable=True)[1]]
    rank = torch.arange(order.numel(), device=device) - run_starts(dt_key[order])
    kept = rank < MAX_DETS[-1]
    order, rank = order[kept], rank[kept]
    d_key, d_boxes, d_scores = dt_key[order], dt.boxes[order].to(f64), dt.scores[order].to(f64)

    gt_order = torch.sort(gt_key, stable=True)[1]
    g_key, g_boxes, g_crowd = gt_key[gt_order], gt.boxes[gt_order].to(f64), gt.crowd[gt_order].bool()
    g_cat, g_area = gt.category[gt_order], gt.area[gt_order].to(f64)
    gt_ignore = _outside(g_area) | g_crowd[None]  # [A, G]

    pd, pg, piou = _overlapping_pairs(d_key, d_boxes, g_key, g_boxes, g_crowd, min(IOU_THRESHOLDS))
    det_gt = _greedy_match(pd, pg, piou, rank, gt_ignore, g_crowd, d_key.numel())
    matched = det_gt >= 0
    num_t = len(IOU_THRESHOLDS)
    ignore_s = gt_ignore.repeat_interleave(num_t, 0)
    det_outside = _outside(d_boxes[:, 2] * d_boxes[:, 3]).repeat_interleave(num_t, 0)
    ignored = det_outside
    if g_key.numel():
        ignored = torch.where(matched, ignore_s.gather(1, det_gt.clamp(min=0)), det_outside)

    num_gt = torch.zeros(len(AREA_RANGES), num_classes, dtype=torch.long, device=device)
    num_gt.index_add_(1, g_cat, (~gt_ignore).long())
    return Matching(d_key % num_classes, d_key // num_classes, rank, d_scores, matched, ignored, num_gt)


def accumulation_order(m: Matching) -> Tensor:
    """Detection order of COCOeval.accumulate: (class, -score, image id, rank in image). [D']"""
    order = torch.argsort(m.image_rank * MAX_DETS[-1] + m.rank)
    order = order[torch.sort(-m.scores[order], stable=True)[1]]
    return order[torch.sort(m.category[order], stable=True)[1]]


def segment_cumsum(x: Tensor, starts: Tensor) -> Tensor:
    """Cumulative sum along the last dim of int64 ``x`` [..., N], restarting at each run;
    starts [N] is the index where each element's run begins (see ``run_starts``)."""
    total = x.cumsum(-1)
    before = total.index_select(-1, starts) - x.index_select(-1, starts)
    return total - before


def accumulate(m: Matching) -> tuple[Tensor, Tensor]:
    """COCOeval.accumulate: precision [T, R, K, A, M] and recall [T, K, A, M], float64."""
    device = m.scores.device
    num_a, num_k = m.num_gt.shape
    num_t, num_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    rec_thr = torch.tensor(RECALL_THRESHOLDS, dtype=torch.float64, device=device)
    precision = torch.full((num_t, num_r, num_k, num_a, len(MAX_DETS)), -1.0, dtype=torch.float64, device=device)
    recall = torch.full((num_t, num_k, num_a, len(MAX_DETS)), -1.0, dtype=torch.float64, device=device)
    base = accumulation_order(m)
    for mi, max_det in enumerate(MAX_DETS):
        sel = base[m.rank[base] < max_det]
        cat = m.category[sel]
        starts = run_starts(cat)
        ends = torch.zeros(num_k, dtype=torch.long, device=device).scatter_reduce(
            0, cat, torch.arange(cat.numel(), device=device), "amax", include_self=False
        )
        has_det = torch.bincount(cat, minlength=num_k) > 0
        for a in range(num_a):
            rows = slice(a * num_t, (a + 1) * num_t)
            counted = ~m.ignored[rows][:, sel]
            hit = m.matched[rows][:, sel]
            tp = segment_cumsum((hit & counted).long(), starts).double()
            fp = segment_cumsum((~hit & counted).long(), starts).double()
            npig = m.num_gt[a]
            rc = tp / npig[cat].clamp(min=1)
            pr = tp / (fp + tp + np.spacing(1))
            # Precision at recall threshold r is max(pr[i] : rc[i] >= thr[r]) (the envelope read
            # at searchsorted(rc, thr, 'left')): a max per bucket, then a suffix max over buckets.
            bucket = torch.searchsorted(rec_thr, rc, right=True) - 1
            q = torch.zeros(num_t, num_k * num_r, dtype=torch.float64, device=device)
            q.scatter_reduce_(1, cat * num_r + bucket, pr, "amax")
            q = q.view(num_t, num_k, num_r).flip(-1).cummax(-1).values.flip(-1)
            last_rc = torch.where(has_det, rc[:, ends] if rc.numel() else 0.0, 0.0)
            valid = npig > 0
            precision[:, :, :, a, mi] = torch.where(valid[None, :, None], q, -1.0).permute(0, 2, 1)
            recall[:, :, a, mi] = torch.where(valid[None], last_rc, -1.0)
    return precision, recall


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
