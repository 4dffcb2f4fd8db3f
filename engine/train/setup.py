"""Everything a training run is built from, gathered in ``Run``; ``setup`` builds it from options.

Kept apart from the loop (engine/train/loop.py) so that the loop reads as the recipe and this
file as the wiring: options -> model, data, loss, optimizer, EMA, logs, resume state.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from data import DetectionLoader
from data.loader import IDLE_PRIORITY, consumer_options
from engine.train.ema import ModelEMA
from engine.train.loaders import autoanchor_for_training, build_train_loader, build_val_loader, load_data
from engine.train.log import TensorBoardLog, write_results_csv
from engine.train.optim import accumulation_steps, build_optimizer, lr_lambda, scaled_weight_decay
from engine.train.options import (
    DEFAULT_CFG,
    TrainOptions,
    check_assigner,
    find_resume_checkpoint,
    load_hyp,
    resume_run_dir,
)
from engine.train.plots import plot_labels
from engine.train.recipe import apply_recipe
from engine.train.trackers import Trackers, run_params, wanted
from engine.train.validation import validation_loss
from models.checkpoint_io import model_from_checkpoint, read_checkpoint, transfer_weights
from models.loss import YoloLoss
from models.yolo import Model, count_flops
from utils.checkpoint import CheckpointError, load_checkpoint, set_rng_state
from utils.config import ConfigError, Hyp, from_mapping
from utils.cpu import split_cores
from utils.device import compile_module
from utils.distributed import DistInfo, barrier
from utils.paths import increment_path, resolve_path
from utils.precision import precision_reason, resolve_precision
from utils.rounding import round_up
from utils.seed import seed_everything

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """The state of one training process (rank): plain data that ``setup`` fills and the loop
    (engine/train/loop.py) reads and updates; nothing else writes into it. ``save_dir``, ``ema``,
    ``val_loader``, ``val_loss_fn`` and ``tb`` exist on rank 0 only (None elsewhere)."""

    opt: TrainOptions
    hyp: Hyp
    info: DistInfo
    device: torch.device
    save_dir: Path | None
    model: nn.Module  # the training model, DDP-wrapped when distributed
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    lr_factor: Callable[[float], float]  # the learning-rate multiplier of an epoch (the scheduler's lambda)
    scaler: torch.amp.GradScaler
    precision: str  # resolved: 'fp32', 'bf16' or 'fp16' (utils.precision)
    loss_fn: YoloLoss
    train_loader: DetectionLoader
    val_loader: DetectionLoader | None
    nc: int
    names: list[str]
    batch_size: int  # per process
    accumulate: int
    start_epoch: int = 0
    best_fitness: float = 0.0
    rows: list[dict[str, float]] = dataclasses.field(default_factory=list)
    tb: TensorBoardLog | None = None
    trackers: Trackers = dataclasses.field(default_factory=Trackers)  # MLflow / W&B, when asked for (rank 0)
    channels_last: bool = False
    val_loss_fn: YoloLoss | None = None  # plain (non-OTA) assignment, on the EMA model (rank 0)
    class_maps: list[float] = dataclasses.field(default_factory=list)  # per-class mAP@.5:.95, last validation
    bad_steps_in_row: int = 0  # consecutive non-finite losses, across epochs
    forward_gflops: float = 0.0  # per training image, for the achieved GFLOP/s in timing.csv


def setup(opt: TrainOptions, info: DistInfo, device: torch.device) -> Run:
    """Build every piece of a run from ``opt`` (or from the checkpoint ``--resume`` names)."""
    ckpt = None
    if opt.resume:
        path = find_resume_checkpoint(opt)
        ckpt = load_checkpoint(path)
        if ckpt["epoch"] < 0 or "optimizer" not in ckpt:
            raise ConfigError(f"--resume {path}: this training has finished (the checkpoint is stripped)")
        save_dir = resume_run_dir(path, ckpt["opt"])  # only the run the checkpoint belongs to
        opt = dataclasses.replace(TrainOptions.from_dict(ckpt["opt"], str(path)), resume=str(path), device=opt.device)
    else:
        save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    if info.world_size > 1 and opt.batch_size % info.world_size:
        raise ConfigError(f"--batch-size {opt.batch_size} is not a multiple of the {info.world_size} processes")
    if info.world_size > 1 and opt.image_weights:
        raise ConfigError("--image-weights is not supported with DDP (several torchrun processes), as in YOLOv7")
    opt = _resolve_machine_options(opt, device, info.world_size)
    batch_size = opt.batch_size // info.world_size
    seed_everything(opt.seed + info.rank, opt.deterministic)
    data_cfg = load_data(opt, info)
    if ckpt is None:
        opt = apply_recipe(opt, data_cfg)
    if ckpt is not None:
        hyp = check_assigner(from_mapping(Hyp, ckpt["hyp"], str(opt.resume)), str(opt.resume))
    else:
        hyp = load_hyp(opt)
    nc, names = (1, ["item"]) if opt.single_cls else (data_cfg.nc, list(data_cfg.names))
    model = _build_model(opt, nc, names, ckpt).to(device)
    opt = _round_img_size(opt, int(model.stride.max()))
    _freeze(model, opt.freeze)
    channels_last = device.type in ("cpu", "cuda")  # 1.4x faster training on CPU (oneDNN), faster AMP on CUDA
    if channels_last:
        model.to(memory_format=torch.channels_last)
    stride = int(model.stride.max())
    train_loader = build_train_loader(opt, hyp, data_cfg, info, batch_size, stride, device)
    val_loader = build_val_loader(opt, data_cfg, batch_size, stride, device) if info.is_main else None
    if ckpt is None and not opt.noautoanchor and info.is_main:
        autoanchor_for_training(model, train_loader, hyp, opt.img_size[0], opt.seed)
    accumulate = accumulation_steps(opt.batch_size, hyp.nbs)
    optimizer = build_optimizer(model, opt.optimizer, hyp, scaled_weight_decay(hyp.weight_decay, opt.batch_size, hyp.nbs))
    lr_factor = lr_lambda(opt.epochs, hyp.lrf, opt.linear_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=opt.precision == "fp16")  # bf16 needs no loss scaling
    ema = ModelEMA(model) if info.is_main else None
    val_loss_fn = validation_loss(ema.module, hyp, opt.img_size[0]) if ema is not None else None
    run = Run(
        opt=opt, hyp=hyp, info=info, device=device, save_dir=save_dir if info.is_main else None, model=model,
        ema=ema, optimizer=optimizer, scheduler=scheduler, lr_factor=lr_factor, scaler=scaler, precision=opt.precision,
        loss_fn=YoloLoss(model.head, hyp, train_size=opt.img_size[0]), train_loader=train_loader,
        val_loader=val_loader, nc=nc, names=names, batch_size=batch_size, accumulate=accumulate,
        channels_last=channels_last, class_maps=[0.0] * nc, val_loss_fn=val_loss_fn,
        forward_gflops=count_flops(model, opt.img_size[0]) / 1e9,
    )
    if ckpt is not None:
        _restore(run, ckpt)
    if opt.compile:  # after the EMA copied the model: the EMA and validation run eager
        compile_module(model, device)
    run.model = _wrap_ddp(model, opt, info, device)
    if info.is_main:  # every input is checked: only now is anything written
        (save_dir / "weights").mkdir(parents=True, exist_ok=True)
        (save_dir / "hyp.yaml").write_text(yaml.safe_dump(dataclasses.asdict(hyp), sort_keys=False))
        (save_dir / "opt.yaml").write_text(yaml.safe_dump(opt.to_dict(), sort_keys=False))
        if ckpt is not None:
            write_results_csv(run.rows, save_dir / "results.csv")
        run.tb = TensorBoardLog(save_dir, run.start_epoch)
        run.trackers = Trackers.start(wanted(opt.logger), save_dir, run_params(opt.to_dict(), dataclasses.asdict(hyp)))
        if ckpt is None and not opt.noplots:
            plot_labels(train_loader, names, save_dir)
    return run


def _build_model(opt: TrainOptions, nc: int, names: list[str], ckpt: dict | None) -> Model:
    """The model to train: from the resume checkpoint, fine-tuned from --weights, or from scratch."""
    if ckpt is not None:
        model = model_from_checkpoint(ckpt, "train_model", source=f"--resume {opt.resume}")
    elif opt.weights:
        source = read_checkpoint(resolve_path(opt.weights))  # ours, or an official YOLOv7 file
        model = Model(resolve_path(opt.cfg) if opt.cfg else source["model_cfg"], nc=nc)
        LOG.info(transfer_weights(model, source["model"]).summary(opt.weights))
    else:
        model = Model(resolve_path(opt.cfg or DEFAULT_CFG), nc=nc)
    model.names = names
    return model


def _round_img_size(opt: TrainOptions, stride: int) -> TrainOptions:
    """``opt`` with --img-size rounded up to multiples of the model's largest stride (YOLOv7's
    check_img_size): the loss needs every output grid to tile the image exactly."""
    sizes = [round_up(s, stride) for s in opt.img_size]
    if sizes == list(opt.img_size):
        return opt
    LOG.warning("--img-size %s is not a multiple of the stride %d: using %s", opt.img_size, stride, sizes)
    return dataclasses.replace(opt, img_size=sizes)


def _freeze(model: Model, freeze: list[int]) -> None:
    """--freeze N: the first N layers; --freeze i j k: those layers. Frozen weights get no gradient."""
    n = len(model.model)
    layers = list(range(freeze[0])) if len(freeze) == 1 else freeze
    if len(freeze) == 1 and freeze[0] >= n:
        raise ConfigError(f"--freeze {freeze[0]}: the model has {n} layers; freezing them all leaves nothing to "
                          f"train (at most {n - 1})")
    if len(freeze) > 1 and (max(freeze) >= n or len(set(freeze)) >= n):
        raise ConfigError(f"--freeze {' '.join(map(str, freeze))}: the model has layers 0..{n - 1} and at least one "
                          "must train")
    prefixes = tuple(f"model.{i}." for i in layers)
    if not prefixes:
        return
    frozen = 0
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            frozen += 1
    LOG.info("froze %d parameter tensors in layers %s", frozen, layers)


def _resolve_machine_options(opt: TrainOptions, device: torch.device, processes: int) -> TrainOptions:
    """``opt`` with --precision, --threads and --workers made concrete for this machine, and said
    (``train`` applies the threads).

    The resolved values go to opt.yaml and the checkpoint, so a resume (whose options are the
    checkpoint's) computes exactly as the run it continues: CPU kernels' float sums depend on
    the thread count. ``processes``: training processes sharing this machine's cores.
    """
    try:
        precision = resolve_precision(opt.precision, device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cores = split_cores(opt.threads, opt.workers, processes=processes)
    why = f" ({opt.precision}: {precision_reason(precision, device)})" if opt.precision == "auto" else ""
    idle = " at idle priority (they use what the model leaves)" if (
        consumer_options(device)["idle_workers"] and cores.workers > 0 and IDLE_PRIORITY) else ""
    LOG.info("precision %s%s; %s%s", precision, why, cores.describe(), idle)
    return dataclasses.replace(opt, precision=precision, threads=cores.threads, workers=cores.workers)


def _restore(run: Run, ckpt: dict[str, Any]) -> None:
    """Continue from ``ckpt``: optimizer, schedule position, scaler, EMA, rows, best fitness, RNG."""
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # torch's messages for a state of another model
        raise CheckpointError(f"--resume {run.opt.resume}: its optimizer state does not fit the model "
                              f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    run.start_epoch = ckpt["epoch"] + 1
    run.scheduler.last_epoch = run.start_epoch  # the optimizer already holds this epoch's lr
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(ckpt["ema"], ckpt["model"])
    run.best_fitness = ckpt["best_fitness"]
    run.rows = list(ckpt["metrics"])
    run.class_maps = list(ckpt.get("class_maps", run.class_maps))  # absent before --image-weights existed
    set_rng_state(ckpt["rng"])
    LOG.info("resuming %s from epoch %d", run.opt.resume, run.start_epoch)


def _wrap_ddp(model: nn.Module, opt: TrainOptions, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP (and SyncBN with --sync-bn on CUDA) when launched by torchrun with several processes."""
    if not info.distributed:
        return model
    if opt.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            LOG.warning("--sync-bn needs CUDA; training with per-process BatchNorm")
    barrier()
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
