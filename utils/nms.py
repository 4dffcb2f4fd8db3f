"""Post-processing: decoded head output -> per-image detections (confidence filter + NMS)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from utils.boxes import cxcywh_to_xyxy


def _candidates(
    pred: Tensor, conf_thres: float, multi_label: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Confidence filter over a whole batch at once.

    pred: [B, N, 5 + nc] (cx, cy, w, h pixels; obj and class probabilities). Score = obj * cls,
    except for one-class models, whose class output is not trained (the loss skips it, as in
    YOLOv7), so the score is obj alone. Returns image index [M], xyxy boxes [M, 4], scores [M],
    classes [M] (float), one row per (box, class) above ``conf_thres`` with ``multi_label``,
    else one row per box for its best class.
    """
    flat = pred.reshape(-1, pred.shape[-1])
    # obj alone already bounds obj * cls; index_select is much faster than advanced indexing on CPU.
    rows = torch.nonzero(flat[:, 4] > conf_thres).squeeze(1)
    img = rows // pred.shape[1]
    cand = flat.index_select(0, rows)
    scores = cand[:, 5:] * cand[:, 4:5] if pred.shape[-1] > 6 else cand[:, 4:5]
    xyxy = cxcywh_to_xyxy(cand[:, :4])
    if multi_label:
        row, c = torch.nonzero(scores > conf_thres, as_tuple=True)
        return img[row], xyxy[row], scores[row, c], c.to(pred.dtype)
    best, c = scores.max(1)
    keep = best > conf_thres
    return img[keep], xyxy[keep], best[keep], c[keep].to(pred.dtype)


def non_max_suppression(
    pred: Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = 30000,
) -> list[Tensor]:
    """Per-image detections from the eval-mode output.

    pred: [B, N, 5 + nc] decoded (cx, cy, w, h in input pixels, obj and class probabilities).
    classes: keep only these class indices. agnostic: suppress across classes. multi_label: a
    box may yield one detection per class above ``conf_thres``. max_nms: at most this many
    highest-scoring candidates per image enter NMS (bounds time on untrained models).
    Returns B tensors [n, 6] = (x1, y1, x2, y2, score, class), input pixels, sorted by score.
    """
    img, boxes, scores, cls = _candidates(pred, conf_thres, multi_label)
    if classes is not None:
        keep = torch.isin(cls.long(), torch.tensor(classes, device=cls.device))
        img, boxes, scores, cls = img[keep], boxes[keep], scores[keep], cls[keep]
    counts = torch.bincount(img, minlength=pred.shape[0]).tolist()
    out = []
    for b, s, c in zip(boxes.split(counts), scores.split(counts), cls.split(counts), strict=True):
        if s.numel() > max_nms:
            top = s.topk(max_nms).indices
            b, s, c = b[top], s[top], c[top]
        groups = torch.zeros_like(c, dtype=torch.long) if agnostic else c.long()
        keep = batched_nms(b.float(), s.float(), groups, iou_thres)[:max_det]
        out.append(torch.cat([b[keep], s[keep, None], c[keep, None]], 1))
    return out


def keep_best(det: Tensor, max_det: int) -> Tensor:
    """The ``max_det`` highest-scoring rows of one image's detections [n, 6] (x1, y1, x2, y2,
    score, class), sorted by score. NMS inside an exported graph caps boxes per class; this
    gives its output the per-image cap of ``non_max_suppression``."""
    return det[det[:, 4].argsort(descending=True)][:max_det]


def split_by_image(rows: Tensor, batch_size: int) -> list[Tensor]:
    """The output of NMS inside an exported graph, rows [M, 7] (batch index, x1, y1, x2, y2,
    score, class), as ``batch_size`` tensors [n, 6], one per image (its rows in order)."""
    return [rows[rows[:, 0] == i, 1:] for i in range(batch_size)]
