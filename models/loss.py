"""The detection loss: assignment (models/assign.py), then box, objectness and class terms.

One class serves every variant:

- ``assigner``: the assignment rule by name (models/assign.py ``ASSIGNERS``): ``"ota"``
  (YOLOv7's default) or ``"yolov5"``, every YOLOv5-rule candidate a positive (cheaper; what
  validation uses). By default the hyp's (``Hyp.assignment_rule``: its ``assigner`` key, or YOLOv7's
  ``loss_ota``).
- With an auxiliary head (``raw`` holds 2 * nl outputs) the lead head learns from centre + 2
  neighbour candidates and the auxiliary head from centre + 4 (the rule's reaches), both assigned
  from the lead predictions, auxiliary terms weighted 0.25. The auxiliary
  positives are merged with the lead's (``merge_positives``) so they always contain them.

Terms, per level: 1 - CIoU of the positives (mean), BCE objectness of every anchor against the
detached CIoU of its positive (0 elsewhere), weighted by a per-level balance; BCE classes with
label smoothing (skipped when nc == 1, as YOLOv7 does). Optional focal modulation (fl_gamma).
Each term is named where it is computed (``LossItems``); the trainer's results.csv columns,
progress line and validation loss take their names from its fields.

Gain scaling happens in one place, ``loss_gains``, called by ``YoloLoss`` with the training
image size; the hyper-parameters themselves are never modified, so a hyp saved in a checkpoint
is the one read from the file.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, complete_box_iou_loss

from models.assign import (
    DEFAULT_MAX_CELLS,
    AssignInputs,
    Candidates,
    assign_rule,
    find_candidates,
    merge_positives,
)
from utils.config import Hyp

AUX_WEIGHT = 0.25  # weight of the auxiliary head's terms (YOLOv7)
FOCAL_ALPHA = 0.25


class LossItems(NamedTuple):
    """The loss terms of a batch after their gains, detached, for logging: each a 0-dim tensor
    (averaged over batches by the trainer and the evaluation). Logged as ``<field>_loss``."""

    box: Tensor  # 1 - CIoU of the positives
    obj: Tensor  # objectness BCE of every anchor
    cls: Tensor  # class BCE of the positives (0 with one class)

    @property
    def total(self) -> Tensor:
        """box + obj + cls: the loss per image."""
        return self.box + self.obj + self.cls

    @classmethod
    def zeros(cls) -> LossItems:
        """Every term 0 (an epoch that was not validated)."""
        return cls(*torch.zeros(len(cls._fields)))


class LossGains(NamedTuple):
    box: float
    obj: float
    cls: float


def loss_gains(hyp: Hyp, nl: int, nc: int, img_size: int) -> LossGains:
    """hyp's box/obj/cls gains scaled as YOLOv7's train.py does.

    box * 3 / nl, cls * nc / 80 * 3 / nl, obj * (img_size / 640)^2 * 3 / nl: the hyp files are
    tuned for 3 levels, 80 classes and 640-pixel training images. ``img_size`` is the nominal
    training size (not the size of a multi-scale batch).
    """
    levels = 3.0 / nl
    return LossGains(hyp.box * levels, hyp.obj * (img_size / 640) ** 2 * levels, hyp.cls * nc / 80 * levels)


def level_balance(nl: int) -> list[float]:
    """Objectness weight per level, finest first (fine levels have many more anchors)."""
    return [4.0, 1.0, 0.4] if nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02][:nl]


def bce(logits: Tensor, target: Tensor, pos_weight: float = 1.0, gamma: float = 0.0) -> Tensor:
    """Elementwise BCE with logits; with ``gamma`` > 0 the focal-loss modulation (alpha 0.25)."""
    weight = torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        alpha = target * FOCAL_ALPHA + (1 - target) * (1 - FOCAL_ALPHA)
        loss = loss * alpha * (1 - p_t) ** gamma
    return loss


def gather_predictions(levels: list[Tensor], positions: Candidates) -> Tensor:
    """Rows of the raw outputs at ``positions`` (sorted by level) -> [P, 5 + nc].

    levels: per level [B, na, H, W, 5 + nc].
    """
    counts = torch.bincount(positions.level, minlength=len(levels)).tolist()
    flats = positions.flat.split(counts)
    return torch.cat([x.reshape(-1, x.shape[-1])[f] for x, f in zip(levels, flats, strict=True)])


_MIN_SIZE = 1e-6  # grid units


def decode_cell_boxes(pred: Tensor, anchors: Tensor) -> Tensor:
    """Raw (tx, ty, tw, th) [P, 4] -> cxcywh [P, 4] in grid units relative to the cell corner.

    anchors: [P, 2] (w, h) in grid units. xy = 2 sigmoid - 0.5, wh = (2 sigmoid)^2 * anchor.
    """
    pred = pred.float()
    xy = pred[:, :2].sigmoid() * 2 - 0.5
    # A very negative logit underflows the size to 0 (at -17 already in fp16), and CIoU's
    # aspect term atan(w / h) is then 0/0 = NaN: keep sizes above a negligible floor.
    wh = ((pred[:, 2:4].sigmoid() * 2) ** 2 * anchors).clamp(min=_MIN_SIZE)
    return torch.cat([xy, wh], 1)


class YoloLoss:
    """YOLOv7's loss; see the module docstring.

    Args:
        head: the detection head (``anchors`` [nl, na, 2] in input pixels, ``stride`` [nl], ``nl``,
            ``na``, ``nc``); anchors are read at every call, so autoanchor changes take effect.
        hyp: hyper-parameters (box, obj, cls, cls_pw, obj_pw, anchor_t, fl_gamma, label_smoothing,
            and the assignment rule).
        train_size: nominal training image size, for the objectness gain (see ``loss_gains``).
        max_cells: memory bound of one OTA cost chunk (entries).
        assigner: name of the assignment rule (``models.assign.ASSIGNERS``); default the hyp's
            (``hyp.assignment_rule``).
    """

    def __init__(
        self,
        head: nn.Module,
        hyp: Hyp,
        train_size: int = 640,
        max_cells: int = DEFAULT_MAX_CELLS,
        *,
        assigner: str | None = None,
    ) -> None:
        assigner = hyp.assignment_rule if assigner is None else assigner
        self.head = head
        self.hyp = hyp
        self.assigner = assigner
        self.rule = assign_rule(assigner)
        self.gains = loss_gains(hyp, head.nl, head.nc, train_size)
        self.balance = level_balance(head.nl)
        self.max_cells = max_cells
        # label smoothing as YOLOv5's smooth_BCE: positives 1 - eps/2, negatives eps/2
        self.cls_pos, self.cls_neg = 1.0 - 0.5 * hyp.label_smoothing, 0.5 * hyp.label_smoothing

    def __call__(
        self, raw: list[Tensor], targets: Tensor, img_size: tuple[int, int]
    ) -> tuple[Tensor, LossItems]:
        """Loss of the training-mode output.

        Args:
            raw: nl (or 2 * nl with an auxiliary head) tensors [B, na, H_l, W_l, 5 + nc].
            targets: [N, 6] (image index, class, cx, cy, w, h), box normalised to the image.
            img_size: (H, W) of the input batch in pixels.
        Returns:
            (loss, items): loss = (box + obj + cls) * B, a scalar; items = the detached terms
            (``LossItems``: box, obj, cls; ``items.total`` their sum).
        """
        lead, aux = raw[: self.head.nl], raw[self.head.nl :]
        targets = targets.to(device=lead[0].device, dtype=torch.float32)
        positives, coarse = self.assign(raw, targets, img_size)
        box, obj, cls = self._terms(lead, positives, targets)
        if coarse is not None:
            box_a, obj_a, cls_a = self._terms(aux, coarse, targets)
            box, obj, cls = box + AUX_WEIGHT * box_a, obj + AUX_WEIGHT * obj_a, cls + AUX_WEIGHT * cls_a
        items = LossItems(box * self.gains.box, obj * self.gains.obj, cls * self.gains.cls)
        return items.total * lead[0].shape[0], LossItems(*(term.detach() for term in items))

    def assign(
        self, raw: list[Tensor], targets: Tensor, img_size: tuple[int, int]
    ) -> tuple[Candidates, Candidates | None]:
        """Positives of the lead head and (with 2 * nl outputs) of the auxiliary head, else None.

        Arguments as for ``__call__``; both from the lead outputs. Each is sorted by level;
        ``target`` indexes the rows of ``targets``.
        """
        nl = self.head.nl
        if len(raw) not in (nl, 2 * nl):
            raise ValueError(f"YoloLoss: expected {nl} or {2 * nl} outputs, got {len(raw)}")
        lead = raw[:nl]
        self._check_inputs(lead, targets, img_size)
        targets = targets.to(device=lead[0].device, dtype=torch.float32)
        aux = len(raw) > nl
        positives = self._assign(lead, targets, img_size, self.rule.lead_reach, aux)
        if not aux:
            return positives, None
        coarse = self._assign(lead, targets, img_size, self.rule.aux_reach, aux)
        return positives, merge_positives(positives, coarse) if self.rule.merge_aux else coarse

    def _check_inputs(self, lead: list[Tensor], targets: Tensor, img_size: tuple[int, int]) -> None:
        for x, s in zip(lead, self.head.stride.tolist(), strict=True):
            if (x.shape[2] * s, x.shape[3] * s) != tuple(img_size):
                raise ValueError(
                    f"YoloLoss: output grid {tuple(x.shape[2:4])} at stride {s:g} "
                    f"does not match img_size {tuple(img_size)}"
                )
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(
                f"YoloLoss: targets must be [N, 6] (image, class, cx, cy, w, h), got {tuple(targets.shape)}"
            )
        if len(targets):
            image, cls = targets[:, 0], targets[:, 1]
            if image.min() < 0 or image.max() >= lead[0].shape[0]:
                raise ValueError(f"YoloLoss: target image index outside 0..{lead[0].shape[0] - 1}")
            if cls.min() < 0 or cls.max() >= self.head.nc:
                raise ValueError(f"YoloLoss: target class outside 0..{self.head.nc - 1}")

    def _grid_anchors(self) -> Tensor:
        """[nl, na, 2] anchors in grid units of their level."""
        return self.head.anchors.float() / self.head.stride.float().view(-1, 1, 1)

    def _assign(
        self, lead: list[Tensor], targets: Tensor, img_size: tuple[int, int], reach: float, aux: bool
    ) -> Candidates:
        """Positive anchors for ``targets`` (sorted by level) under the rule, from the lead outputs."""
        grids = [(x.shape[2], x.shape[3]) for x in lead]
        batch = lead[0].shape[0]
        candidates = find_candidates(targets, self._grid_anchors(), grids, batch, self.hyp.anchor_t, reach)

        def predict(anchors: Candidates) -> tuple[Tensor, Tensor, Tensor]:
            pred = gather_predictions(lead, anchors).float()
            stride = self.head.stride.float()[anchors.level, None]
            cell = torch.stack([anchors.gi, anchors.gj], 1)
            boxes = decode_cell_boxes(pred, self._grid_anchors()[anchors.level, anchors.anchor])
            boxes = torch.cat([boxes[:, :2] + cell, boxes[:, 2:]], 1) * stride
            return box_convert(boxes, "cxcywh", "xyxy"), pred[:, 5:], pred[:, 4]

        return self.rule.select(candidates, AssignInputs(targets, img_size, batch, aux, predict, self.max_cells))

    def _terms(
        self, levels: list[Tensor], positives: Candidates, targets: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(box, obj, cls) loss of one head's outputs, before gains; each a scalar tensor."""
        counts = torch.bincount(positives.level, minlength=len(levels))
        pred = gather_predictions(levels, positives).float()
        t = targets[positives.target]
        box_loss = self._box_loss(levels, positives, pred[:, :4], t[:, 2:6])
        box = _sum_of_level_means(box_loss, positives.level, counts)
        iou = (1.0 - box_loss).detach().clamp(min=0)  # objectness target: CIoU, gr = 1.0
        obj = self._objectness(levels, positives.flat.split(counts.tolist()), iou.split(counts.tolist()))
        cls = torch.zeros((), device=pred.device)
        if pred.shape[1] > 6:  # more than one class; YOLOv7 has no class term for nc == 1
            t_cls = torch.full_like(pred[:, 5:], self.cls_neg)
            t_cls[torch.arange(len(pred), device=pred.device), t[:, 1].long()] = self.cls_pos
            row = bce(pred[:, 5:], t_cls, self.hyp.cls_pw, self.hyp.fl_gamma).mean(1)
            cls = _sum_of_level_means(row, positives.level, counts)
        return box, obj, cls

    def _box_loss(self, levels: list[Tensor], positives: Candidates, pred: Tensor, target: Tensor) -> Tensor:
        """1 - CIoU [P] of raw box predictions [P, 4] against normalised cxcywh targets [P, 4].

        Both boxes are compared in grid units relative to the positive's cell corner.
        """
        grid_size = torch.tensor([[x.shape[3], x.shape[2]] for x in levels], device=pred.device).float()
        size = grid_size[positives.level]  # [P, 2] (W_l, H_l)
        cell = torch.stack([positives.gi, positives.gj], 1)
        t_box = torch.cat([target[:, :2] * size - cell, target[:, 2:] * size], 1)
        p_box = decode_cell_boxes(pred, self._grid_anchors()[positives.level, positives.anchor])
        return complete_box_iou_loss(
            box_convert(p_box, "cxcywh", "xyxy"), box_convert(t_box, "cxcywh", "xyxy"), reduction="none"
        )

    def _objectness(
        self, levels: list[Tensor], flats: tuple[Tensor, ...], ious: tuple[Tensor, ...]
    ) -> Tensor:
        """Balanced sum over levels of the mean objectness BCE; target = IoU at positives, else 0."""
        obj = torch.zeros((), device=levels[0].device)
        # strict=False: level_balance lists at most 5 levels (YOLOv7's table); more levels would
        # get no objectness term, as before.
        for balance, x, flat, iou in zip(self.balance, levels, flats, ious, strict=False):
            logits = x[..., 4].reshape(-1).float()
            target = torch.zeros_like(logits)
            target[flat] = iou
            obj = obj + bce(logits, target, self.hyp.obj_pw, self.hyp.fl_gamma).mean() * balance
        return obj


def _sum_of_level_means(values: Tensor, level: Tensor, counts: Tensor) -> Tensor:
    """Sum over levels of the mean of ``values`` [P] at that level (levels without any: 0)."""
    sums = torch.zeros(len(counts), device=values.device).index_add(0, level, values)
    return (sums / counts.clamp(min=1)).sum()
