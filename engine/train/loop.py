"""The training loop: one epoch at a time, validation of the EMA model, checkpoints, resume, DDP.

``train(opt)`` is the whole job behind train.py. Pieces are built in ``engine/train/setup.py``
(model, data, optimizer, ...); this module runs them. Exact resume rests on three things:
every epoch reseeds all RNGs from (seed, epoch, rank), so its sampler order and augmentations do
not depend on what ran before (--image-weights adds the per-class mAPs of the last validation,
which the checkpoint holds as ``class_maps``); the learning rate is a function of (epoch, iteration) only;
and a checkpoint holds the raw and EMA weights, the optimizer, scaler and all rows written so far.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from data import Batch, DetectionLoader, unit_images
from engine.train.loaders import set_dataset_mosaic, set_image_weights
from engine.train.log import epoch_row, progress_header, progress_line, write_results_csv
from engine.train.optim import apply_warmup, warmup_iterations
from engine.train.options import TrainOptions
from engine.train.plots import plot_results, plot_train_batch
from engine.train.setup import Run, setup
from engine.train.speed import EpochTimer, append_timing_csv
from engine.train.validation import EpochValidation, evaluate_for_training
from models.loss import LossItems
from utils.checkpoint import (
    CHECKPOINT_VERSION,
    rng_state,
    save_checkpoint,
    state_dict_is_finite,
    strip_checkpoint,
)
from utils.device import memory_string, select_device
from utils.distributed import (
    any_flag,
    broadcast_flag,
    destroy_process_group,
    dist_info_from_env,
    init_process_group,
    unwrap,
)
from utils.errors import UserError
from utils.precision import autocast, autocast_dtype
from utils.rounding import round_up
from utils.seed import seed_everything

LOG = logging.getLogger(__name__)
MAX_BAD_STEPS = 5  # consecutive non-finite losses that stop the run
N_BATCH_PLOTS = 3  # train_batch0..2.jpg
# on_epoch_end(epoch, results row) -> True to stop after this epoch (hyper-parameter evolution prunes with it)
EpochCallback = Callable[[int, dict[str, float]], bool]


class NonFiniteLossError(UserError, RuntimeError):
    """Training diverged: the loss was NaN/inf for MAX_BAD_STEPS batches in a row."""


def train(opt: TrainOptions, *, on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Train as ``opt`` says; return the summary (best and final metrics, time, run folder).

    Under torchrun every process calls this; rank 0 logs, evaluates and saves. ``on_epoch_end``:
    see :func:`fit`.
    """
    opt.check()
    t0 = time.time()
    info = dist_info_from_env()
    device = select_device(opt.device, info.local_rank)
    init_process_group(info, device)
    threads = torch.get_num_threads()
    try:
        run = setup(opt, info, device)
        torch.set_num_threads(run.opt.threads)  # the run's own (setup chose them); the caller's come back
        return fit(run, t0, on_epoch_end=on_epoch_end)
    finally:
        torch.set_num_threads(threads)
        destroy_process_group()


def fit(run: Run, t0: float | None = None, *, on_epoch_end: EpochCallback | None = None) -> dict[str, Any]:
    """Run the epochs from ``run.start_epoch``; save, early-stop; strip the final checkpoints.

    ``t0``: when the run started (for the reported time; default now). ``on_epoch_end(epoch, row)``
    is called on rank 0 after each epoch's results row; returning True stops the run there like
    --patience does (the epoch is saved and the run finishes normally).
    """
    opt, t0 = run.opt, time.time() if t0 is None else t0
    epoch = run.start_epoch - 1
    for epoch in range(run.start_epoch, opt.epochs):
        timer = EpochTimer(run.forward_gflops)
        train_losses = train_one_epoch(run, epoch, timer)
        timing = timer.row(epoch, run.precision, threads=opt.threads, workers=opt.workers,
                           processes=run.info.world_size)
        lrs = [g["lr"] for g in run.optimizer.param_groups]
        run.scheduler.step()
        why_stop = ""  # rank 0 decides; the others learn it through broadcast_flag
        if run.info.is_main:
            final = epoch == opt.epochs - 1
            if not opt.notest or final:
                validation = validate(run, plots=final and not opt.noplots)
                run.class_maps = validation.class_maps
            else:
                validation = EpochValidation.skipped(run.class_maps)
            row = epoch_row(epoch, train_losses, validation.metrics, validation.losses, lrs)
            run.rows.append(row)
            # best.pt: the first epoch of the best fitness, and at least the first saved epoch (a run whose
            # fitness stays 0, or a --nosave run, still gets one; YOLOv7 saves on fitness == best)
            improved = row["fitness"] > run.best_fitness or not (run.save_dir / "weights" / "best.pt").is_file()
            run.best_fitness = max(run.best_fitness, row["fitness"])
            if patience_exhausted(run.rows, epoch, patience=opt.patience, notest=opt.notest):
                why_stop = f"no fitness gain in the last {opt.patience} epochs"
            if on_epoch_end is not None and on_epoch_end(epoch, dict(row)) and not final:
                why_stop = "the caller's on_epoch_end asked for it"
            stop = bool(why_stop)
            if not opt.nosave or final or stop:  # --nosave still keeps the run's last epoch
                save_epoch(run, epoch, improved)
            write_results_csv(run.rows, run.save_dir / "results.csv")
            append_timing_csv(timing, run.save_dir / "timing.csv")
            if run.tb is not None:
                run.tb.epoch(row)
                run.tb.speed(timing)
            run.trackers.epoch(row)
        if broadcast_flag(bool(why_stop), run.device):
            LOG.info("early stop after epoch %d: %s", epoch, why_stop or "rank 0 said so")
            break
    return finish(run, epoch, time.time() - t0)


def patience_exhausted(rows: list[dict[str, float]], epoch: int, *, patience: int, notest: bool) -> bool:
    """True when the best fitness in ``rows`` (results rows so far) is more than ``patience`` epochs
    old at ``epoch``. Never with --notest: its epochs are not validated (fitness 0), so no epoch can
    show a gain."""
    if not rows or notest:
        return False
    best_epoch = max(rows, key=lambda r: r["fitness"])["epoch"]
    return epoch - best_epoch >= patience


def validate(run: Run, plots: bool = False) -> EpochValidation:
    """Evaluate the EMA model on the val split (rank 0): metrics, validation losses and per-class
    mAP@.5:.95 (for --image-weights)."""
    return evaluate_for_training(run.ema.module, run.val_loader, run.val_loss_fn, single_cls=run.opt.single_cls,
                                 names=run.names, save_dir=run.save_dir, tb=run.tb, step=len(run.rows), plots=plots)


def set_sampling(loader: DetectionLoader, epoch: int, opt: TrainOptions, nc: int, class_maps: list[float]) -> None:
    """This epoch's data: mosaic off for the last --close-mosaic epochs (also when resuming past
    them) and, with --image-weights, the image sampling weights from the last validation."""
    set_dataset_mosaic(loader, epoch, opt.epochs, opt.close_mosaic)
    if opt.image_weights:
        set_image_weights(loader, nc, class_maps)


def prepare_images(
    images: torch.Tensor, *, multi_scale: bool, base_size: int, stride: int, channels_last: bool
) -> torch.Tensor:
    """Multi-scale resize (--multi-scale: 0.5x..1.5x ``base_size``, ``stride`` multiples) and memory format.

    images: float [B, 3, H, W] in 0..1. Targets are normalised, so they need no change.
    """
    if multi_scale:
        size = random.randrange(int(base_size * 0.5), int(base_size * 1.5) + stride) // stride * stride
        scale = size / max(images.shape[2:])
        if scale != 1:
            new = [round_up(x * scale, stride) for x in images.shape[2:]]
            images = F.interpolate(images, size=new, mode="bilinear", align_corners=False)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def train_one_epoch(run: Run, epoch: int, timer: EpochTimer | None = None) -> LossItems:
    """One pass over the training set; returns the mean loss terms per batch.

    ``timer`` (default: a new one) counts the epoch's images, time and data wait.
    """
    opt, hyp = run.opt, run.hyp
    seed_everything(opt.seed + 10_000 * epoch + run.info.rank)
    set_sampling(run.train_loader, epoch, opt, run.nc, run.class_maps)
    run.train_loader.set_epoch(epoch)  # shuffle order and augmentation stream of this epoch
    run.model.train()
    batches_per_epoch = len(run.train_loader)
    n_warmup = warmup_iterations(hyp, batches_per_epoch)
    mean_losses = torch.zeros(len(LossItems._fields), device=run.device)  # LossItems stacked
    n_good = 0
    run.optimizer.zero_grad(set_to_none=True)
    timer = timer or EpochTimer(run.forward_gflops)
    batches = enumerate(timer.batches(run.train_loader))
    if run.info.is_main:
        LOG.info(progress_header())
        batches = tqdm(batches, total=batches_per_epoch, bar_format="{l_bar}{bar:10}{r_bar}")
    for i, batch in batches:
        iteration = i + batches_per_epoch * epoch  # since the start of training: warmup and accumulation key on it
        accumulate = run.accumulate
        if n_warmup and iteration <= n_warmup:
            accumulate = apply_warmup(run.optimizer, iteration, n_warmup, run.lr_factor(epoch), hyp, run.batch_size)
        last = i == batches_per_epoch - 1
        items = train_step(run, batch, step=(iteration + 1) % accumulate == 0 or last)
        timer.images += len(batch.paths)
        if items is None:
            run.bad_steps_in_row += 1  # counted across epochs: a 1-batch epoch must not reset it
            warnings.warn(f"epoch {epoch} batch {i}: non-finite loss, step skipped", stacklevel=1)
            if run.bad_steps_in_row >= MAX_BAD_STEPS:
                raise NonFiniteLossError(
                    f"loss was NaN/inf for {run.bad_steps_in_row} batches in a row (epoch {epoch}, batch {i}): "
                    "training diverged; lower lr0 or check the labels. The last saved checkpoint is intact."
                )
            continue
        run.bad_steps_in_row = 0
        mean_losses = (mean_losses * n_good + torch.stack(items)) / (n_good + 1)
        n_good += 1
        if run.info.is_main:
            batches.set_description(progress_line(
                epoch, opt.epochs, memory_string(run.device), LossItems(*mean_losses.tolist()), len(batch.targets),
                batch.images.shape[-1],
                timer.img_per_s() * run.info.world_size,
            ))
            if epoch == 0 and i < N_BATCH_PLOTS and not opt.noplots:
                plot_train_batch(batch, i, save_dir=run.save_dir, names=run.names, tb=run.tb)
    return LossItems(*mean_losses.cpu())


def train_step(run: Run, batch: Batch, step: bool) -> LossItems | None:
    """Forward, loss and backward of one batch; optimizer step and EMA update when ``step``.

    Returns the detached loss terms (LossItems), or None when the loss is not
    finite on any process (then nothing is backpropagated, so every DDP process skips alike).
    """
    model = run.model
    # in the forward's precision already (autocast would round the first layer's input to it; multi-scale
    # resizes in fp32)
    dtype = torch.float32 if run.opt.multi_scale else autocast_dtype(run.precision) or torch.float32
    images = prepare_images(unit_images(batch.images, run.device, dtype),
                            multi_scale=run.opt.multi_scale, base_size=run.opt.img_size[0],
                            stride=int(unwrap(model).stride.max()), channels_last=run.channels_last)
    with autocast(run.device, run.precision):  # the forward only: the loss and OTA cost run in fp32
        raw = model(images)
    loss, items = run.loss_fn([r.float() for r in raw], batch.targets.to(run.device), tuple(images.shape[-2:]))
    if run.info.world_size > 1:
        loss = loss * run.info.world_size  # DDP averages gradients; YOLOv7's loss is a sum over images
    if any_flag(not torch.isfinite(loss).item(), run.device):
        return None
    skip_sync = not step and isinstance(model, DistributedDataParallel)  # accumulate locally, reduce once
    with model.no_sync() if skip_sync else contextlib.nullcontext():
        run.scaler.scale(loss).backward()
    if step:
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.update(unwrap(model))
    return items


def make_checkpoint(run: Run, epoch: int) -> dict[str, Any]:
    """The checkpoint dict after ``epoch`` (schema: docs/design.md, "Checkpoint contract")."""
    bare = unwrap(run.model)
    return {
        "model": {k: v.detach().clone() for k, v in run.ema.module.state_dict().items()},
        "train_model": {k: v.detach().clone() for k, v in bare.state_dict().items()},
        "model_cfg": bare.yaml,
        "names": list(run.names),
        "nc": run.nc,
        "hyp": dataclasses.asdict(run.hyp),
        "opt": run.opt.to_dict(),
        "precision": run.precision,  # of the training forward passes; the weights are fp32
        "epoch": epoch,
        "best_fitness": run.best_fitness,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.state_dict(),
        "rng": rng_state(),
        "metrics": list(run.rows),
        "class_maps": list(run.class_maps),
        "version": CHECKPOINT_VERSION,
    }


def save_epoch(run: Run, epoch: int, improved: bool) -> None:
    """Write best.pt (if improved), epoch_NNN.pt (every --save-period, YOLOv7's name), then last.pt.

    last.pt goes last: a run killed in between resumes from the previous epoch and rewrites
    the others identically. Non-finite weights are never written.
    """
    ckpt = make_checkpoint(run, epoch)
    if not (state_dict_is_finite(ckpt["model"]) and state_dict_is_finite(ckpt["train_model"])):
        raise NonFiniteLossError(f"epoch {epoch}: the weights are NaN/inf; not saving (last.pt keeps epoch {epoch - 1})")
    weights = run.save_dir / "weights"
    if improved:
        save_checkpoint(ckpt, weights / "best.pt")
    if run.opt.save_period > 0 and (epoch + 1) % run.opt.save_period == 0:
        save_checkpoint(ckpt, weights / f"epoch_{epoch:03d}.pt")
    save_checkpoint(ckpt, weights / "last.pt")


def finish(run: Run, last_epoch: int, seconds: float) -> dict[str, Any]:
    """Strip the final checkpoints, plot results, close logs; return the run summary (rank 0)."""
    if not run.info.is_main:
        return {}
    weights = run.save_dir / "weights"
    for name in ("last.pt", "best.pt"):
        if (weights / name).is_file():
            strip_checkpoint(weights / name)
    if not run.opt.noplots:
        plot_results(run.save_dir / "results.csv")
    if run.tb is not None:
        run.tb.close()
    run.trackers.finish()
    best = max(run.rows, key=lambda r: r["fitness"]) if run.rows else {}
    final = run.rows[-1] if run.rows else {}
    summary = {
        "save_dir": str(run.save_dir),
        "epochs": last_epoch + 1,
        "seconds": round(seconds, 1),
        "best_epoch": int(best.get("epoch", -1)),
        "mAP50": best.get("metrics/mAP_0.5", 0.0),
        "mAP50_95": best.get("metrics/mAP_0.5:0.95", 0.0),
        "fitness": best.get("fitness", 0.0),
        "final_mAP50": final.get("metrics/mAP_0.5", 0.0),
        "final_mAP50_95": final.get("metrics/mAP_0.5:0.95", 0.0),
        "weights": str(weights / ("best.pt" if (weights / "best.pt").is_file() else "last.pt")),
    }
    LOG.info("%d epochs in %.1f min; best epoch %d: mAP@.5 %.3f, mAP@.5:.95 %.3f; results in %s",
             summary["epochs"] - run.start_epoch, seconds / 60, summary["best_epoch"], summary["mAP50"],
             summary["mAP50_95"], Path(run.save_dir))
    return summary
