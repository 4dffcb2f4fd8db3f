"""The labels of a whole split in a few flat arrays: ``RaggedRows`` (labels, crowd boxes) and
``SegmentStore`` (their polygons).

A list of one small numpy array per image (or per polygon) is one Python object per array:
at COCO's size about a million of them, and a forked loader worker that merely reads one
writes its reference count, so the page holding it is copied into the worker (copy-on-write);
after an epoch every worker holds its own copy of every label. Here a split is a handful of
arrays; ``store[i]`` makes a small read-only view on access, and reading writes nothing the
parent owns. The arrays are also what the label cache saves (``data.scan``), so loading it
parses no text.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence

import numpy as np

LABEL_COLUMNS = 5  # cls, cx, cy, w, h


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # views handed out must not edit the store (nor dirty shared pages)
    return a


def offsets_of(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """int64 [n + 1]: where each of ``n`` runs of ``lengths`` starts in the flat array, and the end."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def check_offsets(offsets: np.ndarray, total: int, what: str) -> None:
    """ValueError unless ``offsets`` is int [n + 1], 0 first, non-decreasing, ``total`` last."""
    if (offsets.ndim != 1 or len(offsets) == 0 or offsets.dtype.kind not in "iu" or offsets[0] != 0
            or offsets[-1] != total or (np.diff(offsets) < 0).any()):
        raise ValueError(f"{what}: offsets do not index the rows")


def _position(index, n: int) -> int:
    """``index`` (an int, numpy int or 0-d tensor; negative counts from the end) as 0..n-1."""
    i = operator.index(index)
    if not -n <= i < n:
        raise IndexError(f"image index {i} out of range for {n} images")
    return i % n


def _lengths(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.zeros(0, np.int64)] + [np.diff(p) for p in parts])


def _gather(offsets: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row indices of runs ``indices`` in that order, offsets of the gathered runs)."""
    lengths = np.diff(offsets)[indices]
    new = offsets_of(lengths)
    rows = np.repeat(offsets[indices] - new[:-1], lengths) + np.arange(new[-1])
    return rows, new


class RaggedRows(Sequence):
    """Per image a float32 [n_i, width] array, held as ``values`` [sum n_i, width] and ``offsets``
    [N + 1]; ``rows[i]`` is a read-only view ``values[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        check_offsets(offsets, len(values), "label rows")
        self.values, self.offsets = _frozen(values), _frozen(offsets)

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], width: int = LABEL_COLUMNS) -> RaggedRows:
        """From one float [n_i, width] array per image."""
        values = np.concatenate([np.asarray(a, np.float32).reshape(-1, width) for a in arrays]) if len(arrays) \
            else np.zeros((0, width), np.float32)
        return cls(values, offsets_of([len(a) for a in arrays]))

    @classmethod
    def concat(cls, parts: Sequence[RaggedRows], width: int = LABEL_COLUMNS) -> RaggedRows:
        """The images of ``parts`` one after another."""
        values = [p.values for p in parts] or [np.zeros((0, width), np.float32)]
        return cls(np.concatenate(values), offsets_of(_lengths([p.offsets for p in parts])))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index) -> np.ndarray:
        i = _position(index, len(self))
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist(), strict=True):
            yield self.values[a:b]

    def __setitem__(self, index, rows: np.ndarray) -> None:
        """Replace image ``index``'s rows (rebuilds the arrays: for a few edits, not a loop)."""
        i = _position(index, len(self))
        arrays = [self.values[:self.offsets[i]], np.asarray(rows, np.float32).reshape(-1, self.values.shape[1]),
                  self.values[self.offsets[i + 1]:]]
        lengths = self.lengths().copy()
        lengths[i] = len(arrays[1])
        self.values, self.offsets = _frozen(np.concatenate(arrays)), _frozen(offsets_of(lengths))

    def lengths(self) -> np.ndarray:
        """int64 [N]: rows per image."""
        return np.diff(self.offsets)

    def take(self, indices: Sequence[int] | np.ndarray) -> RaggedRows:
        """The images ``indices`` in that order (sharing the read-only arrays when that is every image in order)."""
        indices = np.asarray(indices, np.int64)
        if len(indices) == len(self) and (indices == np.arange(len(self))).all():
            return RaggedRows(self.values, self.offsets)
        rows, offsets = _gather(self.offsets, indices)
        return RaggedRows(self.values[rows], offsets)

    def with_class(self, cls: int) -> RaggedRows:
        """A copy whose every row has class ``cls`` (column 0; single-class training)."""
        values = self.values.copy()
        values[:, 0] = cls
        return RaggedRows(values, self.offsets.copy())


class SegmentStore(Sequence):
    """Per image one polygon per label row, float32 [k, 2] normalised ([0, 2] for a box row):
    ``points`` [P, 2], ``point_offsets`` [R + 1] (row r's polygon), ``row_offsets`` [N + 1]
    (image i's rows, as its ``RaggedRows``). ``segments[i]`` is a list of read-only views."""

    def __init__(self, points: np.ndarray, point_offsets: np.ndarray, row_offsets: np.ndarray) -> None:
        check_offsets(point_offsets, len(points), "polygon points")
        check_offsets(row_offsets, len(point_offsets) - 1, "polygon rows")
        self.points, self.point_offsets, self.row_offsets = _frozen(points), _frozen(point_offsets), _frozen(row_offsets)

    @classmethod
    def from_lists(cls, images: Sequence[Sequence[np.ndarray]]) -> SegmentStore:
        """From per image a list of float [k, 2] polygons."""
        polygons = [np.asarray(p, np.float32).reshape(-1, 2) for image in images for p in image]
        points = np.concatenate(polygons) if polygons else np.zeros((0, 2), np.float32)
        return cls(points, offsets_of([len(p) for p in polygons]), offsets_of([len(image) for image in images]))

    @classmethod
    def concat(cls, parts: Sequence[SegmentStore]) -> SegmentStore:
        """The images of ``parts`` one after another."""
        points = np.concatenate([p.points for p in parts] or [np.zeros((0, 2), np.float32)])
        return cls(points, offsets_of(_lengths([p.point_offsets for p in parts])),
                   offsets_of(_lengths([p.row_offsets for p in parts])))

    def __len__(self) -> int:
        return len(self.row_offsets) - 1

    def __getitem__(self, index) -> list[np.ndarray]:
        i = _position(index, len(self))
        bounds = self.point_offsets[self.row_offsets[i]:self.row_offsets[i + 1] + 1].tolist()
        return [self.points[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def has_points(self) -> bool:
        """True when any row is a polygon."""
        return len(self.points) > 0

    def take(self, indices: Sequence[int] | np.ndarray) -> SegmentStore:
        """The images ``indices`` in that order (sharing the read-only arrays when that is every image in order)."""
        indices = np.asarray(indices, np.int64)
        if len(indices) == len(self) and (indices == np.arange(len(self))).all():
            return SegmentStore(self.points, self.point_offsets, self.row_offsets)
        rows, row_offsets = _gather(self.row_offsets, indices)
        points, point_offsets = _gather(self.point_offsets, rows)
        return SegmentStore(self.points[points], point_offsets, row_offsets)
