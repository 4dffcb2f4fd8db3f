"""Hyper-parameter evolution (``train.py --evolve``): Optuna trials, each a training run.

Modules: ``space`` (YOLOv7's mutation table as a search space), ``study`` (folder, storage,
trials of dead processes), ``run`` (``evolve(opt)``: the trial loop and objective), ``report``
(evolve.csv, hyp_evolved.yaml, plots, TensorBoard, the progress line).
"""

from __future__ import annotations

from typing import Any

__all__ = ["evolve"]


def __getattr__(name: str) -> Any:
    # Optuna and torch load on first use, so that train.py --help stays fast.
    if name == "evolve":
        from engine.evolve.run import evolve

        return evolve
    raise AttributeError(name)
