"""utils.checkpoint: atomic save, safe load, strip, RNG round trip."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from utils.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_dict_is_finite,
    strip_checkpoint,
)


def make_ckpt(value: float = 1.0) -> dict:
    return {
        "model": {"w": torch.full((3, 3), value), "n": torch.tensor(4)},
        "model_cfg": {"nc": 2}, "names": ["a", "b"], "nc": 2, "epoch": 3, "version": CHECKPOINT_VERSION,
        "optimizer": {"state": {}, "param_groups": []}, "ema": {"updates": 7}, "rng": rng_state(),
        "train_model": {"w": torch.zeros(3, 3)}, "best_fitness": 0.5, "metrics": [{"epoch": 0, "fitness": 0.1}],
    }


def test_round_trip(tmp_path):
    path = save_checkpoint(make_ckpt(2.0), tmp_path / "last.pt")
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["model"]["w"], torch.full((3, 3), 2.0))
    assert ckpt["names"] == ["a", "b"] and ckpt["metrics"][0]["fitness"] == 0.1
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_strip_drops_training_state(tmp_path):
    path = save_checkpoint(make_ckpt(), tmp_path / "best.pt")
    strip_checkpoint(path)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == -1 and ckpt["model"]["w"].dtype == torch.float16
    assert ckpt["model"]["n"].dtype == torch.int64
    assert not {"optimizer", "ema", "rng", "train_model"} & ckpt.keys()


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    text = tmp_path / "passwd.pt"  # plain text: torch's weights-only unpickler fails with an IndexError
    text.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    with pytest.raises(CheckpointError, match="passwd.pt: not a checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="missing key 'model'"):
        load_checkpoint(other)
    pickled = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled module, like official YOLOv7 files
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(pickled)


def test_interrupted_save_keeps_old_file(tmp_path):
    """A process killed (SIGKILL) in the middle of writing leaves the previous last.pt intact."""
    path = tmp_path / "last.pt"
    save_checkpoint(make_ckpt(1.0), path)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from utils.checkpoint import save_checkpoint
        real_save = torch.save
        def dying_save(obj, f):
            real_save(obj, f)
            f.write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)  # die after bytes hit the temp file, before the rename
        torch.save = dying_save
        save_checkpoint({{"model": {{"w": torch.full((3, 3), 9.0)}}}}, {str(path)!r})
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3, 3), 1.0))


def test_finite_check():
    assert state_dict_is_finite({"a": torch.ones(2), "n": torch.tensor(1)})
    assert not state_dict_is_finite({"a": torch.tensor([1.0, float("nan")])})
    assert not state_dict_is_finite({"a": torch.tensor([float("inf")])})


def test_rng_round_trip(tmp_path):
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    path = save_checkpoint({**make_ckpt(), "rng": state}, tmp_path / "r.pt")
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
