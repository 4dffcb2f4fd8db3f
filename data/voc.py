"""Pascal VOC sources: a VOC root (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) or an
``ImageSets`` list file, read into the label scan's entries (as ``data.scan`` does for COCO json).

Boxes: VOC's 1-based inclusive pixels become 0-based ``(xmin - 1, ymin - 1, xmax, ymax)`` as
detectron2 reads them. ``difficult`` objects go to ``crowd`` (kept out of training targets,
ignored by the evaluation as the VOC protocol ignores them); ``truncated`` ones are ordinary
boxes. Boxes overflowing the image are clipped (a note when by more than ``OVERFLOW_NOTE_PX``);
unknown class names, missing or non-numeric coordinates and xmin >= xmax skip the object with a
message naming the file and the object; malformed XML skips the image.

XML is read with ``xml.etree``: with expat >= 2.4.1 (Python 3.11 ships 2.5) it expands no
external entities and refuses entity-expansion bombs (Python's "XML vulnerabilities" table), so
defusedxml would add a dependency without closing a hole for annotation files.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data.labels import verify_image
from data.sources import IMAGE_SUFFIXES
from utils.config import ConfigError

ANNOTATIONS, IMAGES, IMAGE_SETS = "Annotations", "JPEGImages", Path("ImageSets") / "Main"
OVERFLOW_NOTE_PX = 5.0  # LabelImg often writes xmax = width + 1 or so; more than this is worth a note
_COORDS = ("xmin", "ymin", "xmax", "ymax")


@dataclasses.dataclass(frozen=True)
class VocObject:
    """One ``<object>``: its place in the file (1-based, for messages), class name, box
    (x1, y1, x2, y2) in 0-based pixels (unclipped), flags."""

    index: int
    name: str
    box: tuple[float, float, float, float]
    difficult: bool
    truncated: bool


def is_voc_root(path: Path) -> bool:
    """True for a folder holding ``Annotations/`` (a VOC root, e.g. VOCdevkit/VOC2007)."""
    return path.is_dir() and (path / ANNOTATIONS).is_dir()


def is_voc_list(path: Path) -> bool:
    """True for an ``ImageSets/<task>/<split>.txt`` list inside a VOC root."""
    return path.suffix.lower() == ".txt" and path.parent.parent.name == "ImageSets" and is_voc_root(path.parents[2])


def is_voc_source(path: Path) -> bool:
    """True when ``path`` is a VOC root or a VOC ImageSets list file."""
    return is_voc_root(path) or is_voc_list(path)


def split_source(root: Path, split: str) -> Path:
    """The source a data YAML's ``split: ROOT`` means: ``ROOT/ImageSets/Main/<split>.txt``, or the
    root itself (every annotation) when it has no ``ImageSets/Main`` folder (LabelImg exports)."""
    sets = root / IMAGE_SETS
    if not sets.is_dir():
        return root
    listed = sets / f"{split}.txt"
    if not listed.is_file():
        found = ", ".join(sorted(p.name for p in sets.glob("*.txt") if "_" not in p.stem)) or "none"
        raise ConfigError(f"{listed}: VOC split list not found (lists there: {found}); name a list file instead")
    return listed


def voc_root(source: Path) -> Path:
    """The VOC root of a source (the folder itself, or the root above an ImageSets list)."""
    return source if source.is_dir() else source.parents[2]


def stems(source: Path) -> list[str]:
    """Image stems of a VOC source: the list's first column (``<class>_<split>.txt`` lists carry a
    second, ignored), or every ``Annotations/*.xml`` of a root, sorted."""
    if source.is_dir():
        return sorted(p.stem for p in (source / ANNOTATIONS).glob("*.xml"))
    lines = (line.split() for line in source.read_text().splitlines())
    return [parts[0] for parts in lines if parts and not parts[0].startswith("#")]


def annotation_path(root: Path, stem: str) -> Path:
    return root / ANNOTATIONS / f"{stem}.xml"


def image_path(root: Path, stem: str) -> Path:
    """``JPEGImages/<stem>.jpg``, else the first other image suffix present (VOC's own are .jpg)."""
    default = root / IMAGES / f"{stem}.jpg"
    if default.is_file():
        return default
    for suffix in sorted(IMAGE_SUFFIXES - {".jpg"}):
        for candidate in (root / IMAGES / f"{stem}{suffix}", root / IMAGES / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return default


def files_to_hash(source: Path) -> list[Path]:
    """Every file a VOC source's labels depend on: the list, each annotation and image."""
    root = voc_root(source)
    files = [source] if source.is_file() else []
    for stem in stems(source):
        files += [annotation_path(root, stem), image_path(root, stem)]
    return files


def _number(obj: ET.Element, key: str) -> float:
    text = obj.findtext(f"bndbox/{key}")
    if text is None:
        raise ValueError(f"no bndbox/{key}")
    return float(text)


def _flag(obj: ET.Element, key: str) -> bool:
    return (obj.findtext(key) or "0").strip() in ("1", "true", "True")


def parse_annotation(path: Path) -> tuple[list[VocObject], list[str], str | None]:
    """Read one VOC XML file -> (objects, messages about skipped objects, error or None).

    The error (unreadable or malformed XML) names the file and line; each message names the
    file and the object (1-based, in file order) and why it was skipped.
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        return [], [], f"{path}:{e.position[0]}: malformed XML ({e})"
    except OSError as e:
        return [], [], f"{path}: cannot read annotation ({e.strerror or e})"
    objects, messages = [], []
    for k, obj in enumerate(tree.getroot().iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        where = f"{path}: object {k} ({name or 'no name'})"
        try:
            x1, y1, x2, y2 = (_number(obj, key) for key in _COORDS)
        except ValueError as e:
            messages.append(f"{where}: bad bndbox ({e}), object skipped")
            continue
        if not np.isfinite([x1, y1, x2, y2]).all():
            messages.append(f"{where}: bndbox is not finite, object skipped")
            continue
        if x1 >= x2 or y1 >= y2:
            axis, lo, hi = ("x", x1, x2) if x1 >= x2 else ("y", y1, y2)
            messages.append(f"{where}: {axis}min {lo:g} >= {axis}max {hi:g}, object skipped")
            continue
        objects.append(VocObject(k, name, (x1 - 1, y1 - 1, x2, y2), _flag(obj, "difficult"), _flag(obj, "truncated")))
    return objects, messages, None


def class_names(sources: Iterable[Path]) -> list[str]:
    """Sorted class names found in the annotations of VOC sources (for a YAML without ``names``)."""
    names: set[str] = set()
    for source in sources:
        root = voc_root(source)
        for stem in stems(source):
            objects, _, _ = parse_annotation(annotation_path(root, stem))
            names.update(obj.name for obj in objects)
    return sorted(names)


def _boxes(objects: list[VocObject], names: list[str], height: int, width: int, where: Path):
    """Objects of one image -> (labels [n, 5], difficult [m, 5] as cls cx cy w h normalised, messages)."""
    index = {name: i for i, name in enumerate(names)}
    rows: dict[bool, list[list[float]]] = {False: [], True: []}
    messages = []
    for obj in objects:
        what = f"{where}: object {obj.index} ({obj.name})"
        if obj.name not in index:
            messages.append(f"{what}: unknown class {obj.name!r} (names: {', '.join(names)}), object skipped")
            continue
        x1, y1, x2, y2 = obj.box
        overflow = max(-x1, -y1, x2 - width, y2 - height)
        if overflow > OVERFLOW_NOTE_PX:
            messages.append(f"{what}: box overflows the {width}x{height} image by {overflow:g} px, clipped")
        x1, x2 = np.clip([x1, x2], 0, width) / width
        y1, y2 = np.clip([y1, y2], 0, height) / height
        if x2 <= x1 or y2 <= y1:
            messages.append(f"{what}: box outside the image, object skipped")
            continue
        rows[obj.difficult].append([index[obj.name], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    labels, difficult = (np.array(rows[d], np.float32).reshape(-1, 5) for d in (False, True))
    return labels, difficult, messages


def _scan_one(root: Path, stem: str, names: list[str]) -> tuple[dict | None, list[str], str]:
    """One image and its annotation -> (scan entry or None, messages, count key)."""
    image, xml = image_path(root, stem), annotation_path(root, stem)
    shape, error = verify_image(image)
    if error:
        return None, [f"{image}: {error}"], "corrupt"
    if not xml.is_file():
        return {"file": str(image), "shape": list(shape), "labels": np.zeros((0, 5), np.float32),
                "crowd": np.zeros((0, 5), np.float32)}, [], "missing"
    objects, messages, error = parse_annotation(xml)
    if error:
        return None, messages + [error], "corrupt"
    labels, difficult, notes = _boxes(objects, names, shape[0], shape[1], xml)
    entry = {"file": str(image), "shape": list(shape), "labels": labels, "crowd": difficult}
    return entry, messages + notes, "found" if len(labels) + len(difficult) else "empty"


def scan_voc(source: Path, names: list[str] | None, pool: ThreadPoolExecutor):
    """Entries, messages and counts (found / missing / empty / corrupt) of one VOC source.

    ``names``: the data set's classes (index = class id); required, since VOC names classes by
    string. Entries: ``file``, ``shape`` (h, w), ``labels`` and ``crowd`` (difficult) [n, 5].
    """
    if names is None:
        raise ConfigError(f"{source}: a VOC source needs the data set's class names")
    root = voc_root(source)
    results = list(pool.map(lambda stem: _scan_one(root, stem, names), stems(source)))
    if not results:
        raise ConfigError(f"{source}: no images listed")
    entries = [entry for entry, _, _ in results if entry is not None]
    messages = [m for _, msgs, _ in results for m in msgs]
    counts = {k: sum(key == k for _, _, key in results) for k in ("found", "missing", "empty", "corrupt")}
    return entries, messages, counts
