"""torch.compile against eager for the training step, in one process: compile time, step time,
and whether the losses change.

    python benchmarks/bench_compile.py [--cfg yolov7-tiny.yaml] [--img 320] [--batch 16]
                                       [--precision auto] [--check-steps 3] [--rounds 8] [--json]

Two copies of one model (same weights) train side by side on the same batches (the shapes
set's augmented loader, made beforehand), each step forward under the trainer's autocast,
YoloLoss in fp32, backward and an SGD step: the eager copy, and the copy whose forward
``nn.Module.compile`` compiled (as train.py --compile does). The first ``--check-steps`` steps
compare their losses (the compiled copy's first step includes compiling: reported apart as
``compile_s``, its time less the eager step's). Then ``--rounds`` rounds time one step of each,
the order alternating every round (eager first, then compiled first), so drift of a shared
machine falls on both alike; medians are reported (of the step times, and of each round's
eager / compiled ratio), with the load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.cpu import shorten_openmp_spin  # noqa: E402

if __name__ == "__main__":  # as train.py does, before torch loads
    shorten_openmp_spin()

import torch  # noqa: E402

from data import build_dataloader, load_data_config, unit_images  # noqa: E402
from engine.train.optim import build_optimizer  # noqa: E402
from engine.train.options import DEFAULT_HYP  # noqa: E402
from models.loss import YoloLoss  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.config import Hyp, load  # noqa: E402
from utils.device import compile_module  # noqa: E402
from utils.paths import resolve_path  # noqa: E402
from utils.precision import PRECISIONS, autocast, autocast_dtype, resolve_precision  # noqa: E402

CPU = torch.device("cpu")


class _Trainee:
    """One model copy with its loss and optimizer; ``step(batch)`` -> (loss, seconds)."""

    def __init__(self, model: Model, hyp: Hyp, img: int, precision: str) -> None:
        self.model, self.precision = model, precision
        self.loss_fn = YoloLoss(model.head, hyp, train_size=img)
        self.optimizer = build_optimizer(model, "SGD", hyp, hyp.weight_decay)

    def step(self, batch) -> tuple[float, float]:
        images = unit_images(batch.images, CPU, autocast_dtype(self.precision) or torch.float32)
        t = time.perf_counter()
        with autocast(CPU, self.precision):
            raw = self.model(images)
        loss, _ = self.loss_fn([r.float() for r in raw], batch.targets, tuple(images.shape[-2:]))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov7-tiny.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="the trainer's --precision")
    p.add_argument("--check-steps", type=int, default=3, help="first steps whose losses are compared")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (one eager and one compiled step each)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args()
    precision = resolve_precision(args.precision, CPU)
    hyp = load(Hyp, resolve_path(DEFAULT_HYP))
    data = load_data_config("shapes")
    torch.manual_seed(0)
    model = Model(args.cfg, nc=data.nc).train().to(memory_format=torch.channels_last)
    loader, _ = build_dataloader(data.train, data.nc, img_size=args.img, batch_size=args.batch,
                                 stride=int(model.stride.max()), hyp=hyp, augment=True, shuffle=True, names=data.names)
    it = iter(loader)
    batches = [next(it) for _ in range(4)]
    eager = _Trainee(model, hyp, args.img, precision)
    compiled = _Trainee(compile_module(copy.deepcopy(model), CPU), hyp, args.img, precision)
    load_before = os.getloadavg()
    losses, compile_s = [], 0.0
    for k in range(args.check_steps):
        b = batches[k % len(batches)]
        (le, te), (lc, tc) = eager.step(b), compiled.step(b)
        losses.append((le, lc))
        if k == 0:
            compile_s = tc - te
        print(f"step {k}: loss eager {le:.6f} compiled {lc:.6f} ({tc:.1f} s compiled, {te:.2f} s eager)", flush=True)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        b = batches[r % len(batches)]
        order = (("eager", eager), ("compiled", compiled)) if r % 2 == 0 else (("compiled", compiled), ("eager", eager))
        for name, trainee in order:
            times[name].append(trainee.step(b)[1])
    load_after = os.getloadavg()
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    rel = max(abs(le - lc) / max(abs(le), 1e-12) for le, lc in losses)
    result = {
        "cfg": args.cfg, "img": args.img, "batch": args.batch, "precision": precision,
        "threads": torch.get_num_threads(), "cores": os.cpu_count(),
        "load_avg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "compile_s": round(compile_s, 1),
        "eager_step_s": round(eager_s, 3), "compiled_step_s": round(compiled_s, 3),
        "eager_img_per_s": round(args.batch / eager_s, 2), "compiled_img_per_s": round(args.batch / compiled_s, 2),
        "speedup": round(eager_s / compiled_s, 3),
        "paired_speedup": round(statistics.median(e / c for e, c in zip(times["eager"], times["compiled"],
                                                                            strict=True)), 3),
        "eager_steps_s": [round(t, 3) for t in times["eager"]],
        "compiled_steps_s": [round(t, 3) for t in times["compiled"]],
        "first_losses_eager_compiled": [[round(a, 6), round(b, 6)] for a, b in losses],
        "max_rel_loss_diff": round(rel, 6),
    }
    print(f"{args.cfg} @{args.img} batch {args.batch} {precision}, {result['threads']} threads, load "
          f"{result['load_avg_1m_before_after']}: compile {result['compile_s']} s; step median eager "
          f"{eager_s:.3f} s, compiled {compiled_s:.3f} s (x{result['speedup']}; median of the rounds' ratios x"
          f"{result['paired_speedup']}); first losses differ by "
          f"{rel:.2e} relative", flush=True)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
