"""Export (export.py): ``export_model`` writes the formats of ``engine.formats.EXPORT_FORMATS``, each
checked against the PyTorch model; ``run_export`` is export.py's whole job. Modules: ``options``
(export.py's flags), ``run`` (export.py's job), ``exporter`` (writers and parity checks),
``onnx_nms`` (NMS inside the ONNX graph), ``openvino_export`` (the IR), ``quantize`` (INT8),
``accuracy`` (mAP of the files).
"""

from engine.export.exporter import ExportError, export_model
from engine.export.options import ExportOptions
from engine.export.run import run_export

__all__ = ["ExportError", "ExportOptions", "export_model", "run_export"]
