"""The search space of ``train.py --evolve``: YOLOv7's hyper-parameter mutation table, for Optuna.

YOLOv7's evolve table gives each key a mutation gain and limits. Here the limits become the
range Optuna samples in; a gain of 0 (YOLOv7 never mutates the key) keeps the key at its
hyp-file value, and so do the keys this trainer accepts but does not use (``UNUSED``) and
every key the user fixes with ``key=value`` on the command line. Keys whose range spans at least
a decade above a positive lower limit are sampled on a log scale (learning rates, decay, gains).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, NamedTuple

from utils.config import COMPAT_ONLY_KEYS, Hyp

if TYPE_CHECKING:
    import optuna


class SearchRange(NamedTuple):
    """One row of YOLOv7's table: mutation gain (0: never mutated), lower and upper limit."""

    gain: float
    low: float
    high: float
    log: bool = False


# YOLOv7 train.py's `meta` table (keys, gains, limits). weight_decay's lower limit is 1e-5
# instead of 0 so that it can be sampled on a log scale (1e-5 at the nominal batch of 64 is
# negligible decay, as 0 is).
TABLE: dict[str, SearchRange] = {
    "lr0": SearchRange(1, 1e-5, 1e-1, log=True),
    "lrf": SearchRange(1, 0.01, 1.0, log=True),
    "momentum": SearchRange(0.3, 0.6, 0.98),
    "weight_decay": SearchRange(1, 1e-5, 0.001, log=True),
    "warmup_epochs": SearchRange(1, 0.0, 5.0),
    "warmup_momentum": SearchRange(1, 0.0, 0.95),
    "warmup_bias_lr": SearchRange(1, 0.0, 0.2),
    "box": SearchRange(1, 0.02, 0.2, log=True),
    "cls": SearchRange(1, 0.2, 4.0, log=True),
    "cls_pw": SearchRange(1, 0.5, 2.0),
    "obj": SearchRange(1, 0.2, 4.0, log=True),
    "obj_pw": SearchRange(1, 0.5, 2.0),
    "iou_t": SearchRange(0, 0.1, 0.7),
    "anchor_t": SearchRange(1, 2.0, 8.0),
    "anchors": SearchRange(2, 2.0, 10.0),
    "fl_gamma": SearchRange(0, 0.0, 2.0),
    "hsv_h": SearchRange(1, 0.0, 0.1),
    "hsv_s": SearchRange(1, 0.0, 0.9),
    "hsv_v": SearchRange(1, 0.0, 0.9),
    "degrees": SearchRange(1, 0.0, 45.0),
    "translate": SearchRange(1, 0.0, 0.9),
    "scale": SearchRange(1, 0.0, 0.9),
    "shear": SearchRange(1, 0.0, 10.0),
    "perspective": SearchRange(0, 0.0, 0.001),
    "flipud": SearchRange(1, 0.0, 1.0),
    "fliplr": SearchRange(0, 0.0, 1.0),
    "mosaic": SearchRange(1, 0.0, 1.0),
    "mixup": SearchRange(1, 0.0, 1.0),
    "copy_paste": SearchRange(1, 0.0, 1.0),
    "paste_in": SearchRange(1, 0.0, 1.0),
}
# Accepted for YOLOv7 file compatibility but without effect here (searching them would only
# add noise dimensions): utils.config.COMPAT_ONLY_KEYS (iou_t, anchors: autoanchor keeps the
# config's anchor count). copy_paste and paste_in act (data/paste.py) and are searched.
UNUSED = COMPAT_ONLY_KEYS


def fixed_keys(overrides: list[str]) -> set[str]:
    """The hyper-parameter keys a user fixed with ``key=value`` (never searched)."""
    return {item.split("=", 1)[0].strip() for item in overrides if "=" in item}


def searched_keys(fixed: set[str]) -> list[str]:
    """The keys Optuna samples, in table order: mutated by YOLOv7, used here, not fixed."""
    return [k for k, r in TABLE.items() if r.gain > 0 and k not in UNUSED and k not in fixed]


def suggest_hyp(trial: optuna.Trial, base: Hyp, keys: list[str]) -> Hyp:
    """``base`` with each of ``keys`` drawn by ``trial`` in its TABLE range."""
    drawn = {k: trial.suggest_float(k, TABLE[k].low, TABLE[k].high, log=TABLE[k].log) for k in keys}
    return dataclasses.replace(base, **drawn)


def base_params(base: Hyp, keys: list[str]) -> dict[str, float]:
    """The hyp file's values of ``keys``, clipped to their ranges (as YOLOv7 clips): the first
    trial of a new study, so the study starts from the recipe it is asked to improve."""
    values = dataclasses.asdict(base)
    return {k: min(max(float(values[k]), TABLE[k].low), TABLE[k].high) for k in keys}
