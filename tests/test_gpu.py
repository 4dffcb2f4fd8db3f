"""The CUDA paths (AMP step, pinned channels-last batches, evaluation on the GPU, NCCL), skipped
without a GPU, and benchmarks/gpu_check.py, which runs them all, exercised on the CPU."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_data, tiny_options

from engine.train import train
from engine.train.options import DEFAULT_HYP
from models.loss import YoloLoss
from models.yolo import Model
from utils.coco_eval import DatasetDetections, GroundTruth, coco_evaluate
from utils.config import Hyp, load
from utils.paths import resolve_path
from utils.precision import autocast

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda:0")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_step_is_finite_and_really_mixed(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    torch.manual_seed(0)
    model = Model(str(REPO / "cfg/yolov7-tiny.yaml"), nc=5).to(CUDA).to(memory_format=torch.channels_last).train()
    loss_fn = YoloLoss(model.head, load(Hyp, resolve_path(DEFAULT_HYP)), train_size=128)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    images = torch.rand(4, 3, 128, 128, device=CUDA).contiguous(memory_format=torch.channels_last)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [2, 3, 0.3, 0.6, 0.2, 0.2]], device=CUDA)
    before = [p.detach().clone() for p in model.parameters()]
    with autocast(CUDA, precision):
        raw = model(images)
    assert raw[0].dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    loss, _ = loss_fn([r.float() for r in raw], targets, (128, 128))
    assert math.isfinite(loss.item())
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))  # the step was taken


@needs_cuda
def test_cuda_batches_are_pinned_and_stay_channels_last(tmp_path):
    result = _gpu_check().check_batch(tiny_data(tmp_path), CUDA, img=64, batch=4)
    assert result["pinned"] and result["channels_last"] and result["device_channels_last"], result


def _random_scene(seed: int, device: torch.device) -> tuple[GroundTruth, DatasetDetections]:
    """20 images, 3 classes: ground truth and noisy, partly wrong detections (xywh pixels)."""
    g = torch.Generator().manual_seed(seed)
    n_gt, n_dt = 120, 400
    gt_boxes = torch.cat([torch.rand(n_gt, 2, generator=g) * 500, 10 + torch.rand(n_gt, 2, generator=g) * 90], 1)
    pick = torch.randint(0, n_gt, (n_dt,), generator=g)
    dt_boxes = gt_boxes[pick] + torch.randn(n_dt, 4, generator=g) * 6
    dt_boxes[:, 2:] = dt_boxes[:, 2:].clamp(min=1)
    gt_image, gt_cls = torch.randint(0, 20, (n_gt,), generator=g), torch.randint(0, 3, (n_gt,), generator=g)
    dt_cls = torch.where(torch.rand(n_dt, generator=g) < 0.8, gt_cls[pick], torch.randint(0, 3, (n_dt,), generator=g))
    gt = GroundTruth(gt_image, gt_cls, gt_boxes.double(), (gt_boxes[:, 2] * gt_boxes[:, 3]).double(),
                     torch.rand(n_gt, generator=g) < 0.05)
    dt = DatasetDetections(gt_image[pick], dt_cls, dt_boxes.double(), torch.rand(n_dt, generator=g).double())
    return GroundTruth(*(t.to(device) for t in gt)), DatasetDetections(*(t.to(device) for t in dt))


@needs_cuda
def test_coco_metric_on_cuda_equals_cpu():
    on_gpu = coco_evaluate(*_random_scene(0, CUDA), 3).as_dict()
    on_cpu = coco_evaluate(*_random_scene(0, torch.device("cpu")), 3).as_dict()
    assert on_cpu["AP"] > 0.05  # a scene with something to score
    assert max(abs(on_gpu[k] - on_cpu[k]) for k in on_cpu) <= 1e-4, (on_gpu, on_cpu)


@needs_cuda
def test_evaluation_on_cuda_equals_cpu(tmp_path):
    data = tiny_data(tmp_path)
    summary = train(tiny_options(tmp_path, epochs=1, device="cpu"))
    result = _gpu_check().check_val(summary["weights"], data, CUDA, img=64, batch=8)
    assert result["scoring_max_diff"] <= 1e-4 and result["eval_max_diff"] <= 1e-3, result


@needs_cuda
def test_nccl_process_group_and_ddp_step():
    result = _gpu_check().check_ddp(CUDA, img=128)
    assert result["ok"] and result["backend"] == "nccl" and result["sync_bn"], result


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_check_without_cuda_says_so_and_exits_2(capsys):
    assert _gpu_check().main(["--json"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--allow-cpu" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA --allow-cpu is the full GPU run")
def test_gpu_check_runs_every_step_on_the_cpu(capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _gpu_check().main(["--allow-cpu", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert len(out) == 1  # --json: the one line
    assert report["ok"] and report["device"] == "cpu" and report["img"] == 64
    assert report["train"]["losses_finite"] and report["train"]["epochs"] == 1 and report["img_per_s"] > 0
    assert report["val"]["scoring_max_diff"] == 0 and report["val"]["images"] == 16
    assert report["ddp"]["backend"] == "gloo" and report["ddp"]["grads_finite"] and report["ddp"]["flags_ok"]
    assert report["batch_check"]["channels_last"] and not report["batch_check"]["pinned"]
