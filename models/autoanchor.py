"""Autoanchor: check that the head's anchors fit the training labels, and evolve new ones.

A label fits an anchor when neither side is more than ``anchor_t`` times larger or smaller
than the anchor's (the rule the assignment uses). The best possible recall (BPR) is the fraction
of labels that fit at least one anchor. Below 0.98, new anchors come from k-means on the label
sizes (whitened), refined by a genetic search that maximises the mean fit of each label's best
anchor; they replace the head's anchors when their BPR is higher.

Inputs are label sizes in pixels at the training image size (``label_sizes`` computes them
from a data set's normalised labels and image shapes), so this module never reads a data set:
``check_anchors(model.head, label_sizes(ds.labels, ds.shapes, img_size), hyp.anchor_t)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy.cluster.vq import kmeans
from torch import nn

BPR_THRESHOLD = 0.98
MIN_LABEL_PX = 2.0  # labels smaller than this (in both sides) are ignored when fitting anchors


class AnchorCheck(NamedTuple):
    """Result of ``check_anchors``: BPR of the old and (if computed) new anchors."""

    bpr: float
    anchors_per_label: float  # mean number of anchors each label fits
    new_bpr: float | None
    replaced: bool


def label_sizes(
    labels: Sequence[np.ndarray], shapes: np.ndarray, img_size: int, jitter: float = 0.1, seed: int = 0
) -> np.ndarray:
    """Label sizes [N, 2] (w, h pixels) as training sees them.

    labels: per image [n, 5] (class, cx, cy, w, h) normalised; shapes: [images, 2] original
    (w, h) pixels. Each image is resized so its long side is ``img_size`` and scaled by a
    random factor in [1 - jitter, 1 + jitter] (as the scale augmentation does).
    """
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    if len(shapes) != len(labels):
        raise ValueError(f"label_sizes: {len(labels)} label arrays for {len(shapes)} image shapes")
    rng = np.random.default_rng(seed)
    size = img_size * shapes / shapes.max(1, keepdims=True)
    size = size * rng.uniform(1 - jitter, 1 + jitter, (len(shapes), 1))
    parts = [np.asarray(lab, dtype=np.float64).reshape(-1, 5)[:, 3:5] * s for lab, s in zip(labels, size, strict=True)]
    return np.concatenate(parts) if parts else np.zeros((0, 2))


def fit_ratio(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """[N, K] worst-side ratio min(r, 1/r) of labels wh [N, 2] against anchors [K, 2] (pixels); 1 = exact."""
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1 / r).min(2)


def best_possible_recall(anchors: np.ndarray, wh: np.ndarray, anchor_t: float) -> tuple[float, float]:
    """(BPR, mean number of fitting anchors per label) of anchors [K, 2] for labels wh [N, 2] (pixels)."""
    if len(wh) == 0:
        return 1.0, 0.0
    x = fit_ratio(wh, anchors) > 1 / anchor_t
    return float(x.any(1).mean()), float(x.sum(1).mean())


def _fitness(anchors: np.ndarray, wh: np.ndarray, anchor_t: float) -> float:
    """Mean over labels of the best anchor's fit ratio, counting only fitting labels."""
    best = fit_ratio(wh, anchors).max(1)
    return float((best * (best > 1 / anchor_t)).mean())


def kmean_anchors(
    wh: np.ndarray,
    n: int,
    anchor_t: float = 4.0,
    generations: int = 1000,
    seed: int = 0,
    max_labels: int = 50_000,
) -> np.ndarray:
    """Evolve ``n`` anchors [n, 2] (w, h pixels, sorted by area) for labels wh [N, 2] (pixels).

    k-means on the whitened sizes, then ``generations`` rounds of random multiplicative
    mutation (90% of entries, sigma 0.1) that keep a mutant only when it is fitter. At most
    ``max_labels`` labels (a seeded random subset) are used, to bound the time on large sets.
    """
    rng = np.random.default_rng(seed)
    wh = np.asarray(wh, dtype=np.float64)
    wh = wh[(wh >= MIN_LABEL_PX).any(1)]
    if len(wh) < n:
        raise ValueError(f"kmean_anchors: {len(wh)} usable labels (>= {MIN_LABEL_PX} px) for {n} anchors")
    if len(wh) > max_labels:
        wh = wh[rng.choice(len(wh), max_labels, replace=False)]
    std = wh.std(0)
    std[std == 0] = 1.0
    k, _ = kmeans(wh / std, n, iter=30, rng=rng)
    k = k * std
    if len(k) != n:  # k-means dropped an empty cluster: fall back to random label sizes
        k = wh[rng.choice(len(wh), n, replace=False)]
    best = _fitness(k, wh, anchor_t)
    for _ in range(generations):
        v = np.ones_like(k)
        while (v == 1).all():  # mutate until something changes
            sigma = (rng.random(k.shape) < 0.9) * rng.random() * 0.1
            v = (sigma * rng.standard_normal(k.shape) + 1).clip(0.3, 3.0)
        mutant = (k * v).clip(min=MIN_LABEL_PX)
        fit = _fitness(mutant, wh, anchor_t)
        if fit > best:
            best, k = fit, mutant
    return k[np.argsort(k.prod(1))]


def check_anchors(
    head: nn.Module,
    wh: np.ndarray,
    anchor_t: float = 4.0,
    threshold: float = BPR_THRESHOLD,
    generations: int = 1000,
    seed: int = 0,
) -> AnchorCheck:
    """Check ``head.anchors`` [nl, na, 2] (pixels, stride order) against labels wh [N, 2] (pixels
    at the training size); below ``threshold`` BPR evolve new anchors and, when their BPR is
    higher, write them into ``head.anchors`` (smallest on the finest level). With fewer usable
    labels than anchors nothing is evolved and the anchors are kept."""
    anchors = head.anchors.detach().cpu().double().numpy().reshape(-1, 2)
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    bpr, aat = best_possible_recall(anchors, wh, anchor_t)
    if bpr >= threshold:
        return AnchorCheck(bpr, aat, None, False)
    if (wh >= MIN_LABEL_PX).any(1).sum() < len(anchors):  # too few labels to fit that many anchors
        return AnchorCheck(bpr, aat, None, False)
    new = kmean_anchors(wh, len(anchors), anchor_t, generations, seed)
    new_bpr, _ = best_possible_recall(new, wh, anchor_t)
    if new_bpr <= bpr:
        return AnchorCheck(bpr, aat, new_bpr, False)
    with torch.no_grad():
        head.anchors.copy_(torch.as_tensor(new, dtype=head.anchors.dtype).view_as(head.anchors))
    return AnchorCheck(bpr, aat, new_bpr, True)
