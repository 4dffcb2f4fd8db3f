"""Inference (detect.py, and the Python API): ``Predictor`` runs a checkpoint / .onnx / .torchscript /
OpenVINO file on images; ``run_detect`` is detect.py's whole job over a ``Source``.

Modules: ``predictor`` (the API), ``sources`` (images, folders, videos, streams), ``run``
(detect.py's job: draw, save). The readers of weights files are engine.backends (shared with
evaluation and export); ``load_backend`` and ``BackendError`` are re-exported here.
"""

from engine.backends import BackendError, load_backend
from engine.detect.predictor import Detections, Predictor
from engine.detect.run import DetectOptions, run_detect
from engine.detect.sources import Source, SourceError

__all__ = ["BackendError", "DetectOptions", "Detections", "Predictor", "Source", "SourceError", "load_backend",
           "run_detect"]
