"""The Batch contract, rectangular validation batches, caches, close-mosaic and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data import Batch, build_dataloader, unit_images
from data.shapes import ShapesSpec, ensure_shapes
from data.transforms import normalized_to_pixels
from models.yolo import Model
from utils.boxes import cxcywh_to_xyxy, letterbox_to_original
from utils.config import Hyp

SMALL = ShapesSpec(splits=(("train", 10), ("val", 7)), min_side=64, max_side=128, min_object=12, max_object=40)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_shapes(tmp_path_factory.mktemp("loader") / "shapes", SMALL)


def _batches(loader) -> list[Batch]:
    return list(loader)


def _same(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.images, y.images) and torch.equal(x.targets, y.targets) and torch.equal(x.indices, y.indices)
        for x, y in zip(a, b, strict=False)
    )


def test_validation_batches_follow_the_contract_and_map_back(root):
    loader, ds = build_dataloader(root / "images" / "val", 5, img_size=64, batch_size=3, stride=32, rect=True)
    batches = _batches(loader)
    assert len(batches) == 3 and sum(len(b.paths) for b in batches) == 7
    seen = []
    for batch in batches:
        images, targets, paths, shapes, indices = batch  # unpacks as a tuple
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        assert images.shape[2] % 32 == 0 and images.shape[3] % 32 == 0
        assert targets.shape[1] == 6 and indices.dtype == torch.long
        assert set(targets[:, 0].long().tolist()) <= set(range(len(paths)))
        for j, i in enumerate(indices.tolist()):
            seen.append(i)
            assert paths[j] == ds.files[i]
            (h0, w0), (gains, pad) = shapes[j]
            assert (w0, h0) == tuple(ds.shapes[i].astype(int))
            boxes = cxcywh_to_xyxy(targets[targets[:, 0] == j, 2:]) * torch.tensor([images.shape[3], images.shape[2]] * 2)
            back = letterbox_to_original(boxes, gains, pad, (h0, w0))
            expected = normalized_to_pixels(ds.labels[i], w0, h0)[:, 1:]
            np.testing.assert_allclose(back.numpy(), expected, atol=1e-3)
    assert sorted(seen) == list(range(7))
    aspect = ds.shapes[:, 1] / ds.shapes[:, 0]
    assert (np.diff(aspect) >= 0).all()  # rect sorts by aspect ratio


def test_training_batches_are_square_and_normalised(root):
    loader, _ = build_dataloader(root / "images" / "train", 5, img_size=64, batch_size=4, hyp=Hyp(),
                                 augment=True, shuffle=True)
    for batch in loader:
        assert batch.images.shape[1:] == (3, 64, 64)
        assert batch.targets.shape[0] > 0 and (batch.targets[:, 2:] >= 0).all() and (batch.targets[:, 2:] <= 1).all()
        assert all(s is None for s in batch.shapes)  # augmented samples have no letterbox to undo


def test_same_seed_same_batches_with_and_without_workers(root):
    def run(workers: int, seed: int = 3):
        loader, _ = build_dataloader(root / "images" / "train", 5, img_size=64, batch_size=4, hyp=Hyp(),
                                     augment=True, shuffle=True, seed=seed, workers=workers)
        return _batches(loader), _batches(loader)  # two epochs

    (a0, a1), (b0, b1), (w0, w1) = run(0), run(0), run(2)
    assert _same(a0, b0) and _same(a1, b1)
    assert _same(a0, w0) and _same(a1, w1)
    assert not _same(a0, a1)  # the next pass is the next epoch: new order and augmentation
    assert not _same(a0, run(0, seed=4)[0])


def test_set_epoch_replays_an_epoch(root):
    loader, _ = build_dataloader(root / "images" / "train", 5, img_size=64, batch_size=5, hyp=Hyp(),
                                 augment=True, shuffle=True)
    first, second = _batches(loader), _batches(loader)
    loader.set_epoch(1)
    assert _same(_batches(loader), second)
    loader.sampler.set_epoch(0)  # the DistributedSampler way works too
    assert _same(_batches(loader), first)


def test_close_mosaic_gives_single_letterboxed_images(root):
    still = Hyp(hsv_h=0, hsv_s=0, hsv_v=0, translate=0, scale=0, fliplr=0, mixup=0, mosaic=1.0)
    train, ds = build_dataloader(root / "images" / "train", 5, img_size=64, batch_size=10, hyp=still, augment=True)
    _, plain = build_dataloader(root / "images" / "train", 5, img_size=64, batch_size=10)
    ds.augmenter.albumentations = None
    mosaic_targets = next(iter(train)).targets
    train.close_mosaic()
    batch = next(iter(train))
    expected = torch.cat([plain[i][1] for i in range(len(plain))])
    assert not torch.allclose(mosaic_targets[:, 1:].sum(0), expected[:, 1:].sum(0))
    torch.testing.assert_close(batch.targets[:, 1:], expected[:, 1:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("cache", ["ram", "disk"])
def test_image_cache_gives_the_same_batches(root, cache):
    # 128 px: no image is twice that, so uncached reads decode at full size as the disk cache does
    kwargs = dict(img_size=128, batch_size=4, hyp=Hyp(), augment=True, shuffle=True, seed=1)
    plain, _ = build_dataloader(root / "images" / "train", 5, **kwargs)
    cached, _ = build_dataloader(root / "images" / "train", 5, cache=cache, **kwargs)
    assert _same(_batches(plain), _batches(cached))
    if cache == "disk":
        assert len(list((root / "images" / "train").glob("*.jpg.npy"))) == 10
        assert _same(_batches(plain), _batches(cached))  # second pass reads the .npy files


@pytest.mark.parametrize("free_share", [0.09, 0.11])
def test_auto_cache_keeps_the_images_in_ram_when_they_take_little_memory(root, monkeypatch, caplog, free_share):
    """'auto' caches when the resized images take at most 10% of the available memory, else reads them."""
    import data.dataset

    kwargs = dict(img_size=128, batch_size=4, hyp=Hyp(), augment=True, shuffle=True, seed=1)
    _, probe = build_dataloader(root / "images" / "train", 5, **kwargs)
    monkeypatch.setattr(data.dataset, "available_memory", lambda: int(probe.cache_bytes() / free_share))
    with caplog.at_level("INFO", logger="data.dataset"):
        auto, ds = build_dataloader(root / "images" / "train", 5, cache="auto", **kwargs)
    fits = free_share < 0.1
    assert ds.cache == ("ram" if fits else None)
    assert sum(im is not None for im in ds._ram) == (10 if fits else 0)
    assert ("not caching" not in caplog.text) == fits and "10 images in RAM" in caplog.text
    assert sum(im.nbytes for im in ds._ram if im is not None) == (probe.cache_bytes() if fits else 0)
    plain, _ = build_dataloader(root / "images" / "train", 5, **kwargs)
    assert _same(_batches(plain), _batches(auto))


def test_single_cls_and_coco_source(root):
    _, ds = build_dataloader(root / "annotations" / "instances_val.json", 5, img_size=64, single_cls=True)
    assert all((lab[:, 0] == 0).all() for lab in ds.labels) and ds.category_ids == [1, 2, 3, 4, 5]
    assert ds.image_ids == list(range(1, 8))


def test_distributed_sampler_splits_and_follows_the_epoch(root, tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader, _ = build_dataloader(root / "images" / "train", 5, img_size=64, batch_size=4, hyp=Hyp(),
                                     augment=True, shuffle=True, rank=0)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        first, second = _batches(loader), _batches(loader)
        assert sorted(torch.cat([b.indices for b in first]).tolist()) == list(range(10))
        assert not _same(first, second)
        loader.set_epoch(0)
        assert _same(_batches(loader), first)
    finally:
        dist.destroy_process_group()


def test_pinned_memory_only_when_asked(root):
    # Pinning is for a CUDA consumer; a CPU run on a machine that has a GPU must not pin.
    src = root / "images" / "val"
    default, _ = build_dataloader(src, nc=5, img_size=128, batch_size=4, rect=True)
    pinned, _ = build_dataloader(src, nc=5, img_size=128, batch_size=4, rect=True, pin_memory=True)
    assert default.loader.pin_memory is False and pinned.loader.pin_memory is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [True, False])
def test_unit_images_is_divide_by_255_in_the_dtype_and_layout(dtype, channels_last):
    images = torch.arange(2 * 3 * 5 * 7, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 3, 5, 7)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out = unit_images(images, torch.device("cpu"), dtype)
    assert out.dtype == dtype and out.shape == images.shape
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(out, (images.float() / 255).to(dtype))
    strided = images[..., ::2]  # neither layout: the plain path
    assert torch.equal(unit_images(strided, torch.device("cpu"), dtype), (strided.float() / 255).to(dtype))


def test_bf16_input_gives_the_forward_autocast_gives_fp32_input():
    """The trainer feeds its bf16 forward bf16 images: the same numbers as autocast's own rounding."""
    torch.manual_seed(0)
    model = Model("yolov7-tiny.yaml", nc=3).train().to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = model(unit_images(images, torch.device("cpu"), torch.bfloat16))
        autocast_rounded = model(images.float() / 255)
    assert all(torch.equal(a, b) for a, b in zip(ours, autocast_rounded, strict=True))
