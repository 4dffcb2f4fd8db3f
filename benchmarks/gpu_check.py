"""The GPU path in one command: train, evaluate and DDP on one CUDA GPU, checked and timed.

    python benchmarks/gpu_check.py [--json] [--img 640] [--batch 16] [--images 384] [--epochs 2]
    python benchmarks/gpu_check.py --allow-cpu   # the same steps on the CPU at a tiny size

Steps, each reported with ok true / false:
- batch: a training loader's batch on CUDA is page-locked (pinned) and channels-last, and
  ``unit_images`` puts it on the GPU still channels-last;
- train: train.py's own ``engine.train.train`` on the first ``--images`` shapes images at
  ``--img`` for ``--epochs`` epochs, ``--precision auto`` (bf16 where the GPU has it, else fp16
  with loss scaling) and the trainer's channels-last model; every loss in results.csv finite;
  the last epoch's img/s (timing.csv) and the peak GPU memory (``torch.cuda.max_memory_allocated``);
- val: the run's checkpoint evaluated on the GPU and on the CPU (TF32 off, so both are fp32):
  the metric of the GPU's own detections computed again on the CPU must equal the GPU's to
  1e-4 (``scoring_max_diff``), and the two whole evaluations agree to 1e-3 (``eval_max_diff``:
  their detections differ by float rounding);
- ddp: a one-process torchrun job joining an NCCL process group (gloo on the CPU), a
  SyncBatchNorm model in DistributedDataParallel taking one AMP step, and the trainer's flag
  exchanges (``any_flag``, ``broadcast_flag``).
The last line is one JSON object (``--json``: only that line on stdout). Exit status: 0 when every
step is ok, 1 when one is not, 2 without CUDA (unless ``--allow-cpu``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from data import build_dataloader, load_data_config, unit_images  # noqa: E402
from data.loader import consumer_options  # noqa: E402
from engine.backends import load_backend  # noqa: E402
from engine.val.evaluator import evaluate  # noqa: E402
from utils.coco_eval import DatasetDetections, GroundTruth, coco_evaluate  # noqa: E402

CFG = "cfg/yolov7-tiny.yaml"
SCORING_TOL = 1e-4  # the same detections scored on two devices
EVAL_TOL = 1e-3  # two whole evaluations: their detections differ by float rounding
CPU_SIZES = {"img": 64, "batch": 8, "images": 16, "epochs": 1, "val_images": 16, "workers": 0}  # --allow-cpu


def subset_data(folder: Path, n_train: int, n_val: int | None) -> Path:
    """A data-set YAML over the first ``n_train`` shapes train images and ``n_val`` val images
    (None: all of them), as .txt lists in ``folder``."""
    data = load_data_config("shapes")
    lists = {}
    for split, n in (("train", n_train), ("val", n_val)):
        images = sorted(p for p in data.split(split)[0].iterdir() if p.suffix == ".jpg")[:n]
        lists[split] = folder / f"{split}.txt"
        lists[split].write_text("".join(f"{p}\n" for p in images))
    path = folder / "subset.yaml"
    path.write_text(f"path: {data.root}\ntrain: {lists['train']}\nval: {lists['val']}\nnames: {list(data.names)}\n")
    return path


def check_batch(data_yaml: Path, device: torch.device, img: int, batch: int) -> dict[str, Any]:
    """One batch of a training loader built for ``device``: pinned (CUDA), channels-last on the host
    and on the device after ``unit_images``."""
    data = load_data_config(str(data_yaml))
    loader, _ = build_dataloader(data.train, data.nc, img_size=img, batch_size=batch, names=data.names, workers=1,
                                 **consumer_options(device))
    b = next(iter(loader))
    on_device = unit_images(b.images, device)
    out = {"pinned": b.images.is_pinned(),
           "channels_last": b.images.is_contiguous(memory_format=torch.channels_last),
           "device_channels_last": on_device.is_contiguous(memory_format=torch.channels_last),
           "device": str(on_device.device)}
    out["ok"] = out["channels_last"] and out["device_channels_last"] and (out["pinned"] or device.type != "cuda")
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _finite(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:  # a text column (timing.csv's precision)
        return True


def check_train(data_yaml: Path, device: torch.device, folder: Path, *, img: int, batch: int, epochs: int,
                workers: int, compile_model: bool = False) -> dict[str, Any]:
    """train.py's training on ``device`` (--precision auto); its losses, speed and peak memory."""
    from engine.train import train
    from engine.train.options import TrainOptions

    opt = TrainOptions(data=str(data_yaml), cfg=CFG, img_size=[img, img], batch_size=batch, epochs=epochs,
                       device="0" if device.type == "cuda" else "cpu", precision="auto", workers=workers,
                       project=str(folder / "runs"), name="train", noautoanchor=True, noplots=True,
                       compile=compile_model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    summary = train(opt)
    seconds = time.perf_counter() - t
    run = Path(summary["save_dir"])
    rows, timing = _read_csv(run / "results.csv"), _read_csv(run / "timing.csv")
    finite = all(_finite(v) for row in rows for v in row.values())
    out = {"seconds": round(seconds, 1), "epochs": len(rows), "iterations": sum(int(r["images"]) for r in timing) // batch,
           "precision": timing[-1]["precision"], "img_per_s": float(timing[-1]["img_per_s"]),
           "losses_finite": finite, "mAP50": summary["mAP50"], "weights": summary["weights"],
           "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None}
    out["ok"] = finite and len(rows) == epochs
    return out


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """fp32 convolutions and matmuls on CUDA (Ampere and later default to TF32 for convolutions)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _evaluate_on(weights: str, data_yaml: Path, device: torch.device, img: int, batch: int):
    """engine.val.evaluator.evaluate of ``weights`` on the val split, model and metric on ``device``."""
    data = load_data_config(str(data_yaml))
    backend = load_backend(weights, device)
    loader, _ = build_dataloader(data.split("val"), data.nc, img_size=img, batch_size=batch,
                                 stride=backend.meta.stride, rect=True, names=data.names, **consumer_options(device))
    with _no_tf32():
        return evaluate(backend.model, loader)


def _max_diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in a)


def check_val(weights: str, data_yaml: Path, device: torch.device, img: int, batch: int) -> dict[str, Any]:
    """The checkpoint evaluated on ``device`` and on the CPU; the device's detections scored again on the CPU."""
    on_device = _evaluate_on(weights, data_yaml, device, img, batch)
    on_cpu = _evaluate_on(weights, data_yaml, torch.device("cpu"), img, batch)
    nc = on_device.coco.precision.shape[2]
    rescored = coco_evaluate(GroundTruth(*(t.cpu() for t in on_device.gt)),
                             DatasetDetections(*(t.cpu() for t in on_device.detections)), nc)
    out = {"scoring_max_diff": _max_diff(on_device.coco.as_dict(), rescored.as_dict()),
           "eval_max_diff": _max_diff(on_device.metrics, on_cpu.metrics),
           "detections": len(on_device.detections.scores), "cpu_detections": len(on_cpu.detections.scores),
           "mAP50_95": on_device.train_metrics.map50_95, "images": on_device.num_images}
    out["ok"] = out["scoring_max_diff"] <= SCORING_TOL and out["eval_max_diff"] <= EVAL_TOL
    return out


def check_ddp(device: torch.device, img: int, timeout: float = 300) -> dict[str, Any]:
    """``ddp_step`` in a one-process torchrun job; its JSON line."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", __file__,
           "--ddp-step", "--img", str(img), *(["--allow-cpu"] if device.type == "cpu" else [])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "returncode": proc.returncode, "stderr_tail": proc.stderr[-1500:]}
    return json.loads(lines[-1])


def ddp_step(img: int) -> dict[str, Any]:
    """Inside torchrun: join the process group (NCCL on CUDA, gloo on the CPU), one AMP training step of
    a SyncBatchNorm yolov7-tiny in DDP, then the trainer's flag exchanges."""
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from engine.train.options import DEFAULT_HYP
    from models.loss import YoloLoss
    from models.yolo import Model
    from utils.config import Hyp, load
    from utils.distributed import any_flag, broadcast_flag, dist_info_from_env
    from utils.paths import resolve_path
    from utils.precision import autocast, resolve_precision

    info = dist_info_from_env()
    device = torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        torch.manual_seed(0)
        model = Model(str(REPO / CFG), nc=5).to(device).to(memory_format=torch.channels_last)
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        precision = resolve_precision("auto", device)
        hyp = load(Hyp, resolve_path(DEFAULT_HYP))
        loss_fn = YoloLoss(model.head, hyp, train_size=img)
        images = torch.rand(2, 3, img, img, device=device).contiguous(memory_format=torch.channels_last)
        targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.3, 0.6, 0.2, 0.2]], device=device)
        with autocast(device, precision):
            raw = ddp(images)
        loss, _ = loss_fn([r.float() for r in raw], targets, (img, img))
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        scaler.scale(loss).backward()
        grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
        flags = [any_flag(True, device), broadcast_flag(True, device), any_flag(False, device)]
        out = {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "precision": precision,
               "sync_bn": device.type == "cuda", "loss": round(float(loss.detach()), 4), "grads_finite": grads_finite,
               "flags_ok": flags == [True, True, False]}
        out["ok"] = bool(grads_finite and out["flags_ok"] and math.isfinite(out["loss"]))
        return out
    finally:
        dist.destroy_process_group()


def _timed(check: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``check(*args, **kwargs)``'s report with the wall seconds it took (``check_s``)."""
    t = time.perf_counter()
    out = check(*args, **kwargs)
    return {**out, "check_s": round(time.perf_counter() - t, 1)}


def run_checks(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every step on ``device``; the report (``ok``: all passed)."""
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "cuda": torch.version.cuda,
                              "img": args.img, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data_yaml = subset_data(folder, args.images, args.val_images)
        report["batch_check"] = _timed(check_batch, data_yaml, device, args.img, args.batch)
        report["train"] = train = _timed(check_train, data_yaml, device, folder, img=args.img, batch=args.batch,
                                         epochs=args.epochs, workers=args.workers, compile_model=args.compile)
        report["val"] = _timed(check_val, train.pop("weights"), data_yaml, device, args.img, args.batch)
    report["ddp"] = _timed(check_ddp, device, args.img)
    report["peak_memory_gb"], report["img_per_s"] = train["peak_memory_gb"], train["img_per_s"]
    report["ok"] = all(report[k]["ok"] for k in ("batch_check", "train", "val", "ddp"))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    p.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the steps on the CPU at a tiny size "
                   f"({', '.join(f'{k} {v}' for k, v in CPU_SIZES.items())}) instead of exiting")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--images", type=int, default=384, help="shapes train images (24 iterations per epoch at batch 16)")
    p.add_argument("--val-images", type=int, default=None, help="shapes val images (default: all 200)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=8, help="training loader workers")
    p.add_argument("--compile", action="store_true", help="train with --compile too")
    p.add_argument("--ddp-step", action="store_true", help=argparse.SUPPRESS)  # the torchrun worker of check_ddp
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(f"gpu_check.py: no CUDA GPU here (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
              "run it on a machine with one, or pass --allow-cpu to run the steps on the CPU", file=sys.stderr)
        return 2
    if not cuda:
        for key, value in CPU_SIZES.items():
            setattr(args, key, value)
    if args.ddp_step:
        print(json.dumps(ddp_step(args.img)))
        return 0
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO, format="%(message)s")
    device = torch.device("cuda:0") if cuda else torch.device("cpu")
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report = run_checks(args, device)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
