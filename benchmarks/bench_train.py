"""Training throughput of the real training step, next to this machine's measured fp32 peak.

    python benchmarks/bench_train.py [--cfg yolov7-tiny.yaml] [--img 320 640] [--batch 16] [--iters 3] [--json]

For each image size: the shapes set's augmented loader (as train.py builds it) and the real
step (forward, YoloLoss, backward, SGD step, EMA update), timed phase by phase after warm-up
iterations. Reports images/s, achieved GFLOP/s = 3 x forward GFLOPs x images/s (backward costs
about twice the forward), the time split (data, forward, loss, backward, optimizer, EMA), and
the measured peak of a large fp32 matmul and a 3x3 convolution in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import build_dataloader, load_data_config  # noqa: E402
from engine.train.ema import ModelEMA  # noqa: E402
from engine.train.optim import build_optimizer  # noqa: E402
from engine.train.options import DEFAULT_HYP  # noqa: E402
from models.loss import YoloLoss  # noqa: E402
from models.yolo import Model, count_flops  # noqa: E402
from utils.config import Hyp, load  # noqa: E402
from utils.paths import resolve_path  # noqa: E402

PHASES = ("data", "forward", "loss", "backward", "optimizer", "ema")


def _timed(fn, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_gflops() -> dict[str, float]:
    """Measured fp32 GFLOP/s: a 2048^3 matmul, and a 3x3 128->128 conv forward on 16 x 80x80 in
    both memory formats (the better one is the conv peak)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul = 2 * 2048**3 / _timed(lambda: a @ b, 5) / 1e9
    conv = nn.Conv2d(128, 128, 3, padding=1, bias=False).eval()
    x = torch.randn(16, 128, 80, 80)
    flops = 2 * 16 * 128 * 128 * 9 * 80 * 80
    with torch.no_grad():
        nchw = flops / _timed(lambda: conv(x), 3) / 1e9
        conv_cl, x_cl = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        nhwc = flops / _timed(lambda: conv_cl(x_cl), 3) / 1e9
    return {"matmul_gflops": round(matmul, 1), "conv3x3_gflops": round(max(nchw, nhwc), 1),
            "conv3x3_nchw_gflops": round(nchw, 1), "conv3x3_channels_last_gflops": round(nhwc, 1)}


def bench_size(cfg: str, img: int, batch: int, iters: int, warmup: int, channels_last: bool, workers: int) -> dict:
    """Time ``iters`` training steps at ``img`` pixels; returns img/s, GFLOP/s and the phase split."""
    hyp = load(Hyp, resolve_path(DEFAULT_HYP))
    data = load_data_config("shapes")
    model = Model(cfg, nc=data.nc).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    stride = int(model.stride.max())
    loader, _ = build_dataloader(data.train, data.nc, img_size=img, batch_size=batch, stride=stride, hyp=hyp,
                                 augment=True, shuffle=True, workers=workers)
    loss_fn = YoloLoss(model.head, hyp, train_size=img)
    optimizer = build_optimizer(model, "SGD", hyp, hyp.weight_decay)
    ema = ModelEMA(model)
    forward_gflops = count_flops(model, img) / 1e9
    totals = dict.fromkeys(PHASES, 0.0)
    batches = iter(loader)
    for step in range(warmup + iters):
        t0 = time.perf_counter()
        b = next(batches)
        images = b.images.float().div_(255)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        out = model(images)
        t2 = time.perf_counter()
        loss, _ = loss_fn(out, b.targets, tuple(images.shape[-2:]))
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        ema.update(model)
        t6 = time.perf_counter()
        if step >= warmup:
            for name, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
                totals[name] += dt
    seconds = sum(totals.values())
    img_s = iters * batch / seconds
    return {
        "img_size": img, "batch": batch, "img_per_s": round(img_s, 2),
        "forward_gflops_per_img": round(forward_gflops, 3),
        "achieved_gflops": round(3 * forward_gflops * img_s, 1),
        "split_pct": {k: round(100 * v / seconds, 1) for k, v in totals.items()},
        "step_s": round(seconds / iters, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov7-tiny.yaml")
    p.add_argument("--img", nargs="+", type=int, default=[320, 640])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=3, help="timed steps per size")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per size")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--contiguous", action="store_true", help="NCHW memory format (the trainer uses channels_last)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    channels_last = not args.contiguous
    result = {"cfg": args.cfg, "threads": torch.get_num_threads(), "channels_last": channels_last,
              "peak": peak_gflops(), "sizes": []}
    for img in args.img:
        r = bench_size(args.cfg, img, args.batch, args.iters, args.warmup, channels_last, args.workers)
        result["sizes"].append(r)
        print(f"{args.cfg} @{img}, batch {args.batch}: {r['img_per_s']} img/s, {r['achieved_gflops']} GFLOP/s "
              f"(peak: matmul {result['peak']['matmul_gflops']}, conv {result['peak']['conv3x3_gflops']}); "
              f"split % {r['split_pct']}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
