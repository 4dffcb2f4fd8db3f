"""Single-process samplers whose order is a function of (seed, epoch) only, so an epoch can be
replayed (exact resume) whatever ran before it and whatever the worker count."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class SeededSampler(Sampler[int]):
    """Single-process order: a permutation seeded by (seed, epoch) when shuffling, else 0..n-1."""

    def __init__(self, n: int, shuffle: bool, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        """The random generator of the current epoch."""
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=self.generator()).tolist())

    def __len__(self) -> int:
        return self.n


class WeightedIndexSampler(SeededSampler):
    """n indices per epoch drawn with replacement, index i with probability weights[i] / sum
    (YOLOv7's --image-weights). All-zero weights (e.g. every class at mAP 1) sample uniformly."""

    def __init__(self, weights: np.ndarray, seed: int = 0) -> None:
        super().__init__(len(weights), shuffle=True, seed=seed)
        self.set_weights(weights)

    def set_weights(self, weights: np.ndarray) -> None:
        """Sampling weights float [n], >= 0, used from the next pass on."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if w.shape != (self.n,) or not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be {self.n} finite values >= 0, got shape {tuple(w.shape)}")
        self.weights = w if w.sum() > 0 else torch.ones(self.n, dtype=torch.float64)

    def __iter__(self) -> Iterator[int]:
        if self.n == 0:
            return iter([])
        drawn = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator())
        return iter(drawn.tolist())
