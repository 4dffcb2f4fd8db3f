"""Cost of the loss (assignment + terms) next to the model it trains.

    python benchmarks/bench_loss.py [--cfg yolov7-tiny.yaml] [--batch 16] [--img 640]
                                    [--targets 10 300] [--repeats 3] [--threads N] [--json]

For each targets-per-image count and each assignment (plain YOLOv5 rule, OTA): forward +
backward time (best of ``--repeats``, after a warm-up) of YoloLoss on head outputs of the model's shapes (random logits, gradients
stopping at the outputs), the number of positives, and the peak memory the loss adds (CUDA:
max_memory_allocated; CPU: the peak resident set of a fresh child process above its level
before the loss). Then the model's own forward + backward time on the same batch, once, and
the ratio loss / model.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.loss import YoloLoss  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.config import Hyp  # noqa: E402


def make_targets(batch: int, per_image: int, nc: int, seed: int = 0) -> torch.Tensor:
    """[batch * per_image, 6] random targets; smaller boxes when images are crowded."""
    g = torch.Generator().manual_seed(seed)
    n = batch * per_image
    t = torch.rand(n, 6, generator=g)
    t[:, 0] = torch.arange(n) // per_image if per_image else 0
    t[:, 1] = torch.randint(0, nc, (n,), generator=g)
    largest = 0.3 if per_image <= 30 else 0.1
    t[:, 4:] = t[:, 4:] * (largest - 0.01) + 0.01
    return t


def raw_like(model: Model, batch: int, img: int, device: torch.device) -> list[torch.Tensor]:
    """Random training-mode outputs with the model's shapes, as leaves that take gradients."""
    head = model.head
    shapes = [(batch, head.na, img // int(s), img // int(s), head.nc + 5) for s in head.stride.tolist()]
    if head.aux:
        shapes = shapes * 2
    return [torch.randn(s, device=device).requires_grad_() for s in shapes]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc), MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def loss_case(cfg: str, batch: int, img: int, per_image: int, ota: bool, repeats: int, device: torch.device) -> dict:
    """Time and memory of YoloLoss forward + backward for one configuration."""
    torch.manual_seed(0)
    model = Model(cfg).to(device)
    loss_fn = YoloLoss(model.head, Hyp(), train_size=img, assigner="ota" if ota else "yolov5")
    raw = raw_like(model, batch, img, device)
    targets = make_targets(batch, per_image, model.nc).to(device)

    def step() -> None:
        loss, _ = loss_fn(raw, targets, (img, img))
        loss.backward()
        for x in raw:
            x.grad = None

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_mb()
    step()  # warm-up, and the memory measurement
    _sync(device)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    )
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    positives = len(loss_fn.assign(raw, targets, (img, img))[0].flat)
    return {
        "targets_per_image": per_image,
        "assign": "ota" if ota else "plain",
        "loss_fwd_bwd_s": round(min(times), 4),
        "peak_mem_mb": round(peak, 1),
        "positives": positives,
    }


def model_time(cfg: str, batch: int, img: int, device: torch.device) -> float:
    """Wall time of one training-mode forward + backward of the model (after a batch-1 warm-up)."""
    model = Model(cfg).to(device).train()
    model(torch.rand(1, 3, img, img, device=device))[0].sum().backward()
    x = torch.rand(batch, 3, img, img, device=device)
    _sync(device)
    t = time.perf_counter()
    sum(o.float().mean() for o in model(x)).backward()
    _sync(device)
    return time.perf_counter() - t


def run_child(args: argparse.Namespace, per_image: int, ota: bool) -> dict:
    """One loss case in a fresh process, so its peak resident set is its own."""
    cmd = [sys.executable, __file__, "--child", f"{per_image}:{int(ota)}", "--cfg", args.cfg,
           "--batch", str(args.batch), "--img", str(args.img), "--repeats", str(args.repeats),
           "--device", args.device, "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg", default="yolov7-tiny.yaml")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--targets", type=int, nargs="+", default=[10, 300])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        per_image, ota = (int(v) for v in args.child.split(":"))
        print(json.dumps(loss_case(args.cfg, args.batch, args.img, per_image, bool(ota), args.repeats, device)))
        return
    cases = [run_child(args, n, ota) for n in args.targets for ota in (False, True)]
    model_s = model_time(args.cfg, args.batch, args.img, device)
    for c in cases:
        c["ratio_to_model"] = round(c["loss_fwd_bwd_s"] / model_s, 4)
    result = {"cfg": args.cfg, "device": str(device), "threads": torch.get_num_threads(), "batch": args.batch,
              "img": args.img, "model_fwd_bwd_s": round(model_s, 3), "cases": cases}
    if not args.json:
        print(f"{args.cfg} batch {args.batch} @ {args.img} on {device}: model forward+backward {model_s:.2f} s")
        for c in cases:
            print(f"  {c['targets_per_image']:4d} targets/img {c['assign']:5s}: loss {c['loss_fwd_bwd_s'] * 1e3:8.1f} ms "
                  f"({100 * c['ratio_to_model']:.1f}% of model), +{c['peak_mem_mb']:.0f} MB, {c['positives']} positives")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
