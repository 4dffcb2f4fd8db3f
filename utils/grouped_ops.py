"""Tensor helpers for data grouped by sorted integer keys: fast gathers, runs of equal keys,
segmented cumulative sums and all pairs that share a key. Used by the COCO metric."""

from __future__ import annotations

import torch
from torch import Tensor


def take(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` along dim 0; index_select is many times faster than advanced indexing on CPU."""
    return x.index_select(0, index)


def take2(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``x[rows, cols]`` for a 2-D ``x`` [N, C] and index tensors [E]: [E]."""
    return x.reshape(-1).index_select(0, rows * x.shape[1] + cols)


def run_starts(sorted_keys: Tensor) -> Tensor:
    """For a sorted key tensor [N], the index of the first element of each element's run [N]."""
    n = sorted_keys.numel()
    new_run = torch.ones(n, dtype=torch.bool, device=sorted_keys.device)
    new_run[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = torch.nonzero(new_run).squeeze(1)
    return take(starts, new_run.cumsum(0) - 1)


def group_pairs(det_group: Tensor, gt_group_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """All (detection, gt) index pairs that share a group id.

    det_group: int64 [D]; gt_group_sorted: int64 [G], ascending. Returns (det_idx, gt_idx), each
    [P], gt_idx indexing the sorted gts and ascending per detection.
    """
    lo = torch.searchsorted(gt_group_sorted, det_group, right=False)
    hi = torch.searchsorted(gt_group_sorted, det_group, right=True)
    counts = hi - lo
    det_idx = torch.repeat_interleave(torch.arange(det_group.numel(), device=det_group.device), counts)
    first_pair = counts.cumsum(0) - counts
    offset = torch.arange(det_idx.numel(), device=det_group.device) - take(first_pair, det_idx)
    return det_idx, take(lo, det_idx) + offset


def segment_cumsum(x: Tensor, starts: Tensor) -> Tensor:
    """Inclusive cumulative sum of int64 ``x`` [N] restarting at each run; starts [N] is the
    index where each element's run begins (see ``run_starts``)."""
    total = x.cumsum(0)
    return total - (take(total, starts) - take(x, starts))
