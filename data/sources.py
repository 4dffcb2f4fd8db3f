"""Where images and labels are: image folders, .txt lists, YOLO label paths, COCO annotation files."""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path

from utils.coco_json import check_instances
from utils.config import ConfigError

IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}


def is_coco_json(source: Path) -> bool:
    """True when ``source`` is a COCO annotation file (a .json) rather than images."""
    return source.suffix.lower() == ".json"


def files_in_folder(folder: Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Files below ``folder`` (recursive, sorted) whose lower-cased suffix is in ``suffixes``."""
    return [Path(p) for p in folder_files(folder, suffixes)]


def folder_files(folder: Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[str]:
    """``files_in_folder`` as strings, in the same order, found as ``Path.rglob`` finds them (links
    to folders are not entered, unreadable folders are skipped) but with one ``os.scandir`` per
    folder and no Path or ``stat`` per file: COCO's 118k images cost seconds that way."""
    root = str(folder)
    out: list[str] = []
    _walk("" if root == "." else root if root.endswith("/") else root + "/", suffixes, out)
    return out


def _walk(prefix: str, suffixes: Collection[str], out: list[str]) -> None:
    """Append the matching files below ``prefix`` (a folder, "" or ending in "/") to ``out`` in
    Path order (by parts: each folder's entries by name, a subfolder's files in its place)."""
    try:
        with os.scandir(prefix or ".") as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except PermissionError:
        return
    for entry in listed:
        if entry.is_dir(follow_symlinks=False):
            _walk(prefix + entry.name + "/", suffixes, out)
        elif suffix(entry.name).lower() in suffixes and entry.is_file():  # a link counts by its target
            out.append(prefix + entry.name)


def files_in_list(list_file: Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Paths named in a .txt list, one a line, in list order, keeping those with a suffix in ``suffixes``.

    Blank lines and lines starting with '#' are skipped; relative paths resolve against the
    list's folder, as in YOLOv7's coco/train2017.txt.
    """
    return [Path(p) for p in listed_files(list_file, suffixes)]


def listed_files(list_file: Path, suffixes: Collection[str] = IMAGE_SUFFIXES) -> list[str]:
    """``files_in_list`` as strings: the label cache's key needs only the names, and a Path per
    line costs most of a second at COCO's 118k lines."""
    lines = [line.strip() for line in list_file.read_text().splitlines()]
    files = _resolve_all([line for line in lines if line and not line.startswith("#")], list_file.parent)
    return [p for p in files if suffix(p).lower() in suffixes]


def suffix(path: str) -> str:
    """``Path(path).suffix`` without making a Path (a leading dot starts no suffix)."""
    name = path[path.rfind("/") + 1:]
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def _links(folder: str) -> set[str]:
    """Names of the symbolic links in ``folder`` (none when it cannot be read): one read of the
    folder, where an ``islink`` per file is a system call per file."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.is_symlink()}
    except OSError:
        return set()


def _resolve_all(names: list[str], base: Path) -> list[str]:
    """``str((base / name).resolve())`` of each name, each folder resolved (and its links listed)
    once: COCO's 118k lines would otherwise look up every folder of every path; a name that is
    itself a link resolves in full."""
    folders: dict[str, tuple[str, set[str]]] = {}
    out = []
    for name in names:
        cut = name.rfind("/") + 1
        head, leaf = name[:cut], name[cut:]  # head keeps its slash: "/x.jpg" is absolute, "x.jpg" is not
        if head not in folders:
            resolved = str(Path(base, head).resolve())
            folders[head] = resolved, _links(resolved)
        resolved, links = folders[head]
        path = os.path.join(resolved, leaf)
        out.append(str(Path(path).resolve()) if leaf in ("", ".", "..") or leaf in links else path)
    return out


def list_images(source: Path) -> list[Path]:
    """Image files of a source: a folder (searched recursively), a .txt list, or one image.

    Raises ConfigError naming the source when it does not exist or holds no images.
    """
    return [Path(p) for p in image_names(source)]


def image_names(source: Path) -> list[str]:
    """``list_images`` as strings (for the label cache's key, which needs no Path per image)."""
    if source.is_dir():
        files = folder_files(source)
    elif source.is_file() and source.suffix.lower() == ".txt":
        files = listed_files(source)
    elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        files = [str(source)]
    else:
        raise ConfigError(f"{source}: image source not found (an image folder, a .txt list or a COCO .json)")
    if not files:
        raise ConfigError(f"{source}: no images found")
    return files


def label_path(image: Path) -> Path:
    """YOLO label file of an image: the last ``images`` folder in its path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def default_cache_path(sources: list[Path]) -> Path:
    """Where the label cache of ``sources`` lives: beside the label folder, the list or the json."""
    first = sources[0]
    if first.is_dir():
        labels = label_path(first / "x.jpg").parent
        return labels.with_name(labels.name + ".cache.npz")
    return first.with_name(first.stem + ".cache.npz")


def coco_image_dir(json_path: Path) -> Path:
    """Image folder of a COCO annotation file ``.../annotations/instances_<split>.json``.

    Looks for ``images/<split>`` and ``<split>`` beside the annotations folder (the layouts of
    the official download and of ultralytics' coco.yaml), then beside the json itself.
    """
    split = json_path.stem.split("_", 1)[-1]
    candidates = [
        json_path.parent.parent / "images" / split,
        json_path.parent.parent / split,
        json_path.parent / "images" / split,
        json_path.parent / split,
        json_path.parent / "images",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"{json_path}: image folder not found (looked for {', '.join(map(str, candidates[:2]))})")


def read_coco(json_path: Path) -> dict:
    """Load a COCO annotation file and check its schema (utils.coco_json.check_instances: unique
    ids, finite boxes, positive sizes, file names); errors name the file and the entry."""
    try:
        data = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{json_path}: cannot read COCO json ({e})") from None
    check_instances(data, json_path, need_files=True)
    return data


def coco_image_path(image_dir: Path, file_name: str, json_path: Path) -> Path:
    """``image_dir / file_name``; ConfigError when the name leaves the image folder (absolute, or
    ``..`` above it): a json must not make the loader open files elsewhere."""
    relative = Path(os.path.normpath(file_name))
    if relative.is_absolute() or relative.parts[:1] == ("..",):
        raise ConfigError(f"{json_path}: file_name {file_name!r} points outside the image folder {image_dir}")
    return image_dir / relative
