"""Run options of a training (what train.py's flags fill in) and the run-directory rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

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

    weights: str = ""  # '' trains from scratch; a checkpoint fine-tunes (matching tensors transfer)
    cfg: str = ""  # model YAML; '' = the one stored in --weights, else DEFAULT_CFG
    data: str = DEFAULT_DATA
    hyp: str = DEFAULT_HYP
    overrides: list[str] = dataclasses.field(default_factory=list)  # key=value hyper-parameter overrides
    epochs: int = 15
    batch_size: int = 16  # total over all processes
    img_size: list[int] = dataclasses.field(default_factory=lambda: [256, 256])  # train, val
    rect: bool = False
    resume: str = ""  # '' no; 'last' the most recent last.pt under --project; or a path
    nosave: bool = False
    notest: bool = False
    noautoanchor: bool = False
    cache_images: str = ""  # '', 'ram' or 'disk'
    image_weights: bool = False
    device: str = ""
    multi_scale: bool = False
    single_cls: bool = False
    optimizer: str = "SGD"
    sync_bn: bool = False
    workers: int = 2
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    linear_lr: bool = False
    label_smoothing: float = 0.0
    save_period: int = -1
    freeze: list[int] = dataclasses.field(default_factory=lambda: [0])
    seed: int = 0
    deterministic: bool = False
    patience: int = 100
    close_mosaic: int = 0
    json: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for opt.yaml and checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "options") -> TrainOptions:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ConfigError naming ``source``."""
        return from_mapping(cls, data, source)

    def check(self) -> None:
        """Raise ConfigError for inconsistent options (message names the flag)."""
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 1 <= len(self.img_size) <= 2 or min(self.img_size) < 32:
            raise ConfigError(f"--img-size takes one or two sizes >= 32 (train, val), got {self.img_size}")
        if self.cache_images not in ("", "ram", "disk"):
            raise ConfigError(f"--cache-images must be ram or disk, got {self.cache_images!r}")
        if self.optimizer not in ("SGD", "Adam", "AdamW"):
            raise ConfigError(f"--optimizer must be SGD, Adam or AdamW, got {self.optimizer!r}")
        if self.image_weights and self.rect:
            raise ConfigError("--image-weights cannot be combined with --rect (rectangular batches need a fixed order)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")


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
