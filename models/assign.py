"""Label assignment: which anchors at which grid cells learn which target.

Two assignments share one candidate rule:

- ``find_candidates`` (YOLOv5 rule): a target may be learned by anchor ``a`` of level ``l`` when
  the ratio of its size to the anchor is below ``anchor_t`` in both directions; the cell holding
  its centre and the neighbour cells nearest to the centre are candidates (2 neighbours with
  ``reach=0.5``, all 4 with ``reach=1.0``). The plain assignment uses every candidate as a positive.
- ``ota_assign`` (YOLOv7's simplified optimal-transport assignment): the candidate anchors of an
  image, pooled over levels, are ranked per target by cost = BCE(sqrt(cls * obj)) + 3 * (-log IoU)
  of the current predictions; each target takes its ``dynamic k = max(1, int(sum of its top-q
  IoUs))`` cheapest anchors, and an anchor claimed by several targets goes to the target with
  the lowest cost for it (over all targets of the image, claimant or not, as YOLOv7 and YOLOX do).

Unlike YOLOv7, an anchor proposed by several targets is one candidate column, not several, so
no anchor can end up assigned twice and duplicate columns do not inflate the top-q IoU sum.

All of it runs on the whole batch at once. The OTA cost lives in padded per-image blocks
[images, targets, candidates], processed in chunks of at most ``max_cells`` entries so that
images with hundreds of targets keep memory bounded.

Rules by name: ``ASSIGNERS`` maps the name a loss is built with (``YoloLoss(assigner=...)``, by
default the hyp's ``assigner`` key, or YOLOv7's ``loss_ota``) to an ``AssignRule``: how far the candidate
search reaches for the lead and the auxiliary head, the function that turns candidates into
positives, and whether the auxiliary positives keep the lead's. Adding a rule touches this
file only: write a ``select(candidates, inputs)`` function (``AssignInputs`` gives it the
targets and, on demand, the current predictions of any anchors) and add one ``ASSIGNERS`` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import box_convert

# The constants of YOLOv7's utils/loss.py. Neighbour reach: find_3_positive uses g = 0.5 (centre
# + the 2 nearest neighbour cells, the lead head), find_5_positive g = 1.0 (centre + all 4, the
# auxiliary head).
LEAD_REACH = 0.5
AUX_REACH = 1.0
# OTA's dynamic k sums a target's top-q IoUs: topk(pair_wise_iou, min(10, ...)) in
# ComputeLossOTA, min(20, ...) in ComputeLossAuxOTA (the auxiliary-head models, both heads).
OTA_TOPQ = 10
OTA_AUX_TOPQ = 20
IOU_COST_WEIGHT = 3.0  # YOLOv7's weight of -log IoU against the class cost
DEFAULT_MAX_CELLS = 1 << 21  # entries of one [images, targets, candidates] cost chunk


class Candidates(NamedTuple):
    """Anchor positions paired with targets; every field is long [M].

    ``target`` indexes the rows of the targets tensor; ``image``, ``level``, ``anchor``, ``gj``
    (row) and ``gi`` (column) locate the anchor; ``flat`` is its index in the level's output
    flattened as [B * na * H * W] (row-major over [B, na, H, W]). Sorted by level.
    """

    target: Tensor
    image: Tensor
    level: Tensor
    anchor: Tensor
    gj: Tensor
    gi: Tensor
    flat: Tensor


def _cat(parts: list[Tensor], device: torch.device) -> Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=device)


def find_candidates(
    targets: Tensor,
    anchors: Tensor,
    grids: list[tuple[int, int]],
    batch_size: int,
    anchor_t: float,
    reach: float = LEAD_REACH,
) -> Candidates:
    """Candidate (target, anchor, cell) triples under the YOLOv5 ratio and neighbour rule.

    Args:
        targets: [N, 6] (image index, class, cx, cy, w, h), box normalised to the image.
        anchors: [nl, na, 2] anchor (w, h) in grid units of each level (pixels / stride).
        grids: per level (H_l, W_l).
        batch_size: B, for the flat index.
        anchor_t: largest allowed size ratio between target and anchor.
        reach: a neighbour cell is a candidate when the centre lies within ``reach`` of its side
            (0.5: the 2 nearest neighbours, 1.0: all 4).
    """
    device = targets.device
    na = anchors.shape[1]
    # centre cell, then left, top, right, bottom neighbours (as offsets subtracted from the centre)
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device).float() * reach
    fields: list[list[Tensor]] = [[] for _ in Candidates._fields]
    for level, (h, w) in enumerate(grids):
        size = torch.tensor([w, h], device=device, dtype=torch.float32)
        wh = targets[:, 4:6].float() * size  # [N, 2] grid units
        ratio = wh[None] / anchors[level, :, None].float()  # [na, N, 2]
        a, t = (torch.max(ratio, 1 / ratio).amax(2) < anchor_t).nonzero(as_tuple=True)
        gxy = targets[t, 2:4].float() * size  # [n, 2]
        gxi = size - gxy
        left_top = (gxy % 1 < reach) & (gxy > 1)
        right_bottom = (gxi % 1 < reach) & (gxi > 1)
        keep = torch.cat([torch.ones_like(left_top[:, :1]), left_top, right_bottom], 1).T  # [5, n]
        which, idx = keep.nonzero(as_tuple=True)
        cell = (gxy[idx] - offsets[which]).long()
        gi = cell[:, 0].clamp(0, w - 1)
        gj = cell[:, 1].clamp(0, h - 1)
        t, a = t[idx], a[idx]
        b = targets[t, 0].long()
        values = (t, b, torch.full_like(t, level), a, gj, gi, ((b * na + a) * h + gj) * w + gi)
        for field, value in zip(fields, values, strict=True):
            field.append(value)
    return Candidates(*(_cat(f, device) for f in fields))


def batched_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-9) -> Tensor:
    """IoU of xyxy boxes [..., T, 4] against [..., C, 4] (same leading dims) -> [..., T, C]."""
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).prod(-1)
    return inter / (area1[..., :, None] + area2[..., None, :] - inter + eps)


def _pad_index(image: Tensor, batch_size: int) -> Tensor:
    """[B, max per image] index of the rows of each image (in order), -1 where padded."""
    order = torch.argsort(image, stable=True)
    counts = torch.bincount(image, minlength=batch_size)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(image), device=image.device) - start[image[order]]
    width = int(counts.max()) if len(image) else 0
    out = torch.full((batch_size, width), -1, dtype=torch.long, device=image.device)
    out[image[order], slot] = order
    return out


def _chunks(batch_size: int, rows: int, cols: int, max_cells: int) -> list[tuple[slice, slice]]:
    """(image slice, row slice) pieces of a [B, rows, cols] block with at most ~max_cells each."""
    images = max(1, min(batch_size, max_cells // max(1, rows * cols)))
    step = max(1, min(rows, max_cells // max(1, images * cols)))
    return [
        (slice(b, b + images), slice(r, r + step))
        for b in range(0, batch_size, images)
        for r in range(0, rows, step)
    ]


class _Entries(NamedTuple):
    """(target, candidate column, cost) triples, flat, long / long / float [K]."""

    target: Tensor
    column: Tensor
    cost: Tensor


def _claim_cheapest(
    cost: Tensor, iou: Tensor, valid: Tensor, rows: Tensor, cols: Tensor, topq: int
) -> tuple[_Entries, _Entries]:
    """One padded chunk: the claims (each valid target row's dynamic-k cheapest columns) and,
    per valid column, the cheapest row of the chunk.

    cost, iou: [g, r, C]; valid: [g, r, C] (real target and real candidate); rows: [g, r] target
    index; cols: [g, C] candidate index.
    """
    iou = iou.masked_fill(~valid, 0.0)
    cost = cost.masked_fill(~valid, float("inf"))
    q = min(topq, cost.shape[-1])
    k = iou.topk(q, dim=-1).values.sum(-1).int().clamp(min=1)  # [g, r]
    best_cost, best_col = cost.topk(q, dim=-1, largest=False)  # [g, r, q]
    take = (torch.arange(q, device=cost.device) < k[..., None]) & best_cost.isfinite()
    g, r = take.nonzero(as_tuple=True)[:2]
    claims = _Entries(rows[g, r], cols[g, best_col[take]], best_cost[take])
    col_cost, col_row = cost.min(1)  # [g, C]
    keep = col_cost.isfinite()
    cheapest = _Entries(rows.gather(1, col_row)[keep], cols[keep], col_cost[keep])
    return claims, cheapest


def _cheapest_target(entries: _Entries, n_columns: int) -> Tensor:
    """[n_columns] target of lowest cost per column (lowest index on ties; LONG_MAX if none)."""
    device = entries.cost.device
    best = torch.full((n_columns,), float("inf"), device=device)
    best.scatter_reduce_(0, entries.column, entries.cost, reduce="amin")
    tied = entries.cost <= best[entries.column]
    owner = torch.full((n_columns,), torch.iinfo(torch.long).max, dtype=torch.long, device=device)
    return owner.scatter_reduce_(0, entries.column[tied], entries.target[tied], reduce="amin")


def _resolve(claims: _Entries, cheapest: _Entries, n_columns: int) -> tuple[Tensor, Tensor]:
    """Owner of every claimed column: its claimant, or when claimed twice or more the target
    with the lowest cost for it. Returns (columns ascending, owner targets), long [P]."""
    count = torch.bincount(claims.column, minlength=n_columns)
    owner = _cheapest_target(claims, n_columns)  # the only claimant where count == 1
    contested = count > 1
    owner[contested] = _cheapest_target(cheapest, n_columns)[contested]
    columns = (count > 0).nonzero(as_tuple=True)[0]
    return columns, owner[columns]


def class_cost_terms(cls_logits: Tensor, obj_logits: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-candidate pieces of the OTA class cost, with y = sqrt(sigmoid(cls) * sigmoid(obj)).

    BCE(y, one_hot(c)) summed over classes = S - log y_c + log(1 - y_c), S = -sum_k log(1 - y_k),
    so the cost of any target needs only a gather, never a [targets, candidates, nc] tensor.
    cls_logits [U, nc], obj_logits [U] -> (S [U], log(y / (1 - y)) [U, nc]).
    """
    y = (cls_logits.float().sigmoid() * obj_logits.float().sigmoid()[:, None]).sqrt().clamp(eps, 1 - eps)
    log_not = torch.log1p(-y)
    return -log_not.sum(1), torch.log(y) - log_not


def unique_anchors(candidates: Candidates) -> Candidates:
    """The distinct anchors among ``candidates`` (sorted by level, then flat index).

    ``target`` is that of the anchor's first occurrence (OTA does not use it).
    """
    span = int(candidates.flat.max()) + 1 if len(candidates.flat) else 1
    keys, inverse = torch.unique(candidates.flat + candidates.level * span, return_inverse=True)
    order = torch.arange(len(inverse), device=keys.device)
    first = torch.full((len(keys),), len(inverse), dtype=torch.long, device=keys.device)
    first.scatter_reduce_(0, inverse, order, reduce="amin")
    return Candidates(*(f[first] for f in candidates))


def merge_positives(primary: Candidates, secondary: Candidates) -> Candidates:
    """Union of two assignments, each anchor once; where both assign an anchor, ``primary`` wins.

    The auxiliary head's (coarse) positives are merged with the lead's (fine) ones this way, so
    they always contain them, as YOLOv7's coarse-to-fine design intends; OTA on the wider
    candidate set alone does not guarantee it (a larger pool can push some lead choices out).
    """
    return unique_anchors(Candidates(*(torch.cat(pair) for pair in zip(primary, secondary, strict=True))))


def ota_assign(
    anchors: Candidates,
    target_boxes: Tensor,
    target_cls: Tensor,
    target_image: Tensor,
    pred_boxes: Tensor,
    cls_logits: Tensor,
    obj_logits: Tensor,
    batch_size: int,
    topq: int = OTA_TOPQ,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> Candidates:
    """YOLOv7's OTA assignment over the whole batch; returns the positives, one per anchor.

    Args:
        anchors: [U] distinct candidate anchors (``unique_anchors``); every target competes for
            all candidates of its image, as in YOLOv7.
        target_boxes: [N, 4] xyxy pixels; target_cls, target_image: long [N].
        pred_boxes: [U, 4] xyxy pixels, the current (detached) prediction of each anchor;
            cls_logits: [U, nc]; obj_logits: [U].
        topq: how many of a target's best IoUs are summed into its dynamic k (``OTA_TOPQ``;
            ``OTA_AUX_TOPQ`` for the auxiliary-head models).
        max_cells: bound on the entries of one [images, targets, candidates] cost chunk.
    Returns:
        The chosen subset of ``anchors`` (order kept), ``target`` the target each one learns.
    """
    s_cost, logit_y = class_cost_terms(cls_logits, obj_logits)
    boxes_u = pred_boxes.float()
    t_index = _pad_index(target_image, batch_size)  # [B, T]
    u_index = _pad_index(anchors.image, batch_size)  # [B, C]
    parts = []
    for img, row in _chunks(batch_size, t_index.shape[1], u_index.shape[1], max_cells):
        rows, cols = t_index[img, row], u_index[img]  # [g, r], [g, C]
        valid = (rows >= 0)[..., None] & (cols >= 0)[:, None, :]
        r, c = rows.clamp(min=0), cols.clamp(min=0)
        iou = batched_box_iou(target_boxes[r].float(), boxes_u[c])  # [g, r, C]
        cls = target_cls[r][..., None].expand(-1, -1, c.shape[1])
        cls_cost = s_cost[c][:, None, :] - logit_y[c].transpose(1, 2).gather(1, cls)
        cost = cls_cost - IOU_COST_WEIGHT * torch.log(iou + 1e-8)
        parts.append(_claim_cheapest(cost, iou, valid, r, c, topq))
    if not parts or len(anchors.flat) == 0:
        return Candidates(*(f[:0] for f in anchors))
    claims, cheapest = (_Entries(*(torch.cat(f) for f in zip(*group, strict=True))) for group in zip(*parts, strict=True))
    columns, owners = _resolve(claims, cheapest, len(anchors.flat))
    return Candidates(*(f[columns] for f in anchors))._replace(target=owners)


# Predictions of the given anchors: (boxes [U, 4] xyxy pixels, class logits [U, nc], objectness
# logits [U]), float, from the current lead outputs.
Predict = Callable[[Candidates], tuple[Tensor, Tensor, Tensor]]


class AssignInputs(NamedTuple):
    """What a rule's ``select`` may use besides the candidates.

    targets: [N, 6] (image index, class, cx, cy, w, h), box normalised to the image, float32;
    img_size: (H, W) of the batch in pixels; batch_size: B; aux_model: the model has an auxiliary
    head; predict: see ``Predict`` (gathered only when called); max_cells: memory bound of one
    cost chunk (entries).
    """

    targets: Tensor
    img_size: tuple[int, int]
    batch_size: int
    aux_model: bool
    predict: Predict
    max_cells: int = DEFAULT_MAX_CELLS


@dataclass(frozen=True)
class AssignRule:
    """One assignment rule: ``select(candidates, inputs)`` -> positives (a subset of the
    candidates' anchors, sorted by level, each with the target it learns), run once per head on
    the candidates within ``lead_reach`` / ``aux_reach``; with ``merge_aux`` the auxiliary
    positives are merged with the lead's (``merge_positives``)."""

    select: Callable[[Candidates, AssignInputs], Candidates]
    lead_reach: float = LEAD_REACH
    aux_reach: float = AUX_REACH
    merge_aux: bool = False


def every_candidate(candidates: Candidates, inputs: AssignInputs) -> Candidates:
    """YOLOv5's rule: every candidate is a positive (an anchor may learn several targets)."""
    return candidates


def ota_select(candidates: Candidates, inputs: AssignInputs) -> Candidates:
    """YOLOv7's OTA (``ota_assign``) over the distinct candidate anchors, from the detached
    current predictions."""
    anchors = unique_anchors(candidates)
    targets = inputs.targets
    with torch.no_grad():
        boxes, cls_logits, obj_logits = inputs.predict(anchors)
        height, width = inputs.img_size
        scale = torch.tensor([width, height, width, height], device=targets.device)
        return ota_assign(
            anchors,
            box_convert(targets[:, 2:6] * scale, "cxcywh", "xyxy"),
            targets[:, 1].long(),
            targets[:, 0].long(),
            boxes,
            cls_logits,
            obj_logits,
            inputs.batch_size,
            OTA_AUX_TOPQ if inputs.aux_model else OTA_TOPQ,
            inputs.max_cells,
        )


ASSIGNERS: dict[str, AssignRule] = {
    "ota": AssignRule(ota_select, merge_aux=True),  # YOLOv7's default (its hyp files' loss_ota: 1)
    "yolov5": AssignRule(every_candidate),  # cheaper; what validation uses (loss_ota: 0)
}


def assign_rule(name: str) -> AssignRule:
    """The rule registered as ``name``; ValueError naming the known rules otherwise."""
    if name not in ASSIGNERS:
        raise ValueError(f"unknown assignment rule {name!r} (known: {', '.join(ASSIGNERS)})")
    return ASSIGNERS[name]
