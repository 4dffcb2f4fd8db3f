"""The flat label store: the same samples as the per-image lists it replaced, and its cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from data import build_dataloader
from data.shapes import ShapesSpec, ensure_shapes
from utils.config import Hyp

SPEC = ShapesSpec(splits=(("train", 40), ("val", 12)), min_side=64, max_side=128, min_object=12, max_object=40)
# md5 of the samples below as the per-image lists (json cache) gave them, before the flat store
SAMPLES_MD5 = "044b6d00ae0d80d67204a69e9a2c55ba"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_shapes(tmp_path_factory.mktemp("store") / "shapes", SPEC)


def _update(md5, img: np.ndarray, labels: np.ndarray, polygons: list) -> None:
    md5.update(np.ascontiguousarray(img).tobytes())
    md5.update(np.asarray(labels, np.float32).tobytes())
    for p in polygons:
        md5.update(b"box" if p is None else np.asarray(p, np.float32).tobytes())


def test_the_flat_store_gives_the_same_samples_as_the_lists(root):
    """120 augmented training samples (mosaic, mixup, copy-paste, paste-in: every path that reads
    labels and polygons) and the letterboxed validation samples, single-class too."""
    hyp = Hyp(copy_paste=0.5, paste_in=0.5, mixup=0.3)
    md5 = hashlib.md5()
    _, train = build_dataloader(root / "images" / "train", 5, img_size=96, hyp=hyp, augment=True, seed=3)
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(train)):
            _update(md5, *train.augmenter.sample(i, train.rng(i)))
    for single_cls in (False, True):
        _, val = build_dataloader(root / "images" / "val", 5, img_size=96, batch_size=4, rect=True,
                                  single_cls=single_cls)
        for i in range(len(val)):
            img, labels, polygons, _ = val.letterboxed(i)
            _update(md5, img, labels, polygons)
            md5.update(np.asarray(val.crowd[i], np.float32).tobytes())
    assert md5.hexdigest() == SAMPLES_MD5
