"""utils/nms.py: confidence filter, class handling and NMS on hand-made and random predictions."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou, nms

from utils.nms import keep_best, non_max_suppression, split_by_image


def pytest_approx(x: float):
    """Approximate equality at float32 precision."""
    return pytest.approx(x, abs=1e-6)


def _pred(rows: list[list[float]], nc: int) -> torch.Tensor:
    """[1, N, 5 + nc] from rows (cx, cy, w, h, obj, cls...)."""
    return torch.tensor(rows, dtype=torch.float32).view(1, -1, 5 + nc)


def test_overlap_suppressed_within_class_only() -> None:
    # Two heavily overlapping boxes of class 0, a third overlapping one of class 1.
    pred = _pred([[50, 50, 40, 40, 0.9, 1.0, 0.0], [52, 50, 40, 40, 0.8, 1.0, 0.0], [51, 50, 40, 40, 0.7, 0.0, 1.0]], 2)
    out = non_max_suppression(pred, conf_thres=0.1, iou_thres=0.5)[0]
    assert out.shape == (2, 6)
    assert out[:, 5].tolist() == [0.0, 1.0]
    assert torch.allclose(out[0, :4], torch.tensor([30.0, 30.0, 70.0, 70.0]))
    assert torch.allclose(out[:, 4], torch.tensor([0.9, 0.7]))
    agnostic = non_max_suppression(pred, conf_thres=0.1, iou_thres=0.5, agnostic=True)[0]
    assert agnostic.shape == (1, 6) and agnostic[0, 4].item() == pytest_approx(0.9)


def test_score_is_obj_times_cls_and_thresholds() -> None:
    pred = _pred([[50, 50, 10, 10, 0.5, 0.4, 0.9], [150, 150, 10, 10, 0.5, 0.3, 0.2]], 2)
    out = non_max_suppression(pred, conf_thres=0.25)[0]
    # Box 1: best class 1 with 0.45; box 2: best 0.15 < 0.25, dropped.
    assert out.shape == (1, 6)
    assert out[0, 4].item() == pytest_approx(0.45) and out[0, 5].item() == 1.0
    multi = non_max_suppression(pred, conf_thres=0.15, multi_label=True)[0]
    # Box 1 gives class 0 (0.2) and class 1 (0.45); box 2 gives nothing above 0.15 (0.15 is not >).
    assert sorted(zip(multi[:, 5].tolist(), multi[:, 4].tolist(), strict=True)) == [(0.0, pytest_approx(0.2)), (1.0, pytest_approx(0.45))]
    only0 = non_max_suppression(pred, conf_thres=0.15, multi_label=True, classes=[0])[0]
    assert only0[:, 5].tolist() == [0.0]


def test_single_class_score_is_objectness() -> None:
    pred = _pred([[50, 50, 10, 10, 0.6, 0.1]], 1)
    out = non_max_suppression(pred, conf_thres=0.25)[0]
    assert out.shape == (1, 6) and out[0, 4].item() == pytest_approx(0.6) and out[0, 5].item() == 0.0


def test_empty_and_max_det() -> None:
    pred = torch.zeros(3, 10, 7)
    assert [o.shape for o in non_max_suppression(pred)] == [(0, 6)] * 3
    # 20 disjoint boxes above the threshold: max_det keeps the 5 best, sorted by score.
    rows = [[20.0 * i + 5, 5, 8, 8, 0.5 + i / 100, 1.0, 0.0] for i in range(20)]
    out = non_max_suppression(_pred(rows, 2), conf_thres=0.1, max_det=5)[0]
    assert out[:, 4].tolist() == sorted(out[:, 4].tolist(), reverse=True)
    assert torch.allclose(out[:, 4], torch.tensor([0.69, 0.68, 0.67, 0.66, 0.65]))


def _reference(pred: torch.Tensor, conf: float, iou: float) -> list[torch.Tensor]:
    """Per image, per class: plain torchvision nms over best-class candidates."""
    out = []
    for p in pred:
        p = p[p[:, 4] > conf]
        scores, cls = (p[:, 5:] * p[:, 4:5]).max(1)
        boxes = torch.cat([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], 1)
        keep = scores > conf
        boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
        rows = []
        for c in cls.unique():
            m = cls == c
            k = nms(boxes[m], scores[m], iou)
            rows.append(torch.cat([boxes[m][k], scores[m][k, None], cls[m][k, None].float()], 1))
        r = torch.cat(rows) if rows else torch.zeros(0, 6)
        out.append(r[r[:, 4].argsort(descending=True)])
    return out


def test_matches_per_class_reference_on_random_batch() -> None:
    g = torch.Generator().manual_seed(0)
    b, n, nc = 3, 400, 4
    xy = torch.rand(b, n, 2, generator=g) * 200
    wh = torch.rand(b, n, 2, generator=g) * 40 + 5
    probs = torch.rand(b, n, 1 + nc, generator=g)
    pred = torch.cat([xy, wh, probs], 2)
    ours = non_max_suppression(pred, conf_thres=0.2, iou_thres=0.5, max_det=1000)
    ref = _reference(pred, 0.2, 0.5)
    for o, r in zip(ours, ref, strict=True):
        assert o.shape == r.shape and o.shape[0] > 10
        assert torch.allclose(o, r)
        # No two kept boxes of one class overlap more than the threshold.
        for c in o[:, 5].unique():
            bx = o[o[:, 5] == c, :4]
            iou = box_iou(bx, bx).fill_diagonal_(0)
            assert iou.max() <= 0.5


def test_keep_best_orders_and_caps() -> None:
    det = torch.tensor([[0, 0, 1, 1, 0.2, 0], [0, 0, 2, 2, 0.9, 1], [0, 0, 3, 3, 0.5, 0]])
    assert keep_best(det, 2)[:, 4].tolist() == pytest.approx([0.9, 0.5])
    assert keep_best(det, 5)[:, 2].tolist() == [2.0, 3.0, 1.0]
    assert keep_best(torch.zeros(0, 6), 3).shape == (0, 6)


def test_split_by_image_keeps_empty_images() -> None:
    rows = torch.tensor([[2, 1, 1, 2, 2, 0.8, 3], [0, 5, 5, 6, 6, 0.7, 1], [2, 3, 3, 4, 4, 0.6, 0]])
    out = split_by_image(rows, 3)
    assert [len(d) for d in out] == [1, 0, 2]
    assert out[0].tolist() == [[5, 5, 6, 6, pytest.approx(0.7), 1]]
    assert out[2][:, 5].tolist() == [3.0, 0.0]  # the image's rows in order, batch index dropped
