"""Run options of a training (what train.py's flags fill in) and the run-directory rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from utils.cli import check_ranges, option
from utils.config import ConfigError, Hyp, apply_overrides, from_mapping, load
from utils.paths import resolve_path

DEFAULT_DATA = "shapes"
DEFAULT_CFG = "cfg/yolov7-tiny.yaml"
DEFAULT_HYP = "cfg/hyp/hyp.shapes.yaml"


@dataclasses.dataclass
class TrainOptions:
    """Everything a training run is started with; stored in opt.yaml and in every checkpoint.

    Defaults train the built-in shapes set on a small model; see train.py --help for each flag.
    """

    weights: str = option("", "checkpoint to fine-tune from ('' = from scratch)")
    cfg: str = option("", f"model YAML (default: --weights' model, else {DEFAULT_CFG})")
    data: str = option(DEFAULT_DATA, "data-set YAML or built-in name (default: shapes)")
    hyp: str = option(DEFAULT_HYP, "hyper-parameter YAML")
    overrides: list[str] = option([], "hyper-parameter overrides, e.g. lr0=0.02", positional=True, nargs="*",
                                  metavar="key=value")
    epochs: int = option(15, at_least=1)
    batch_size: int = option(16, "total batch size over all processes", at_least=1)
    img_size: list[int] = option([256, 256], "train [val] image size", aliases=["--img"], at_least=32)
    rect: bool = option(False, "rectangular training batches (no mosaic)")
    resume: str = option("", "resume the newest last.pt, or PATH", nargs="?", const="last")
    nosave: bool = option(False, "save only the final checkpoint")
    notest: bool = option(False, "validate only after the final epoch")
    noautoanchor: bool = option(False, "keep the config's anchors")
    cache_images: str = option("", nargs="?", const="ram", choices=["", "ram", "disk"])
    image_weights: bool = option(False, "draw images by their classes' (1 - mAP@.5)^2 / frequency (one process)")
    device: str = option("", "'' (auto), cpu, 0, 0,1,2,3 or mps")
    multi_scale: bool = option(False, "vary the image size +/- 50%% per batch")
    single_cls: bool = option(False, "train every class as one")
    optimizer: str = option("SGD", choices=["SGD", "Adam", "AdamW"], shortcuts={"--adam": "Adam"})
    sync_bn: bool = option(False, "SyncBatchNorm under DDP (CUDA)")
    workers: int = option(2, "data-loader workers per process", at_least=0)
    project: str = option("runs/train")
    name: str = option("exp")
    exist_ok: bool = option(False, "reuse project/name instead of incrementing")
    linear_lr: bool = option(False, "linear instead of cosine learning-rate decay")
    label_smoothing: float = option(0.0, at_least=0.0, below=1.0)
    save_period: int = option(-1, "also save epoch<N>.pt every N epochs")
    freeze: list[int] = option([0], "first N layers, or layer indices")
    seed: int = option(0)
    deterministic: bool = option(False, "deterministic kernels (slower; exact reruns)")
    patience: int = option(100, "stop after this many epochs without gain")
    close_mosaic: int = option(0, "no mosaic in the last N epochs")
    json: bool = option(False, "print the final summary as one JSON object")

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
    """The hyper-parameter file of ``opt`` with its key=value overrides and --label-smoothing applied."""
    hyp = load(Hyp, resolve_path(opt.hyp))
    hyp = apply_overrides(hyp, opt.overrides)
    if opt.label_smoothing:
        hyp = dataclasses.replace(hyp, label_smoothing=opt.label_smoothing)
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
