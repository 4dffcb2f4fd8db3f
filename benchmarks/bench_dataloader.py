"""Training-pipeline throughput: images per second out of the loader (mosaic on) per worker count.

    python benchmarks/bench_dataloader.py [--data shapes] [--img 640] [--batch 16] [--batches 12]
                                          [--workers 0 2] [--model cfg/yolov7-tiny.yaml] [--json]

Each worker count gets a fresh loader (hyp.scratch.tiny augmentation when cfg/hyp has it); the
first batch (worker start-up) is not timed. With ``--model``, also times one training step of
that model (forward + backward of a summed output, batch ``--batch``, on CPU) to compare what
the trainer consumes with what one worker feeds. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import build_dataloader, load_data_config  # noqa: E402
from utils.config import Hyp, load  # noqa: E402


def loader_rate(sources: list[Path], nc: int, hyp: Hyp, img: int, batch: int, batches: int, workers: int) -> float:
    """Images per second of the augmenting training loader, start-up batch excluded."""
    loader, _ = build_dataloader(sources, nc, img_size=img, batch_size=batch, hyp=hyp, augment=True, shuffle=True, workers=workers)
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it).paths)
    return n / (time.perf_counter() - start)


def model_rate(cfg: str, nc: int, img: int, batch: int, steps: int = 3) -> float:
    """Images per second of forward + backward for model ``cfg`` (a proxy of one training step)."""
    from models.yolo import Model  # only with --model: keeps the loader timing free of model imports

    model = Model(cfg, nc=nc).train()
    x = torch.rand(batch, 3, img, img)
    sum(o.sum() for o in model(x)).backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        sum(o.sum() for o in model(x)).backward()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes")
    p.add_argument("--img", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=12, help="timed batches per worker count")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--model", default=None, help="also time a training step of this model config")
    p.add_argument("--json", action="store_true", help="(accepted; the JSON summary is always printed last)")
    args = p.parse_args()
    cfg = load_data_config(args.data)
    hyp_file = ROOT / "cfg" / "hyp" / "hyp.scratch.tiny.yaml"
    hyp = load(Hyp, hyp_file) if hyp_file.is_file() else Hyp()
    result = {"data": args.data, "img_size": args.img, "batch": args.batch, "threads": torch.get_num_threads()}
    for w in args.workers:
        result[f"images_per_s_workers_{w}"] = round(loader_rate(cfg.train, cfg.nc, hyp, args.img, args.batch,
                                                                args.batches, w), 1)
        print(f"workers={w}: {result[f'images_per_s_workers_{w}']} images/s", flush=True)
    if args.model:
        result["model_images_per_s"] = round(model_rate(args.model, cfg.nc, args.img, args.batch), 2)
        print(f"{args.model}: {result['model_images_per_s']} images/s (forward + backward)", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
