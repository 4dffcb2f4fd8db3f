"""The training augmentation pipeline, driven by the hyper-parameters (``utils.config.Hyp``).

Per sample: mosaic of 4 (80 %) or 9 images with probability ``hyp.mosaic`` (copy-paste on the
mosaic canvas, ``hyp.copy_paste`` of its polygon objects, then mixup with a second mosaic with probability
``hyp.mixup``), else a letterboxed single image; then random perspective (``degrees``,
``translate``, ``scale``, ``shear``, ``perspective``), paste-in with probability
``hyp.paste_in`` (objects of a per-epoch pool, ``data.paste``), the albumentations stage (blur,
median blur, grey, CLAHE at 1 % each), HSV jitter (``hsv_h/s/v``) and flips (``flipud``,
``fliplr``). Polygon rows travel through every geometric step and define their boxes
(``data.polygons``); copy-paste and paste-in need them and do nothing on box-only data.

Paste-in pool: YOLOv7 builds a whole extra 4-image mosaic per pasted sample (and repeats until
it has 30 objects); here the objects of ``POOL_IMAGES`` images drawn from (seed, epoch) are cut
once per epoch (per worker), and each sample draws from that pool with its own generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from data.mosaic import mosaic, place4, place9
from data.paste import PoolObject, build_pool, copy_paste, paste_in
from data.polygons import Polygons
from data.transforms import augment_hsv, flip_lr, flip_ud, mixup, pixels_to_normalized, random_perspective
from utils.config import Hyp

if TYPE_CHECKING:
    import albumentations as A

MOSAIC9_PROBABILITY = 0.2  # YOLOv7 uses a 9-image mosaic for 20 % of mosaic samples


class ImageSource(Protocol):
    """What the augmenter reads of its data set (``data.dataset.DetectionDataset`` is one): the
    split's images and labels, the training size, and the (seed, epoch) of the sample stream."""

    img_size: int
    seed: int
    epoch: int
    mosaic: bool
    has_segments: bool
    labels: Sequence[np.ndarray]  # per image [n, 5] cls, cx, cy, w, h normalised
    segments: Sequence[Any]  # per image, one polygon per label row

    def __len__(self) -> int: ...

    def load_image(self, index: int) -> tuple[np.ndarray, tuple[int, int]]: ...

    def letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, Polygons, Any]: ...


def build_albumentations(transforms: list[A.BasicTransform] | None = None) -> A.Compose | None:
    """An albumentations Compose that carries boxes, or None if albumentations is unavailable.

    ``transforms`` default to ultralytics' light pixel-level set (blur, median blur, grey, CLAHE
    at 1 % each). Boxes travel as ``pascal_voc`` (xyxy pixels) with the classes as a label
    field, so a geometric transform added here moves them too; as in ``box_candidates``, a box
    that keeps under 10 % of its area is dropped with its class. A set of pixel-only transforms
    gets no box processing at all: it cannot move a box, and albumentations' checking and
    clipping of every box would cost most of the stage's time (docs/benchmarks.md).
    """
    try:
        import albumentations as A  # imported here: slow to import, and only training needs it
    except ImportError:
        return None
    if transforms is None:
        transforms = [A.Blur(p=0.01), A.MedianBlur(p=0.01), A.ToGray(p=0.01), A.CLAHE(p=0.01)]
    if all(isinstance(t, A.ImageOnlyTransform) for t in transforms):
        return A.Compose(transforms)
    boxes = A.BboxParams(format="pascal_voc", label_fields=["classes", "rows"], min_visibility=0.1, clip=True)
    return A.Compose(transforms, bbox_params=boxes)


def apply_albumentations(compose: A.Compose, img: np.ndarray, labels: np.ndarray,
                         seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``compose`` (from ``build_albumentations``) with ``seed`` on an image [h, w, 3] and its
    labels [n, 5] (cls, x1, y1, x2, y2 pixels); returns the new image, float32 labels [m, 5] and
    the input row of each (int [m], to keep polygons beside their rows)."""
    compose.set_random_seed(seed)
    if "bboxes" not in compose.processors:  # pixel-only: the boxes stay as they are
        return compose(image=img)["image"], labels.astype(np.float32), np.arange(len(labels))
    out = compose(image=img, bboxes=labels[:, 1:5], classes=labels[:, 0], rows=np.arange(len(labels)))
    boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
    classes = np.asarray(out["classes"], np.float32).reshape(-1, 1)
    return out["image"], np.concatenate([classes, boxes], 1), np.asarray(out["rows"], np.int64).reshape(-1)


Sample = tuple[np.ndarray, np.ndarray, Polygons]  # RGB image, labels [n, 5] cls xyxy pixels, polygons


class Augmenter:
    """Callable (index, rng) -> (RGB image [s, s, 3], labels [n, 5] cls cx cy w h normalised, None);
    ``sample(index, rng)`` gives the same sample before normalisation, with its polygons."""

    def __init__(self, dataset: ImageSource, hyp: Hyp) -> None:
        self.dataset, self.hyp = dataset, hyp
        self.albumentations = build_albumentations()
        self.copy_paste = hyp.copy_paste if dataset.has_segments else 0.0
        self.paste_in = hyp.paste_in if dataset.has_segments else 0.0
        self._pool: tuple[int, list[PoolObject]] | None = None  # (epoch, objects)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}  # workers cut their own pool: nothing big to pickle

    def pool(self) -> list[PoolObject]:
        """The paste-in objects of the dataset's current epoch (cut on first use, from (seed, epoch))."""
        ds = self.dataset
        if self._pool is None or self._pool[0] != ds.epoch:
            rng = np.random.default_rng((ds.seed, ds.epoch, len(ds), 1))  # no sample index reaches len(ds)
            self._pool = ds.epoch, build_pool(lambda i: (ds.load_image(i)[0], ds.labels[i], ds.segments[i]),
                                              len(ds), rng)
        return self._pool[1]

    def _mosaic(self, index: int, rng: np.random.Generator) -> Sample:
        """A mosaic around sample ``index``, copy-pasted and warped to img_size."""
        ds, s = self.dataset, self.dataset.img_size
        nine = rng.random() < MOSAIC9_PROBABILITY
        indices = [index, *rng.integers(0, len(ds), 8 if nine else 3).tolist()]
        loaded = [ds.load_image(i)[0] for i in indices]
        sizes = [im.shape[:2] for im in loaded]
        if nine:
            placements = place9(tuple(int(v) for v in rng.integers(0, s, 2)), sizes, s)
        else:
            placements = place4(tuple(int(v) for v in rng.integers(s // 2, 3 * s // 2, 2)), sizes, 2 * s)
        img, labels, polygons = mosaic(loaded, [ds.labels[i] for i in indices], placements, 2 * s,
                                       [ds.segments[i] for i in indices])
        if self.copy_paste > 0:
            img, labels, polygons = copy_paste(img, labels, polygons, self.copy_paste, rng)
        return self._warp((img, labels, polygons), rng, (s, s))

    def _warp(self, sample: Sample, rng: np.random.Generator, out_size: tuple[int, int] | None = None) -> Sample:
        h = self.hyp
        img, labels, polygons = sample
        return random_perspective(img, labels, rng, h.degrees, h.translate, h.scale, h.shear, h.perspective,
                                  out_size, polygons)

    def _albumentations(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.albumentations is None:
            return sample
        img, labels, rows = apply_albumentations(self.albumentations, *sample[:2], int(rng.integers(2**31)))
        return img, labels, [sample[2][r] for r in rows]

    def sample(self, index: int, rng: np.random.Generator) -> Sample:
        """Augmented sample ``index``: RGB image [s, s, 3], labels [n, 5] (cls, xyxy pixels), polygons
        (pixels, None for box rows)."""
        ds, h = self.dataset, self.hyp
        if ds.mosaic and rng.random() < h.mosaic:
            img, labels, polygons = self._mosaic(index, rng)
            if rng.random() < h.mixup:
                img2, labels2, polygons2 = self._mosaic(int(rng.integers(len(ds))), rng)
                img, labels = mixup(img, labels, img2, labels2, rng)
                polygons = polygons + polygons2
        else:
            img, labels, polygons, _ = ds.letterboxed(index)
            img, labels, polygons = self._warp((img, labels, polygons), rng)  # no letterbox shapes to report
        if self.paste_in > 0 and rng.random() < self.paste_in:
            img, labels, polygons = paste_in(img, labels, polygons, self.pool(), rng)
        img, labels, polygons = self._albumentations((img, labels, polygons), rng)
        img = augment_hsv(img, rng, h.hsv_h, h.hsv_s, h.hsv_v)
        if rng.random() < h.flipud:
            img, labels, polygons = flip_ud(img, labels, polygons)
        if rng.random() < h.fliplr:
            img, labels, polygons = flip_lr(img, labels, polygons)
        return img, labels, polygons

    def __call__(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, None]:
        img, labels, _ = self.sample(index, rng)
        return img, pixels_to_normalized(labels, img.shape[1], img.shape[0]), None
