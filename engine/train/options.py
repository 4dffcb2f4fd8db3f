"""Run options of a training (what train.py's flags fill in) and the run-directory rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from engine.train.trackers import TRACKERS
from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, V5_METRIC_NOTE, check_ranges, option
from utils.config import ConfigError, Hyp, apply_overrides, from_mapping, load, read_yaml
from utils.paths import resolve_path
from utils.precision import PRECISIONS

DEFAULT_DATA = "shapes"
DEFAULT_CFG = "cfg/yolov7-tiny.yaml"
DEFAULT_HYP = "cfg/hyp/hyp.shapes.yaml"  # the shapes recipe (engine/train/recipe.py)
AUTO_OPTIMIZER = "auto"  # --optimizer auto, --close-mosaic -1, no --hyp: the recipe chooses
AUTO_CLOSE_MOSAIC = -1
EVOLVE_TRIALS = 30  # a bare --evolve: tens of trials suit the TPE sampler (engine/evolve/run.py)


@dataclasses.dataclass
class TrainOptions:
    """Everything a training run is started with; stored in opt.yaml and in every checkpoint.

    Defaults train the built-in shapes set on a small model; see train.py --help for each flag.
    """

    weights: str = option("", "checkpoint to fine-tune from ('' = from scratch)")
    cfg: str = option("", f"model YAML (default: --weights' model, else {DEFAULT_CFG})")
    data: str = option(DEFAULT_DATA, "data-set YAML or built-in name (default: shapes)")
    hyp: str = option("", "hyper-parameter YAML (default: chosen by data set and run length, said at start-up)")
    overrides: list[str] = option([], "hyper-parameter overrides, e.g. lr0=0.02", positional=True, nargs="*",
                                  metavar="key=value")
    epochs: int = option(15, at_least=1)
    batch_size: int = option(16, "total batch size over all processes", at_least=1)
    img_size: list[int] = option([256, 256], "train [val] image size", aliases=["--img"],
                                  at_least=MIN_IMG_SIZE, at_most=MAX_IMG_SIZE)
    rect: bool = option(False, "rectangular training batches (no mosaic)")
    resume: str = option("", "resume the newest last.pt, or PATH", nargs="?", const="last")
    nosave: bool = option(False, "save only the final checkpoint")
    notest: bool = option(False, "validate only after the final epoch")
    noautoanchor: bool = option(False, "keep the config's anchors")
    cache_images: str = option("auto", "decoded, resized images kept: auto (in RAM when they take at most 10%% of the "
                               "free memory), none, ram (the flag alone) or disk (.npy beside the images)",
                               nargs="?", const="ram", choices=["auto", "none", "ram", "disk", ""])  # "": none (old runs)
    image_weights: bool = option(False, "draw images by their classes' (1 - mAP@.5)^2 / frequency (one process)")
    device: str = option("", "'' (auto), cpu, 0, 0,1,2,3 or mps")
    multi_scale: bool = option(False, "vary the image size +/- 50%% per batch")
    single_cls: bool = option(False, "train every class as one")
    optimizer: str = option(AUTO_OPTIMIZER, "auto: the recipe's (SGD; AdamW for short runs)",
                            choices=[AUTO_OPTIMIZER, "SGD", "Adam", "AdamW"], shortcuts={"--adam": "Adam"})
    sync_bn: bool = option(False, "SyncBatchNorm under DDP (CUDA)")
    workers: int = option(2, "data-loader workers per process (-1: one per model thread)", at_least=-1)
    threads: int = option(0, "the model's CPU threads (0: the usable cores other work leaves free; "
                          "the choice is stored, so a resume computes alike)", at_least=0)
    precision: str = option("auto", "forward-pass precision: auto (bf16 on CPUs with native bf16 and on CUDA "
                            "GPUs that have it, else fp16 on CUDA, fp32 otherwise), fp32, bf16 or fp16; "
                            "loss, optimizer, validation and export stay fp32", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the training model (Inductor): the first steps compile (minutes on "
                           "a CPU, where it measured no faster), each new image size again (--multi-scale, --rect)")
    project: str = option("runs/train")
    name: str = option("exp")
    exist_ok: bool = option(False, "reuse project/name instead of incrementing")
    linear_lr: bool = option(False, "linear instead of cosine learning-rate decay")
    label_smoothing: float = option(0.0, at_least=0.0, below=1.0)
    save_period: int = option(-1, "also save weights/epoch_NNN.pt every N epochs (-1: never)", at_least=-1,
                              aliases=["--save_period"])
    freeze: list[int] = option([0], "first N layers, or layer indices", at_least=0)
    seed: int = option(0)
    deterministic: bool = option(False, "deterministic kernels (slower; exact reruns)")
    patience: int = option(100, "stop after this many epochs without gain", at_least=1)
    close_mosaic: int = option(AUTO_CLOSE_MOSAIC, "no mosaic in the last N epochs (-1: the recipe's, 0 or 10)",
                               at_least=-1)
    json: bool = option(False, "print the final summary as one JSON object")
    noplots: bool = option(False, "write no pictures (labels, batches, results.png, validation plots)")
    evolve: int | None = option(None, f"evolve the hyper-parameters with Optuna: N trials (bare: {EVOLVE_TRIALS})",
                                nargs="?", const=EVOLVE_TRIALS, at_least=1, metavar="N")
    evolve_prune: bool = option(True, "prune hopeless trials (on; --no-evolve-prune: every trial to the end)",
                                shortcuts={"--no-evolve-prune": False})
    evolve_storage: str = option("", "Optuna storage URL, e.g. postgresql://... (default: <run>/study.db)")
    evolve_study: str = option("", "study name in the storage (default: the newest, else --name)")
    logger: list[str] = option([], "also track the run in mlflow and/or wandb (repeatable; also on with their "
                               "environment variables, e.g. MLFLOW_TRACKING_URI, WANDB_MODE)", choices=TRACKERS,
                               repeatable=True)
    # YOLOv7's own command lines (python -m torch.distributed.launch ... train.py --local_rank N)
    local_rank: int = option(-1, "set by torch.distributed.launch; read as LOCAL_RANK (torchrun sets that directly)",
                             aliases=["--local_rank"])
    quad: bool = option(False, inert="YOLOv7's quad collate (4 images tiled per sample) is not implemented; "
                        "the standard loader is used (--multi-scale or a larger --img-size for small objects)")
    v5_metric: bool = option(False, aliases=["--v5_metric"], inert=V5_METRIC_NOTE)

    @property
    def image_cache(self) -> str | None:
        """--cache-images as ``build_dataloader``'s ``cache`` (None: read the images each time)."""
        return None if self.cache_images in ("", "none") else self.cache_images

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for opt.yaml and checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "options") -> TrainOptions:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ConfigError naming ``source``."""
        return from_mapping(cls, data, source)

    def check(self) -> None:
        """Raise ConfigError for inconsistent options (message names the flag)."""
        check_ranges(self)
        if not 1 <= len(self.img_size) <= 2:
            raise ConfigError(f"--img-size takes one or two sizes >= 32 (train, val), got {self.img_size}")
        if self.image_weights and self.rect:
            raise ConfigError("--image-weights cannot be combined with --rect (rectangular batches need a fixed order)")


def load_hyp(opt: TrainOptions) -> Hyp:
    """The hyper-parameter file of ``opt`` with its key=value overrides and --label-smoothing applied;
    its assignment rule checked (``check_assigner``)."""
    if not opt.hyp:
        raise ConfigError("--hyp: no hyper-parameter file (engine.train.recipe.apply_recipe chooses one)")
    path = resolve_path(opt.hyp)
    hyp = check_assigner(load(Hyp, path), str(path))
    hyp = check_assigner(apply_overrides(hyp, opt.overrides), "command line")
    if opt.label_smoothing:
        hyp = dataclasses.replace(hyp, label_smoothing=opt.label_smoothing)
    return hyp


def check_assigner(hyp: Hyp, source: str) -> Hyp:
    """``hyp``, once its assignment rule is known to be registered (models/assign.py ``ASSIGNERS``);
    otherwise a ConfigError naming ``source`` (the file it came from), the key and the choices."""
    from models.assign import assign_rule  # local: models import torch, and train.py --help stays fast

    try:
        assign_rule(hyp.assignment_rule)
    except ValueError as e:
        raise ConfigError(f"{source}: key 'assigner': {e}") from None
    return hyp


def find_resume_checkpoint(opt: TrainOptions) -> Path:
    """The checkpoint ``--resume`` names: a path, or ('last') the newest last.pt under --project."""
    if opt.resume != "last":
        path = Path(opt.resume).expanduser()
        if not path.is_file():
            raise ConfigError(f"--resume {opt.resume}: no such checkpoint")
        return path
    candidates = sorted(Path(opt.project).glob("**/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"--resume: no weights/last.pt found under {opt.project}")
    return candidates[-1]


RESUME_MAY_CHANGE = ("resume", "device", "local_rank")  # what a resume changes in opt.yaml


def resume_run_dir(path: Path, ckpt_opt: dict[str, Any]) -> Path:
    """The run folder a --resume of ``path`` writes into, after checking ``path`` belongs to it:
    ``<run>/weights/<name>.pt`` with ``<run>/opt.yaml`` holding the checkpoint's run arguments.
    Anything else (a checkpoint copied into another folder, or into another run) is refused: the
    resume would overwrite files it does not own. Nothing is written here."""
    path = path.resolve()
    run = path.parent.parent
    hint = f"to start a new run from it, use --weights {path}"
    if path.parent.name != "weights":
        raise ConfigError(f"--resume {path}: not in the weights/ folder of a run, so there is no run to continue; "
                          f"{hint}")
    saved_file = run / "opt.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"--resume {path}: {run} has no opt.yaml, so it is not the run this checkpoint "
                          f"belongs to; {hint}")
    saved = read_yaml(saved_file)
    differ = sorted(k for k in set(saved) | set(ckpt_opt)
                    if k not in RESUME_MAY_CHANGE and saved.get(k) != ckpt_opt.get(k))
    if differ:
        raise ConfigError(f"--resume {path}: {saved_file} does not match the checkpoint's run arguments "
                          f"({', '.join(differ[:3])} differ), so the checkpoint belongs to another run; {hint}")
    return run
