"""Model zoo: YAML-built ELAN / CSP detectors (``Model``), their blocks, head and loss."""

from models.checkpoint_io import load_model
from models.yolo import Model

__all__ = ["Model", "load_model"]
