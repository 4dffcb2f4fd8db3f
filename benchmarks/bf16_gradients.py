"""How far bf16 autocast moves the training gradient, next to how far the batch itself moves it.

    python benchmarks/bf16_gradients.py [--weights runs/train/exp/weights/last.pt] [--batches 4] [--json]

On the shapes set's augmented training batches, with the weights of ``--weights`` (a checkpoint's
``train_model``, or its EMA ``model`` in a finished run's file; default: a freshly initialised
yolov7-tiny), computes the loss and
the full gradient in fp32 and under ``torch.autocast("cpu", torch.bfloat16)`` (the trainer's bf16:
forward only, loss in fp32) and reports, per batch:

- ``loss_rel_diff``: |loss_bf16 - loss_fp32| / loss_fp32;
- ``grad_cos``: cosine similarity of the bf16 and fp32 gradients (all parameters as one vector),
  and ``grad_rel_err``: |g_bf16 - g_fp32| / |g_fp32|;
- ``worst_layer``: the parameter with the largest relative error, and that error;

and the noise floor of SGD itself: ``batch_cos``, the cosine between the fp32 gradients of two
different batches. When bf16's error is far below the batch-to-batch difference, the optimizer
cannot tell the two precisions apart beyond what another data order would do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import build_dataloader, load_data_config  # noqa: E402
from engine.train.options import DEFAULT_HYP  # noqa: E402
from models.checkpoint_io import model_from_checkpoint, read_checkpoint  # noqa: E402
from models.loss import YoloLoss  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.config import Hyp, load  # noqa: E402
from utils.paths import resolve_path  # noqa: E402
from utils.precision import autocast  # noqa: E402

CPU = torch.device("cpu")


def gradient(model: Model, loss_fn: YoloLoss, images: torch.Tensor, targets: torch.Tensor,
             precision: str) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, {parameter name: gradient}) of one batch, the forward under ``precision``."""
    model.zero_grad(set_to_none=True)
    with autocast(CPU, precision):
        raw = model(images)
    loss, _ = loss_fn([r.float() for r in raw], targets, tuple(images.shape[-2:]))
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()]).double()


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict:
    """Cosine and relative error of gradient ``a`` against the reference ``b``, and the worst layer."""
    va, vb = flat(a), flat(b)
    worst = max(b, key=lambda n: float((a[n] - b[n]).norm() / b[n].norm().clamp_min(1e-30)))
    return {"grad_cos": round(float(torch.nn.functional.cosine_similarity(va, vb, 0)), 6),
            "grad_rel_err": round(float((va - vb).norm() / vb.norm()), 6),
            "worst_layer": worst,
            "worst_layer_rel_err": round(float((a[worst] - b[worst]).norm() / b[worst].norm().clamp_min(1e-30)), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="", help="checkpoint to take the weights from: its train_model, else its EMA model (default: fresh init)")
    p.add_argument("--img", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--json", action="store_true", help="print one JSON object last")
    args = p.parse_args()
    torch.manual_seed(0)
    data = load_data_config("shapes")
    if args.weights:
        ckpt = read_checkpoint(args.weights)  # a finished run's files keep only the EMA weights
        model = model_from_checkpoint(ckpt, "train_model" if "train_model" in ckpt else "model", args.weights)
    else:
        model = Model("cfg/yolov7-tiny.yaml", nc=data.nc)
    model = model.train().to(memory_format=torch.channels_last)
    hyp = load(Hyp, resolve_path(DEFAULT_HYP))
    loader, _ = build_dataloader(data.train, data.nc, img_size=args.img, batch_size=args.batch,
                                 stride=int(model.stride.max()), hyp=hyp, augment=True, shuffle=True,
                                 names=data.names)
    loss_fn = YoloLoss(model.head, hyp, train_size=args.img)
    rows, previous = [], None
    # BatchNorm running statistics move in train mode; keep them as loaded for every pass
    buffers = {k: v.clone() for k, v in model.state_dict().items() if not v.is_floating_point() or "running" in k}
    for i, batch in zip(range(args.batches), loader, strict=False):
        images = batch.images.float().div_(255).contiguous(memory_format=torch.channels_last)
        model.load_state_dict(buffers, strict=False)
        loss32, g32 = gradient(model, loss_fn, images, batch.targets, "fp32")
        model.load_state_dict(buffers, strict=False)
        loss16, g16 = gradient(model, loss_fn, images, batch.targets, "bf16")
        row = {"batch": i, "loss_fp32": round(loss32, 5), "loss_rel_diff": round(abs(loss16 - loss32) / loss32, 6),
               **compare(g16, g32)}
        if previous is not None:
            row["batch_cos"] = round(float(torch.nn.functional.cosine_similarity(flat(g32), flat(previous), 0)), 4)
        previous = g32
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"weights": args.weights or "fresh init", "img": args.img, "batch": args.batch, "rows": rows,
               "mean_grad_cos": round(sum(r["grad_cos"] for r in rows) / len(rows), 6),
               "mean_batch_cos": round(sum(r["batch_cos"] for r in rows[1:]) / max(len(rows) - 1, 1), 4)}
    print(f"bf16 vs fp32 gradient cosine {summary['mean_grad_cos']} (same batch); fp32 between batches "
          f"{summary['mean_batch_cos']}")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
