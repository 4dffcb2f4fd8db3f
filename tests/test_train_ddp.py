"""torchrun with 2 CPU processes (gloo): one short epoch, rank 0 saves once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import tiny_data

from utils.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes(tmp_path):
    tiny_data(tmp_path)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py",
        "--data", str(tmp_path / "tiny.yaml"), "--cfg", str(tmp_path / "tiny_model.yaml"), "--epochs", "1",
        "--batch-size", "8", "--img-size", "64", "--workers", "0", "--device", "cpu", "--noautoanchor",
        "--project", str(tmp_path / "runs"), "--name", "ddp", "warmup_epochs=0", "mosaic=0", "loss_ota=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["ddp"]  # only rank 0 made a run folder
    # 24 images over 2 processes at 4 per process: 3 batches per rank
    assert "3/3" in proc.stderr and "/6" not in proc.stderr
    ckpt = load_checkpoint(tmp_path / "runs" / "ddp" / "weights" / "last.pt")
    assert ckpt["epoch"] == -1 and len(ckpt["metrics"]) == 1
    assert not any(k.startswith("module.") for k in ckpt["model"])
