"""torch.hub entry points, as YOLOv7 offers them:

    detector = torch.hub.load("path/to/elan-yolo", "custom", "best.pt", source="local")
    detector = torch.hub.load("path/to/elan-yolo", "yolov7_tiny", source="local")   # untrained
    results = detector("image.jpg")   # engine.detector.Detector: predict / train / val / export

One entry per model config in cfg/ (``-`` read as ``_``), plus ``yolor_csp_x`` (yolor-csp at scale x).
"""

from pathlib import Path

from engine.detector import Detector

dependencies = ["torch", "torchvision", "numpy", "cv2", "yaml"]
CONFIGS = sorted(p.stem for p in (Path(__file__).parent / "cfg").glob("*.yaml")) + ["yolor-csp-x"]


def custom(path: str, device: str = "") -> Detector:
    """A detector from a weights file: a checkpoint of ours, an official YOLOv7 .pt, or an export."""
    return Detector(path, device=device)


def _config_entry(name: str):
    def entry(weights: str | None = None, device: str = "") -> Detector:
        return Detector(weights or f"{name}.yaml", device=device)

    entry.__name__ = name.replace("-", "_")
    entry.__doc__ = (f"{name}: untrained from cfg/, or ``weights=`` a checkpoint of this model (the file's own "
                     "model is used).")
    return entry


for _name in CONFIGS:
    globals()[_name.replace("-", "_")] = _config_entry(_name)
