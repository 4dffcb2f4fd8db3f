"""Data sets and loaders: data-set YAMLs, YOLO/COCO labels, the label cache, augmentation, batches.

Entry points: ``load_data_config`` (a data-set YAML or a built-in name such as ``shapes``),
``build_dataloader`` (sources -> loader yielding ``Batch``), ``letterbox`` (also used by
inference), ``unit_images`` (a batch's uint8 images as the model's input). See docs/design.md, "Data API".
"""

from data.config import DataConfig, datasets_root, load_data_config
from data.dataset import DetectionDataset
from data.loader import Batch, DetectionLoader, build_dataloader, collate, unit_images
from data.transforms import letterbox

__all__ = [
    "Batch",
    "DataConfig",
    "DetectionDataset",
    "DetectionLoader",
    "build_dataloader",
    "collate",
    "datasets_root",
    "letterbox",
    "load_data_config",
    "unit_images",
]
