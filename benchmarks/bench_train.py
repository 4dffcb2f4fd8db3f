"""Training throughput: the model step and the real train.py loop, per precision, next to this
machine's measured peak, all in one run.

    python benchmarks/bench_train.py [--cfg yolov7-tiny.yaml] [--img 320] [--batch 16] [--iters 8]
                                     [--precision fp32 bf16] [--loop] [--loop-images 480] [--repeats 3]
                                     [--json]

Step: the training step alone (forward, YoloLoss, backward, SGD step, EMA update) on batches
the shapes set's augmented loader made beforehand, timed phase by phase after warm-up steps.
Loop (``--loop``): train.py's own epoch loop (``engine`` setup and ``train_one_epoch``, its
loader, workers and progress bar) on the first ``--loop-images`` shapes images, with the step's
training (the shapes hyper-parameters, SGD, no warmup); epoch 0 warms up (it also draws the
train_batch pictures), then ``--repeats`` times: a timed epoch, worker start-up included, with the
time the loop waits for batches; the next epoch on its batches made beforehand ("premade"), so
loop / premade is what the loader's work costs the model when both share the cores; the step
timed again. The machine's speed drifts by more than the loader costs, so each loop epoch is
divided by the mean of the steps timed just before and after it, and the medians are reported
(the step's rate and its speed-up over fp32: the median of all its timings). Like train.py, the
script lets the model's OpenMP threads sleep soon (utils.cpu.shorten_openmp_spin). Achieved GFLOP/s =
3 x forward GFLOPs x img/s (backward costs about twice the forward). The peak is a large matmul and
a 3x3 convolution, fp32 and bf16, measured in the same run: figures from other machines compare
through it.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cpu import shorten_openmp_spin  # noqa: E402

if __name__ == "__main__":  # as train.py does, before torch loads
    shorten_openmp_spin()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from data import build_dataloader, load_data_config, unit_images  # noqa: E402
from engine.train.ema import ModelEMA  # noqa: E402
from engine.train.optim import accumulation_steps, build_optimizer  # noqa: E402
from engine.train.options import DEFAULT_HYP, TrainOptions  # noqa: E402
from models.loss import YoloLoss  # noqa: E402
from models.yolo import Model, count_flops  # noqa: E402
from utils.config import Hyp, load  # noqa: E402
from utils.paths import resolve_path  # noqa: E402
from utils.precision import (  # noqa: E402
    PRECISIONS,
    autocast,
    autocast_dtype,
    cpu_has_native_bf16,
    resolve_precision,
)

PHASES = ("forward", "loss", "backward", "optimizer", "ema")
STEADY_STATE = ("warmup_epochs=0",)  # the loop's hyp override: no warmup, as the step
CPU = torch.device("cpu")


def _timed(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_gflops(precisions: list[str]) -> dict[str, float]:
    """Measured GFLOP/s of a 2048^3 matmul and of a 3x3 128->128 conv forward on 16 x 80x80
    (channels-last, as the trainer runs), per precision; ``conv3x3_gflops`` is the fp32 conv."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    conv = nn.Conv2d(128, 128, 3, padding=1, bias=False).eval().to(memory_format=torch.channels_last)
    x = torch.randn(16, 128, 80, 80).contiguous(memory_format=torch.channels_last)
    conv_flops = 2 * 16 * 128 * 128 * 9 * 80 * 80
    out = {}
    for p in dict.fromkeys(["fp32", *precisions]):
        with torch.no_grad(), autocast(CPU, p):
            out[f"matmul_{p}_gflops"] = round(2 * 2048**3 / _timed(lambda: a @ b, 5) / 1e9, 1)
            out[f"conv3x3_{p}_gflops"] = round(conv_flops / _timed(lambda: conv(x), 3) / 1e9, 1)
    out["conv3x3_gflops"] = out["conv3x3_fp32_gflops"]
    return out


def step_rate(cfg: str, img: int, batch: int, iters: int, warmup: int, precision: str) -> dict:
    """Time ``iters`` training steps at ``img`` pixels on batches made beforehand (no data time)."""
    hyp = load(Hyp, resolve_path(DEFAULT_HYP))
    data = load_data_config("shapes")
    torch.manual_seed(0)
    model = Model(cfg, nc=data.nc).train().to(memory_format=torch.channels_last)
    loader, _ = build_dataloader(data.train, data.nc, img_size=img, batch_size=batch, stride=int(model.stride.max()),
                                 hyp=hyp, augment=True, shuffle=True, names=data.names)
    batches = iter(loader)
    batches = [next(batches) for _ in range(min(warmup + iters, 4))]  # cycled: the step does not depend on content
    loss_fn = YoloLoss(model.head, hyp, train_size=img)
    optimizer = build_optimizer(model, "SGD", hyp, hyp.weight_decay)
    ema = ModelEMA(model)
    accumulate = accumulation_steps(batch, hyp.nbs)
    totals = dict.fromkeys(PHASES, 0.0)
    for step in range(warmup + iters):
        b = batches[step % len(batches)]
        images = unit_images(b.images, CPU, autocast_dtype(precision) or torch.float32)  # as the trainer's input
        t0 = time.perf_counter()
        with autocast(CPU, precision):
            raw = model(images)
        t1 = time.perf_counter()
        loss, _ = loss_fn([r.float() for r in raw], b.targets, tuple(images.shape[-2:]))
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if (step + 1) % accumulate == 0:  # as the trainer: one optimizer step per nominal batch of 64
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if (step + 1) % accumulate == 0:
            ema.update(model)
        t5 = time.perf_counter()
        if step >= warmup:
            for name, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                totals[name] += dt
    seconds = sum(totals.values())
    return {"img_per_s": round(iters * batch / seconds, 2), "step_s": round(seconds / iters, 3),
            "split_pct": {k: round(100 * v / seconds, 1) for k, v in totals.items()}}


class _Premade:
    """The loader, but iterating batches made beforehand (its augmentation costs nothing)."""

    def __init__(self, loader: Any, batches: list[Any]) -> None:
        self.loader, self.made = loader, batches

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.made)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.made)


class _WaitTimed:
    """A loader whose iteration records the time spent waiting for each batch."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.wait_s = loader, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - t
            yield batch


def _subset_data(root: Path, n_images: int, folder: Path) -> Path:
    """A data-set YAML: the first ``n_images`` shapes train images, the shapes val split."""
    data = load_data_config("shapes")
    images = sorted(p for p in data.train[0].iterdir() if p.suffix == ".jpg")[:n_images]
    (folder / "train.txt").write_text("".join(f"{p}\n" for p in images))
    yaml_path = folder / "subset.yaml"
    yaml_path.write_text(f"path: {root}\ntrain: {folder / 'train.txt'}\nval: images/val\n"
                         f"names: {list(data.names)}\n")
    return yaml_path


def loop_rate(cfg: str, img: int, batch: int, n_images: int, precision: str, workers: int, repeats: int,
              step_rate_now: Callable[[], float]) -> dict:
    """img/s of train.py's epoch loop on ``n_images`` images, ``repeats`` times (epochs 1, 3, ... after a
    warm-up epoch 0), each followed by the same loop on its next epoch's batches made beforehand
    (``premade``: the loop without the loader's work, so loop / premade is what the loader's CPU costs
    the model) and by ``step_rate_now()`` (the step's img/s; the caller timed one before). The loop's
    rate is compared with the mean of the steps just before and after it; medians over the repeats."""
    from engine.train.loop import train_one_epoch
    from engine.train.setup import setup
    from utils.distributed import dist_info_from_env

    threads = torch.get_num_threads()  # train.py's own choice of threads must not leak into the next case
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _subset_data(load_data_config("shapes").root, n_images, folder)
        # the step's training: its hyper-parameters and SGD (a subset this small would get the short-run
        # recipe, AdamW stepping every batch), past warmup (which steps the optimizer more often)
        opt = TrainOptions(cfg=cfg, data=str(data), img_size=[img, img], batch_size=batch, epochs=1 + 2 * repeats,
                           workers=workers, project=str(folder / "runs"), noautoanchor=True, precision=precision,
                           hyp=DEFAULT_HYP, optimizer="SGD", close_mosaic=0, overrides=[*STEADY_STATE],
                           threads=torch.get_num_threads())  # as many as the step had
        run = setup(opt, dist_info_from_env(), CPU)
        train_one_epoch(run, 0)
        loader = run.train_loader
        images = len(loader.dataset)
        for k in range(repeats):
            run.train_loader = timed = _WaitTimed(loader)
            t = time.perf_counter()
            train_one_epoch(run, 1 + 2 * k)
            seconds = time.perf_counter() - t
            loader.set_epoch(2 + 2 * k)
            run.train_loader = _Premade(loader, list(loader))
            t = time.perf_counter()
            train_one_epoch(run, 2 + 2 * k)
            premade_seconds = time.perf_counter() - t
            runs.append({"img_per_s": round(images / seconds, 2), "premade_img_per_s": round(images / premade_seconds, 2),
                         "step_after_img_per_s": step_rate_now(),
                         "data_wait_pct": round(100 * timed.wait_s / seconds, 1)})
        if run.tb is not None:
            run.tb.close()
    used = torch.get_num_threads()
    torch.set_num_threads(threads)
    return {"runs": runs, "images": images, "workers": run.opt.workers, "threads": used}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _rate(result: dict) -> float:
    """A step's or loop's img/s: the median of the step's timings where it was timed more than once."""
    return result.get("median_img_per_s", result["img_per_s"])


def bench_size(args: argparse.Namespace, img: int, precisions: list[str]) -> dict:
    """Step (and loop) rates of every precision at ``img`` pixels."""
    forward_gflops = count_flops(Model(args.cfg, nc=5), img) / 1e9
    out: dict[str, Any] = {"img_size": img, "batch": args.batch, "forward_gflops_per_img": round(forward_gflops, 3)}
    for p in precisions:
        r = {"step": step_rate(args.cfg, img, args.batch, args.iters, args.warmup, p)}
        print(f"@{img} {p} step: {r['step']['img_per_s']} img/s, split % {r['step']['split_pct']}", flush=True)
        for w in args.workers if args.loop else []:
            r[f"loop_w{w}"] = loop = loop_rate(
                args.cfg, img, args.batch, args.loop_images, p, w, args.repeats,
                lambda p=p: step_rate(args.cfg, img, args.batch, args.iters, args.warmup, p)["img_per_s"])
            # the machine's speed drifts by more than the loader costs: each loop epoch is compared with
            # the steps timed just before and just after it, and with the premade epoch right after it
            timings = r["step"].setdefault("timings_img_per_s", [r["step"]["img_per_s"]])  # every step timing
            steps = timings[-1:] + [x["step_after_img_per_s"] for x in loop["runs"]]
            timings += steps[1:]
            r["step"]["median_img_per_s"] = _median(timings)  # the step's rate (and speed-up over fp32)
            for x, before, after in zip(loop["runs"], steps[:-1], steps[1:], strict=True):
                x["loop_over_step"] = round(x["img_per_s"] / ((before + after) / 2), 3)
                x["loop_over_premade"] = round(x["img_per_s"] / x["premade_img_per_s"], 3)
            for key in ("img_per_s", "premade_img_per_s", "data_wait_pct", "loop_over_step", "loop_over_premade"):
                loop[key] = _median([x[key] for x in loop["runs"]])
            print(f"@{img} {p} loop, {w} workers ({loop['threads']} threads), median of {args.repeats}: "
                  f"{loop['img_per_s']} img/s, loop/step {loop['loop_over_step']} "
                  f"({', '.join(str(x['loop_over_step']) for x in loop['runs'])}; steps {steps}), "
                  f"data wait {loop['data_wait_pct']}%; on premade batches {loop['premade_img_per_s']} img/s "
                  f"(loop / premade {loop['loop_over_premade']})", flush=True)
        for v in r.values():
            v["achieved_gflops"] = round(3 * forward_gflops * _rate(v), 1)
        out[p] = r
    for p in precisions if "fp32" in precisions else []:
        for kind, v in out[p].items():
            v["speedup_vs_fp32"] = round(_rate(v) / _rate(out["fp32"][kind]), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov7-tiny.yaml")
    p.add_argument("--img", nargs="+", type=int, default=[320])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=8, help="timed steps per size and precision (a multiple of the"
                   " accumulation steps, 64 / batch, so optimizer and EMA steps count in proportion)")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps per size and precision")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32", "auto"],
                   help="precisions to compare ('auto': bf16 on CPUs with native bf16, else fp32)")
    p.add_argument("--loop", action="store_true", help="also time train.py's epoch loop with its loader")
    p.add_argument("--loop-images", type=int, default=480, help="images per timed loop epoch")
    p.add_argument("--repeats", type=int, default=3, help="timed loop epochs, each with its premade epoch and a step "
                   "timing after it (medians reported)")
    p.add_argument("--workers", type=int, nargs="+", default=[-1],
                   help="loader workers of the loop, one loop per count (-1: train.py's choice)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    logging.basicConfig(level=logging.WARNING)
    precisions = list(dict.fromkeys(resolve_precision(x, CPU) for x in args.precision))
    result: dict[str, Any] = {"cfg": args.cfg, "threads": torch.get_num_threads(), "native_bf16": cpu_has_native_bf16(),
                              "precisions": precisions, "peak": peak_gflops(precisions), "sizes": []}
    print(f"{args.cfg}, {result['threads']} threads, native bf16: {result['native_bf16']}; peak GFLOP/s: "
          + ", ".join(f"{k.removesuffix('_gflops')} {v}" for k, v in result["peak"].items()), flush=True)
    for img in args.img:
        result["sizes"].append(bench_size(args, img, precisions))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
