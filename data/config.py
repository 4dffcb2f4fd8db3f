"""Data-set YAML files (YOLOv7 / ultralytics style) loaded into a typed, resolved ``DataConfig``.

A data-set YAML names a root ``path``, per-split sources (``train``, ``val``, ``test``: an image
folder, a .txt list of image paths, a COCO annotation json, a Pascal VOC root (its
``ImageSets/Main/<split>.txt`` is the split) or a VOC ``ImageSets`` list file, or a list of
these), ``nc`` and ``names`` (a list, or a dict {index: name}; without them a VOC data set takes
the sorted names found in its XML files). Relative sources resolve against ``path``; a
relative ``path`` resolves against the YAML's folder, except in the YAMLs shipped in data/
(``shapes``, ``coco``, ``raccoon``), where it resolves against the data-set root
(``$ELAN_YOLO_DATASETS`` or ``<repo>/datasets``), so downloads and generated sets land outside
the source tree; when that folder does not exist but one at ``path`` from the repository root
does (``raccoon``: ``../shared/datasets/raccoon``), that one is used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from data import voc
from utils.config import ConfigError, Range, from_mapping, ranged, read_yaml

LOGGER = logging.getLogger(__name__)
DATA_DIR = Path(__file__).resolve().parent
DATASETS_ENV = "ELAN_YOLO_DATASETS"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class DataFile:
    """The keys a data-set YAML may hold, as written (before resolution)."""

    path: str = ""
    train: str | list[str] | None = None
    val: str | list[str] | None = None
    test: str | list[str] | None = None
    nc: int | None = ranged(None, Range(at_least=1))
    names: list[str] | dict | None = None
    download: str | None = None  # a hint for people (e.g. a script to run); never executed
    generator: str | None = None  # name of a built-in generator (``shapes``) that creates the set


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """A resolved data set: absolute sources per split, class count and names."""

    root: Path
    nc: int
    names: list[str]
    train: list[Path]
    val: list[Path]
    test: list[Path]
    source: str  # the YAML file this came from, for messages

    def split(self, name: str) -> list[Path]:
        """Sources of split ``name`` ('train', 'val' or 'test'); ConfigError when it is empty."""
        if name not in SPLITS:
            raise ConfigError(f"{self.source}: unknown split {name!r} (train, val, test)")
        sources = getattr(self, name)
        if not sources:
            raise ConfigError(f"{self.source}: no {name!r} source")
        return sources


def datasets_root() -> Path:
    """Folder for downloaded and generated data sets: ``$ELAN_YOLO_DATASETS`` or ``<repo>/datasets``."""
    env = os.environ.get(DATASETS_ENV)
    return Path(env).expanduser().resolve() if env else DATA_DIR.parent / "datasets"


def _find_yaml(name_or_path: str | Path) -> Path:
    """A YAML path as given, else one shipped in data/ (``shapes``, ``data/shapes.yaml`` from any folder)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    if path.parent in (Path("."), Path("data")):
        for candidate in (DATA_DIR / path.name, DATA_DIR / f"{path.name}.yaml"):
            if candidate.is_file():
                return candidate
    raise ConfigError(f"{name_or_path}: data-set YAML not found (nor in {DATA_DIR})")


def _names(raw: DataFile, source: str, splits: list[list[Path]]) -> list[str]:
    """Class names as a list; without ``names``: the sorted names in the XML of VOC sources
    (said in the log), else ``class0..`` when ``nc`` is given; checks nc agrees."""
    voc_sources = [s for sources in splits for s in sources if voc.is_voc_source(s)]
    if raw.names is None and voc_sources:
        names = voc.class_names(voc_sources)
        LOGGER.info("%s: no 'names': %d classes from the VOC annotations, sorted: %s", source, len(names), names)
        raw = dataclasses.replace(raw, names=names)
    if isinstance(raw.names, dict):
        try:
            keys = sorted(int(k) for k in raw.names)
        except ValueError:
            raise ConfigError(f"{source}: key 'names': dict keys must be class indices") from None
        if keys != list(range(len(keys))):
            raise ConfigError(f"{source}: key 'names': indices must be 0..{len(keys) - 1}")
        by_index = {int(k): v for k, v in raw.names.items()}
        names = [str(by_index[i]) for i in keys]
    elif raw.names is not None:
        names = list(raw.names)
    elif raw.nc is not None:
        names = [f"class{i}" for i in range(raw.nc)]
    else:
        raise ConfigError(f"{source}: missing key 'names' (or 'nc')")
    if not names:
        raise ConfigError(f"{source}: key 'names': a data set needs at least one class")
    if raw.nc is not None and raw.nc != len(names):
        raise ConfigError(f"{source}: key 'nc' is {raw.nc} but 'names' has {len(names)} entries")
    return names


def _under(root: Path, path: str | Path) -> Path:
    """``path`` with ``~`` expanded; a relative one is taken relative to ``root``."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (root / path).resolve()


def _sources(value: str | list[str] | None, root: Path, split: str) -> list[Path]:
    """A split's sources (one path, a list, or none) as absolute paths; a VOC root becomes its
    ``ImageSets/Main/<split>.txt``."""
    values = [] if value is None else [value] if isinstance(value, str) else value
    paths = [_under(root, v) for v in values]
    return [voc.split_source(p, split) if voc.is_voc_root(p) else p for p in paths]


def _root(raw: DataFile, yaml_path: Path) -> Path:
    """The data set's root: ``path`` against the YAML's folder, or for a YAML shipped in data/
    against the data-set root, else (an existing folder, not a generated set) the repository root."""
    if yaml_path.parent != DATA_DIR:
        return _under(yaml_path.parent, raw.path)
    root = _under(datasets_root(), raw.path)
    in_repo = _under(DATA_DIR.parent, raw.path)
    return in_repo if raw.generator is None and not root.exists() and in_repo.exists() else root


def load_data_config(name_or_path: str | Path) -> DataConfig:
    """Load a data-set YAML (path, or a name of a YAML in data/ such as ``shapes``).

    Built-in generated sets are generated on first use (a few seconds). Raises ConfigError
    naming the file and key for unknown keys, wrong types or inconsistent ``nc``/``names``.
    """
    yaml_path = _find_yaml(name_or_path)
    source = str(yaml_path)
    raw = from_mapping(DataFile, read_yaml(yaml_path), source)
    root = _root(raw, yaml_path)
    if raw.generator is not None:
        _generate(raw.generator, root, _names(raw, source, []), source)
    splits = {split: _sources(getattr(raw, split), root, split) for split in SPLITS}
    names = _names(raw, source, list(splits.values()))
    return DataConfig(root=root, nc=len(names), names=names, source=source, **splits)


def _generate(generator: str, root: Path, names: list[str], source: str) -> None:
    """Run built-in generator ``generator`` into ``root`` unless it is already there."""
    from data import shapes  # local: the generator is only needed for generated sets

    generators = {"shapes": shapes.ensure_shapes}
    if generator not in generators:
        raise ConfigError(f"{source}: key 'generator': unknown {generator!r} (known: {', '.join(generators)})")
    if generator == "shapes" and names != list(shapes.CLASSES):
        raise ConfigError(f"{source}: key 'names': the shapes generator draws {list(shapes.CLASSES)}")
    generators[generator](root)
