"""Checking one image and one label file: the per-file work of the label scan.

Label rows are ``cls cx cy w h`` (normalised, a box) or ``cls x1 y1 x2 y2 ...`` (a segment:
a polygon of at least 3 points, as YOLOv7 / ultralytics write them; its box is the polygon's
extent and the polygon is kept). Both kinds may share a file. A row with another column count
(an even count is a polygon with an odd number of coordinates), a value that is not a finite
number, a coordinate outside 0..1 or a class id that is not an integer below ``nc`` makes the
whole file unusable: it is reported with file and line and the image is skipped (a partly
labelled image would teach the model that the unlabelled objects are background). Zero-size
boxes and polygons and duplicate rows are repaired (dropped) with a note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

MIN_IMAGE_SIDE = 10
MIN_POLYGON_POINTS = 3  # 7+ columns; 2 points would read as a box row
_EXIF_ORIENTATION = 0x0112
_EPS = 1e-6  # tolerance for coordinates printed as 1.0000001
NO_SEGMENT = np.zeros((0, 2), np.float32)  # the segment of a box row


def verify_image(path: Path) -> tuple[tuple[int, int], str | None]:
    """Open and verify an image; returns ((height, width) after EXIF rotation, error or None)."""
    try:
        if path.stat().st_size == 0:
            return (0, 0), "empty file"
        with Image.open(path) as im:
            im.verify()  # checks structure without decoding every pixel
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated 90 degrees on load
                w, h = h, w
            fmt = im.format
    except Exception as e:  # PIL raises many types for bad files; every one means "skip this image"
        return (0, 0), f"not a readable image ({type(e).__name__}: {e})"
    if min(h, w) < MIN_IMAGE_SIDE:
        return (h, w), f"image is {w}x{h}, smaller than {MIN_IMAGE_SIDE} px"
    return (h, w), decode_error(path, fmt)


def decode_error(path: Path, fmt: str | None) -> str | None:
    """Why ``path`` does not decode in full, or None. PIL's ``verify`` reads the structure only,
    and libjpeg fills a JPEG whose data stops early (even one that still ends in the end-of-image
    marker) with gray after a mere warning, so JPEGs are entropy-decoded with libjpeg-turbo in
    strict mode (at 1/8 scale: every coefficient is still read) and other formats loaded by PIL."""
    try:
        if fmt == "JPEG":
            data = path.read_bytes()
            if not data.endswith(b"\xff\xd9"):
                return "truncated JPEG (no end-of-image marker)"
            try:
                simplejpeg.decode_jpeg(data, min_factor=8, strict=True)
                return None
            except ValueError as e:
                # warnings about missing data mean lost pixels; other complaints (an unusual
                # colour space, extraneous bytes) leave a usable image that PIL decodes below
                if "premature end" in str(e).lower():
                    return f"corrupt JPEG ({e})"
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # PIL raises many types for bad data; every one means "skip this image"
        return f"not a readable image ({type(e).__name__}: {e})"
    return None


def _row_to_box(values: list[float], nc: int) -> tuple[list[float] | None, np.ndarray, str | None]:
    """One parsed row -> ([cls, cx, cy, w, h] or None when zero-size, polygon float32 [k, 2]
    normalised ([0, 2] for a box row), error or None)."""
    n = len(values)
    if n != 5 and (n % 2 == 0 or n < 1 + 2 * MIN_POLYGON_POINTS):
        return None, NO_SEGMENT, f"{n} columns (expected 5 for a box, or 1 + 2k for a polygon of k >= {MIN_POLYGON_POINTS} points)"
    if not np.isfinite(values).all():
        return None, NO_SEGMENT, "value is not a finite number"
    cls = values[0]
    if not cls.is_integer() or not 0 <= cls < nc:
        return None, NO_SEGMENT, f"class id {cls:g} is not an integer in 0..{nc - 1}"
    coords = np.array(values[1:])
    if coords.min() < -_EPS or coords.max() > 1 + _EPS:
        return None, NO_SEGMENT, "coordinate outside 0..1 (labels must be normalised)"
    polygon = NO_SEGMENT
    if n == 5:
        cx, cy, w, h = coords
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:
        polygon = coords.reshape(-1, 2).clip(0, 1).astype(np.float32)
        (x1, y1), (x2, y2) = polygon.min(0), polygon.max(0)
    x1, y1, x2, y2 = np.clip([x1, y1, x2, y2], 0, 1)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None, NO_SEGMENT, None
    return [cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], polygon, None


def read_label_file(path: Path, nc: int) -> tuple[np.ndarray, list[np.ndarray], list[str], str | None]:
    """Parse a YOLO label file.

    Returns (labels float32 [n, 5] = cls, cx, cy, w, h normalised and clipped to the image,
    segments: n polygons float32 [k, 2] normalised, [0, 2] for box rows, notes about repairs,
    error naming ``path:line`` when the file is unusable).
    """
    empty = np.zeros((0, 5), np.float32)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return empty, [], [], f"{path}: cannot read label file ({e})"
    rows, segments, notes = [], [], []
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            return empty, [], notes, f"{path}:{lineno}: not a number in {line.strip()!r}"
        box, polygon, error = _row_to_box(values, nc)
        if error:
            return empty, [], notes, f"{path}:{lineno}: {error}"
        if box is None:
            notes.append(f"{path}:{lineno}: zero-size {'box' if len(values) == 5 else 'polygon'} dropped")
        else:
            rows.append(box)
            segments.append(polygon)
    labels = np.array(rows, np.float32).reshape(-1, 5)
    keys = [(tuple(r), s.tobytes()) for r, s in zip(labels.tolist(), segments, strict=True)]
    first = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values())
    if len(first) < len(labels):
        notes.append(f"{path}: {len(labels) - len(first)} duplicate rows dropped")
        labels, segments = labels[first], [segments[i] for i in first]
    return labels, segments, notes, None
