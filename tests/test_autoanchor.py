"""Autoanchor: fit ratio, best possible recall, evolution and writing into the head."""

import numpy as np
import pytest
import torch
from test_overfit import small_config

from models.autoanchor import best_possible_recall, check_anchors, fit_ratio, kmean_anchors, label_sizes
from models.yolo import Model


def test_fit_ratio_and_bpr_hand_computed():
    # 10 x 20 against 20 x 20: width ratio 0.5, height 1 -> worst side 0.5
    np.testing.assert_allclose(fit_ratio(np.array([[10.0, 20]]), np.array([[20.0, 20]])), [[0.5]])
    anchors = np.array([[10.0, 10]])
    labels = np.array([[10.0, 10], [39, 10], [41, 10]])  # 39 / 10 < 4 fits, 41 / 10 > 4 does not
    bpr, per_label = best_possible_recall(anchors, labels, anchor_t=4.0)
    assert bpr == pytest.approx(2 / 3) and per_label == pytest.approx(2 / 3)
    two = np.array([[10.0, 10], [40.0, 10]])  # 10 x 10 fits one (10 / 40 = 1 / 4 is not < 4), 39 x 10 both, 41 x 10 one
    assert best_possible_recall(two, labels, 4.0) == pytest.approx((1.0, 4 / 3))


def elongated_labels(n: int = 600, seed: int = 0) -> np.ndarray:
    """Three clusters no default anchor fits well: wide, tall and small-square boxes (pixels)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[600.0, 40], [40, 600], [30, 30]])
    return centres[rng.integers(0, 3, n)] * rng.uniform(0.85, 1.15, (n, 2))


def test_evolved_anchors_fit_constructed_labels():
    wh = elongated_labels()
    anchors = kmean_anchors(wh, 9, anchor_t=4.0, generations=100)
    assert anchors.shape == (9, 2)
    assert (np.diff(anchors.prod(1)) >= 0).all()  # sorted by area
    assert best_possible_recall(anchors, wh, 4.0)[0] == 1.0
    np.testing.assert_array_equal(anchors, kmean_anchors(wh, 9, anchor_t=4.0, generations=100))  # seeded


def test_check_anchors_replaces_only_when_needed():
    model = Model(small_config("Detect"))
    before = model.head.anchors.clone()
    good = before.view(-1, 2).numpy().repeat(20, 0) * 1.1
    result = check_anchors(model.head, good, anchor_t=4.0, generations=50)
    assert result.bpr == 1.0 and not result.replaced and torch.equal(model.head.anchors, before)

    wh = elongated_labels()
    result = check_anchors(model.head, wh, anchor_t=4.0, generations=50)
    assert result.bpr < 0.98 and result.replaced and result.new_bpr == 1.0
    new = model.head.anchors
    assert new.shape == before.shape and not torch.equal(new, before)
    assert (new.prod(-1).mean(-1).diff() > 0).all()  # smallest anchors on the finest level (stride order)
    assert best_possible_recall(new.view(-1, 2).numpy(), wh, 4.0)[0] == 1.0
    key = next(k for k in model.state_dict() if k.endswith("anchors"))
    assert torch.equal(model.state_dict()[key], new)  # saved with the model


def test_label_sizes_scale_to_the_training_size():
    labels = [np.array([[0, 0.5, 0.5, 0.5, 0.25]]), np.zeros((0, 5)), np.array([[1, 0.5, 0.5, 0.1, 0.2], [0, 0.2, 0.2, 1.0, 1.0]])]
    shapes = np.array([[1280, 640], [100, 100], [320, 640]])  # (w, h): long side -> 640
    wh = label_sizes(labels, shapes, 640, jitter=0.0)
    np.testing.assert_allclose(wh, [[320, 80], [32, 128], [320, 640]])
    jittered = label_sizes(labels, shapes, 640, jitter=0.1)
    ratio = jittered / wh
    assert ((ratio >= 0.9) & (ratio <= 1.1)).all() and np.ptp(ratio[1:]) < 1e-12  # one factor per image


def test_too_few_labels_is_an_error():
    with pytest.raises(ValueError, match="usable labels"):
        kmean_anchors(np.array([[1.0, 1.0], [30, 30]]), 9)


def test_check_anchors_keeps_anchors_when_too_few_labels_to_evolve():
    """A tiny set whose few labels fit badly (fewer than the anchors) trains with the default
    anchors instead of stopping in k-means."""
    model = Model(small_config("Detect"))
    before = model.head.anchors.clone()
    wh = elongated_labels(n=4)
    result = check_anchors(model.head, wh, anchor_t=4.0, generations=50)
    assert result.bpr < 0.98 and not result.replaced and result.new_bpr is None
    assert torch.equal(model.head.anchors, before)
