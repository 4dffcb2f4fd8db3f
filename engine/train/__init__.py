"""Training (train.py): ``train(opt)`` runs a whole job from ``TrainOptions``.

Modules: ``options`` (the flags), ``recipe`` (the hyp file and optimizer when the flags leave them
open), ``setup`` (options -> model, data, optimizer, ...), ``loop`` (epochs, checkpoints, early
stop), ``loaders`` (the trainer's data loaders), ``validation`` (the per-epoch evaluation), ``log``
(results.csv, TensorBoard), ``speed`` (timing.csv), ``plots`` (pictures), ``optim`` (optimizer,
schedule, warmup), ``ema``.
"""

from __future__ import annotations

from typing import Any

from engine.train.options import TrainOptions

__all__ = ["TrainOptions", "train"]


def __getattr__(name: str) -> Any:
    # The loop imports torch and tqdm; loaded on first use so that train.py --help stays fast.
    if name == "train":
        from engine.train.loop import train

        return train
    raise AttributeError(name)
