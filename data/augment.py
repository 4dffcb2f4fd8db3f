"""The training augmentation pipeline, driven by the hyper-parameters (``utils.config.Hyp``).

Per sample: mosaic of 4 (80 %) or 9 images with probability ``hyp.mosaic`` (then mixup with a
second mosaic with probability ``hyp.mixup``), else a letterboxed single image; then random
perspective (``degrees``, ``translate``, ``scale``, ``shear``, ``perspective``), the
albumentations stage (blur, median blur, grey, CLAHE at 1 % each), HSV jitter (``hsv_h/s/v``)
and flips (``flipud``, ``fliplr``).

``copy_paste`` and ``paste_in`` are accepted (they are keys of YOLOv7's hyp files) and ignored:
both need instance masks or YOLOv7's per-object crop bank, which this loader does not keep.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from data.mosaic import mosaic, place4, place9
from data.transforms import augment_hsv, flip_lr, flip_ud, mixup, pixels_to_normalized, random_perspective
from utils.config import Hyp

if TYPE_CHECKING:
    import albumentations as A

    from data.dataset import DetectionDataset

MOSAIC9_PROBABILITY = 0.2  # YOLOv7 uses a 9-image mosaic for 20 % of mosaic samples


def build_albumentations(transforms: list[A.BasicTransform] | None = None) -> A.Compose | None:
    """An albumentations Compose that carries boxes, or None if albumentations is unavailable.

    ``transforms`` default to ultralytics' light pixel-level set (blur, median blur, grey, CLAHE
    at 1 % each). Boxes travel as ``pascal_voc`` (xyxy pixels) with the classes as a label
    field, so a geometric transform added here moves them too; as in ``box_candidates``, a box
    that keeps under 10 % of its area is dropped with its class.
    """
    try:
        import albumentations as A  # imported here: slow to import, and only training needs it
    except ImportError:
        return None
    if transforms is None:
        transforms = [A.Blur(p=0.01), A.MedianBlur(p=0.01), A.ToGray(p=0.01), A.CLAHE(p=0.01)]
    boxes = A.BboxParams(format="pascal_voc", label_fields=["classes"], min_visibility=0.1, clip=True)
    with warnings.catch_warnings():  # the default set has no box transform; boxes still pass through
        warnings.filterwarnings("ignore", "Got processor for bboxes", UserWarning)
        return A.Compose(transforms, bbox_params=boxes)


def apply_albumentations(compose: A.Compose, img: np.ndarray, labels: np.ndarray,
                         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Run ``compose`` (from ``build_albumentations``) with ``seed`` on an image [h, w, 3] and its
    labels [n, 5] (cls, x1, y1, x2, y2 pixels); returns the new image and float32 labels [m, 5]."""
    compose.set_random_seed(seed)
    out = compose(image=img, bboxes=labels[:, 1:5], classes=labels[:, 0])
    boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
    classes = np.asarray(out["classes"], np.float32).reshape(-1, 1)
    return out["image"], np.concatenate([classes, boxes], 1)


class Augmenter:
    """Callable (index, rng) -> (RGB image [s, s, 3], labels [n, 5] cls cx cy w h normalised, None)."""

    def __init__(self, dataset: DetectionDataset, hyp: Hyp) -> None:
        self.dataset, self.hyp = dataset, hyp
        self.albumentations = build_albumentations()

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A mosaic around sample ``index``, warped to img_size; labels [n, 5] (cls, xyxy pixels)."""
        ds, s = self.dataset, self.dataset.img_size
        nine = rng.random() < MOSAIC9_PROBABILITY
        indices = [index, *rng.integers(0, len(ds), 8 if nine else 3).tolist()]
        loaded = [ds.load_image(i)[0] for i in indices]
        sizes = [im.shape[:2] for im in loaded]
        if nine:
            placements = place9(tuple(int(v) for v in rng.integers(0, s, 2)), sizes, s)
        else:
            placements = place4(tuple(int(v) for v in rng.integers(s // 2, 3 * s // 2, 2)), sizes, 2 * s)
        img, labels = mosaic(loaded, [ds.labels[i] for i in indices], placements, 2 * s)
        return self._warp(img, labels, rng, (s, s))

    def _warp(self, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
              out_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        h = self.hyp
        return random_perspective(img, labels, rng, h.degrees, h.translate, h.scale, h.shear, h.perspective,
                                  out_size)

    def _albumentations(self, img: np.ndarray, labels: np.ndarray,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.albumentations is None:
            return img, labels
        return apply_albumentations(self.albumentations, img, labels, int(rng.integers(2**31)))

    def __call__(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, None]:
        ds, h = self.dataset, self.hyp
        if ds.mosaic and rng.random() < h.mosaic:
            img, labels = self._mosaic(index, rng)
            if rng.random() < h.mixup:
                img2, labels2 = self._mosaic(int(rng.integers(len(ds))), rng)
                img, labels = mixup(img, labels, img2, labels2, rng)
        else:
            img, labels, _ = ds.letterboxed(index)
            img, labels = self._warp(img, labels, rng)  # moves the image: no letterbox shapes to report
        img, labels = self._albumentations(img, labels, rng)
        labels = pixels_to_normalized(labels, img.shape[1], img.shape[0])
        img = augment_hsv(img, rng, h.hsv_h, h.hsv_s, h.hsv_v)
        if rng.random() < h.flipud:
            img, labels = flip_ud(img, labels)
        if rng.random() < h.fliplr:
            img, labels = flip_lr(img, labels)
        return img, labels, None
