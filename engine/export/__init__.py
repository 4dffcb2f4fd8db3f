"""Export (export.py): ``export_model`` writes ONNX / TorchScript files, each checked against the
PyTorch model. Modules: ``exporter`` (the formats), ``onnx_nms`` (NMS inside the ONNX graph).
"""

from engine.export.exporter import ExportError, export_model

__all__ = ["ExportError", "export_model"]
