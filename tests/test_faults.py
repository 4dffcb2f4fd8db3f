"""Faults that must lose nothing: full disks, killed saves, weights that overflow fp16 or hold NaN,
checkpoints of the wrong shape (utils.checkpoint); the trainer's cases are in test_bad_input.py."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
import torch
from test_checkpoint import make_ckpt

import utils.checkpoint as checkpoint
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, strip_checkpoint
from utils.errors import UserError


class FullDisk(io.FileIO):
    """A file that takes ``room`` bytes, then fails as a full disk does (ENOSPC on write)."""

    def __init__(self, path, mode, room: int = 100):
        super().__init__(path, mode)
        self.room = room

    def write(self, b):
        if self.room < len(b):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return super().write(b)


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(make_ckpt(1.0), tmp_path / "last.pt")
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint, "open", lambda p, mode: FullDisk(p, mode), raising=False)
    with pytest.raises(CheckpointError, match=rf"no space left on {tmp_path}.*previous file is kept") as e:
        save_checkpoint(make_ckpt(2.0), path)
    assert "unexpected pos" not in str(e.value) and isinstance(e.value, UserError)
    assert path.read_bytes() == before  # the old checkpoint, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left


def test_read_only_folder_is_a_checkpoint_error(tmp_path, monkeypatch):
    def refuse(p, mode):
        raise PermissionError(errno.EACCES, "Permission denied", str(p))

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(CheckpointError, match=rf"{tmp_path}/best.pt: not saved: permission denied"):
        save_checkpoint(make_ckpt(), tmp_path / "best.pt")


def test_stale_temporaries_of_killed_saves_are_removed(tmp_path):
    dead = tmp_path / ".last.pt.999999999.tmp"  # no such pid
    alive = tmp_path / f".last.pt.{os.getppid()}.tmp"  # a live process's save in progress
    other = tmp_path / ".best.pt.999999999.tmp"  # another file's: removed by its own next save
    for p in (dead, alive, other):
        p.write_bytes(b"x" * 1000)
    save_checkpoint(make_ckpt(), tmp_path / "last.pt")
    assert not dead.exists() and alive.exists() and other.exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    ckpt = make_ckpt(float("nan"))
    with pytest.raises(CheckpointError, match=r"last.pt: not saved: 1 tensors of 'model' hold NaN/inf values \(first: w\)"):
        save_checkpoint(ckpt, tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").exists()


def test_strip_keeps_float32_where_fp16_overflows(tmp_path):
    """Finite fp32 weights beyond 65504 became inf when stripped to fp16 (last.pt full of inf)."""
    ckpt = make_ckpt(1.0)
    ckpt["model"]["big"] = torch.tensor([1e6, -3e5, 1.0])
    path = save_checkpoint(ckpt, tmp_path / "last.pt")
    strip_checkpoint(path)
    stripped = load_checkpoint(path)
    assert stripped["model"]["w"].dtype == torch.float16  # fits: halved as before
    assert stripped["model"]["big"].dtype == torch.float32 and stripped["model"]["big"][0] == 1e6
    assert all(torch.isfinite(v).all() for v in stripped["model"].values())


@pytest.mark.parametrize(("change", "message"), [
    ({"model": [1, 2]}, r"key 'model' must be a state dict"),
    ({"model": {"w": "text"}}, r"key 'model' must be a state dict"),
    ({"nc": 0, "names": []}, r"key 'nc' must be a class count >= 1, got 0"),
    ({"names": ["a"]}, r"key 'nc' is 2 but 'names' has 1 entries"),
    ({"model_cfg": "yolov7.yaml"}, r"key 'model_cfg' must be a model config mapping"),
    ({"train_model": {"w": torch.tensor([float("inf")])}}, r"tensors of 'train_model' hold NaN/inf"),
])
def test_malformed_checkpoints_name_the_file_and_key(tmp_path, change, message):
    path = tmp_path / "bad.pt"
    ckpt = make_ckpt()
    ckpt.update(change)
    torch.save(ckpt, path)  # written around save_checkpoint's own checks, as a foreign tool would
    with pytest.raises(CheckpointError, match=rf"{path}: .*{message}"):
        load_checkpoint(path)


def test_scan_skips_and_names_truncated_and_too_thin_images(tmp_path, caplog):
    """A truncated JPEG that kept its end marker used to train with only libjpeg's warning; a
    20000x20 image passed the scan and killed training mid-epoch (cv2.resize to 0 px)."""
    import cv2
    import numpy as np

    from data import build_dataloader

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"good": (64, 80), "thin": (20, 2000)}.items():
        cv2.imwrite(str(images / f"{name}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    data = cv2.imencode(".jpg", rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))[1].tobytes()
    (images / "cut.jpg").write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    for name in ("good", "thin", "cut"):
        (labels / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with caplog.at_level("WARNING"):
        loader, dataset = build_dataloader(images, 1, img_size=64, batch_size=2, augment=True, shuffle=True)
    assert [Path(f).name for f in dataset.files] == ["good.jpg"]
    assert "cut.jpg: corrupt JPEG (Corrupt JPEG data: premature end of data segment)" in caplog.text
    assert "thin.jpg: image is 2000x20, under 4 px on its short side at --img-size 64: skipped" in caplog.text
    assert len(next(iter(loader)).images) == 1
    # at a larger size the thin image is usable again (the cached scan keeps it)
    _, large = build_dataloader(images, 1, img_size=640, batch_size=2)
    assert sorted(Path(f).name for f in large.files) == ["good.jpg", "thin.jpg"]


def test_yaml_12_numbers_and_ranges(tmp_path):
    """`lr0: 1e-3` was rejected as not a number (YAML 1.1 reads it as a string)."""
    from utils.config import ConfigError, Hyp, load

    path = tmp_path / "hyp.yaml"
    path.write_text("lr0: 1e-3\nweight_decay: 5E-4\nwarmup_epochs: 3\n")
    hyp = load(Hyp, path)
    assert hyp.lr0 == 0.001 and hyp.weight_decay == 0.0005 and hyp.warmup_epochs == 3.0
    for text, message in (("mosaic: 7.5", "key 'mosaic': must be <= 1, got 7.5"),
                          ("lr0: -1e-2", "key 'lr0': must be > 0, got -0.01"),
                          ("lr0: .nan", "key 'lr0': must be a finite number, got nan")):
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=rf"hyp.yaml: {message}"):
            load(Hyp, path)
