"""Export (export.py): ``export_model`` writes ONNX / TorchScript files, each checked against the
PyTorch model. Modules: ``options`` (export.py's flags), ``exporter`` (the formats), ``onnx_nms`` (NMS inside the ONNX graph).
"""

from engine.export.exporter import ExportError, export_model
from engine.export.options import ExportOptions

__all__ = ["ExportError", "ExportOptions", "export_model"]
