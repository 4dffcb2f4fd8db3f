"""utils/detection_metrics.py: best-F1 precision/recall and the confusion matrix, by hand; the
curves' plots (utils/metric_plots.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.coco_eval import DatasetDetections, GroundTruth, match
from utils.detection_metrics import best_f1, confusion_matrix

F64 = torch.float64


def _gt(image, cls, boxes, crowd=None) -> GroundTruth:
    b = torch.tensor(boxes, dtype=F64).view(-1, 4)
    return GroundTruth(torch.tensor(image), torch.tensor(cls), b, b[:, 2] * b[:, 3],
                       torch.tensor(crowd if crowd is not None else [False] * len(image)))


def _dt(image, cls, boxes, scores) -> DatasetDetections:
    return DatasetDetections(torch.tensor(image), torch.tensor(cls), torch.tensor(boxes, dtype=F64).view(-1, 4),
                      torch.tensor(scores, dtype=F64))


def test_best_f1_picks_the_threshold_that_drops_false_positives() -> None:
    # Class 0: 2 gts; detections: hit (0.9), false (0.6), hit (0.5), false (0.2).
    gt = _gt([1, 1], [0, 0], [[0, 0, 10, 10], [50, 50, 10, 10]])
    dt = _dt([1] * 4, [0] * 4, [[0, 0, 10, 10], [100, 100, 5, 5], [50, 50, 10, 10], [200, 200, 5, 5]],
             [0.9, 0.6, 0.5, 0.2])
    r = best_f1(match(gt, dt, 1))
    # c <= 0.2: P = 2/4, R = 1, F1 = 2/3; c in (0.2, 0.5]: P = 2/3, R = 1, F1 = 0.8;
    # c in (0.5, 0.6]: P = 1/2, R = 1/2, F1 = 0.5. Best: the first grid point above 0.2.
    assert r.f1[0].item() == pytest.approx(0.8)
    assert r.precision[0].item() == pytest.approx(2 / 3) and r.recall[0].item() == pytest.approx(1.0)
    assert 0.2 < r.conf <= 0.5
    assert r.f1_curve.shape == (1, 1000)


def test_best_f1_ignores_crowd_matches_and_classes_without_gt() -> None:
    # Class 0: one gt, one hit, one detection inside a crowd region (ignored, not a false positive).
    # Class 1 has no gt: its false positive must not lower the mean.
    gt = _gt([1, 1], [0, 0], [[0, 0, 10, 10], [100, 100, 100, 100]], crowd=[False, True])
    dt = _dt([1, 1, 1], [0, 0, 1], [[0, 0, 10, 10], [120, 120, 10, 10], [0, 0, 10, 10]], [0.9, 0.8, 0.7])
    r = best_f1(match(gt, dt, 2))
    assert r.has_gt.tolist() == [True, False]
    assert r.precision[0].item() == 1.0 and r.recall[0].item() == 1.0 and r.f1[0].item() == pytest.approx(1.0)


def test_confusion_matrix_by_hand() -> None:
    # Image 1: gt class 0 found as class 0, gt class 1 found as class 0 (confusion), gt class 1
    # missed; a detection of class 1 on background; a class-0 detection below conf (ignored).
    gt = _gt([1, 1, 1, 2], [0, 1, 1, 0], [[0, 0, 10, 10], [50, 50, 10, 10], [80, 80, 10, 10], [0, 0, 4, 4]],
             crowd=[False, False, False, True])
    dt = _dt([1, 1, 1, 1, 2], [0, 0, 1, 0, 1],
             [[0, 0, 10, 10], [51, 50, 10, 10], [200, 200, 5, 5], [80, 80, 10, 10], [0, 0, 4, 4]],
             [0.9, 0.8, 0.7, 0.1, 0.9])
    cm = confusion_matrix(gt, dt, 2, conf=0.25, iou_thres=0.45)
    # rows: predicted 0, 1, background; columns: true 0, 1, background.
    expected = torch.tensor([[1, 1, 0], [0, 0, 2], [0, 1, 0]])
    assert torch.equal(cm, expected)


def test_confusion_matrix_one_match_per_gt_and_detection() -> None:
    # Two detections on one gt: the higher-IoU one matches, the other is background.
    gt = _gt([1], [0], [[0, 0, 10, 10]])
    dt = _dt([1, 1], [0, 1], [[0, 0, 10, 9], [0, 0, 10, 10]], [0.9, 0.8])
    cm = confusion_matrix(gt, dt, 2)
    assert torch.equal(cm, torch.tensor([[0, 0, 1], [1, 0, 0], [0, 0, 0]]))


def test_confusion_matrix_detection_overlapping_two_gts() -> None:
    # d0 overlaps gts A (IoU 0.82) and B (0.67); d1 sits on C. After each detection keeps its best
    # pair, the gt pass must work on the pairs that remain (this crashed training at epoch 7).
    gt = _gt([1, 1, 1], [0, 1, 1], [[0, 0, 10, 10], [3, 0, 10, 10], [100, 100, 10, 10]])
    dt = _dt([1, 1], [0, 1], [[1, 0, 10, 10], [100, 100, 10, 10]], [0.9, 0.8])
    cm = confusion_matrix(gt, dt, 2)
    assert torch.equal(cm, torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0]]))


@pytest.mark.parametrize("has_gt", [False, True])
def test_curves_plot_without_warnings_also_when_no_class_has_ground_truth(tmp_path, has_gt) -> None:
    import warnings

    from utils.metric_plots import plot_confidence_curve, plot_pr_curve

    x = np.linspace(0, 1, 101)
    curves = np.stack([1 - x, x])  # 2 classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns about a legend without labelled lines
        pr = plot_pr_curve(x, curves, np.array([0.5 if has_gt else -1.0, -1.0]), ["a", "b"], tmp_path / "PR.png")
        f1 = plot_confidence_curve(x, curves, np.array([has_gt, False]), ["a", "b"], "F1", tmp_path / "F1.png")
    assert pr.stat().st_size > 0 and f1.stat().st_size > 0
