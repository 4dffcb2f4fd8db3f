"""YOLOv7's --image-weights: images holding hard or rare classes are drawn more often.

class weight c = (1 - mAP_c)^2 / frequency_c (mAP_c of the last validation, 0 before any),
image weight = sum of its labels' class weights; images without labels get weight 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_counts(labels: Sequence[np.ndarray], nc: int) -> np.ndarray:
    """int64 [N, nc]: labels of each class in each image. ``labels[i]`` [n, 5] (cls, cx, cy, w, h)."""
    counts = np.zeros((len(labels), nc), dtype=np.int64)
    for i, lab in enumerate(labels):
        counts[i] = np.bincount(np.asarray(lab)[:, 0].astype(np.int64), minlength=nc)[:nc]
    return counts


def class_weights(counts: np.ndarray, class_maps: Sequence[float] | np.ndarray) -> np.ndarray:
    """float64 [nc]: (1 - map)^2 / frequency, normalised to sum 1 before the mAP factor (YOLOv7's
    ``labels_to_class_weights``). ``counts`` [N, nc] from ``class_counts``; a class absent from the
    labels counts as seen once; ``class_maps`` [nc] per-class mAP in 0..1."""
    frequency = np.maximum(counts.sum(0), 1).astype(np.float64)
    inverse = 1.0 / frequency
    maps = np.asarray(class_maps, dtype=np.float64)
    if maps.shape != inverse.shape:
        raise ValueError(f"class_maps must have {len(inverse)} values, got {maps.shape}")
    return inverse / inverse.sum() * (1.0 - maps) ** 2


def image_weights(labels: Sequence[np.ndarray], nc: int, class_maps: Sequence[float] | np.ndarray
                  ) -> np.ndarray:
    """float64 [N]: each image's sum over its labels of ``class_weights`` (YOLOv7's
    ``labels_to_image_weights``); ``labels[i]`` [n, 5] (cls, ...), ``class_maps`` [nc]."""
    counts = class_counts(labels, nc)
    return counts @ class_weights(counts, class_maps)
