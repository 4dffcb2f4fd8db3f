"""Model zoo: YAML-built ELAN / CSP detectors (``Model``), their blocks, head and loss."""

from models.yolo import Model

__all__ = ["Model"]
