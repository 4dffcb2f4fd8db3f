"""export.py's flags, declared once (the parser is derived from them by utils.cli); the formats,
their choices and what each supports come from ``engine.formats.EXPORT_FORMATS``."""

from __future__ import annotations

from dataclasses import dataclass

from engine.formats import EXPORT_FORMATS, names
from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, option

DEFAULT_CALIB = 300  # INT8 calibration images: NNCF's own default subset size
_NMS = names(tuple(f for f in EXPORT_FORMATS if f.nms))
_DYNAMIC = names(tuple(f for f in EXPORT_FORMATS if f.dynamic))
_INT8 = names(tuple(f for f in EXPORT_FORMATS if f.quantizer))


@dataclass
class ExportOptions:
    """What export.py is run with; see export.py --help."""

    weights: str = option("", "checkpoint of this project", required=True)
    include: list[str] = option([f.name for f in EXPORT_FORMATS if f.by_default],
                                f"formats: {names(EXPORT_FORMATS, notes=True)}",
                                choices=[f.name for f in EXPORT_FORMATS])
    img_size: list[int] | None = option(None, "input size: H [W] (default: the checkpoint's validation size)",
                                        aliases=["--img"], at_least=MIN_IMG_SIZE, at_most=MAX_IMG_SIZE)
    batch_size: int = option(1, "batch size of the traced input", at_least=1)
    device: str = option("cpu", "cpu or a CUDA index (the export traces on it)")
    dynamic: bool = option(False, f"{_DYNAMIC}: dynamic batch, height and width")
    nms: bool = option(False, f"{_NMS}: NonMaxSuppression inside the graph (other formats are written without)",
                       shortcuts={"--end2end": True, "--include-nms": True})  # YOLOv7's two names for it
    conf_thres: float = option(0.25, "--nms default score threshold", at_least=0.0, at_most=1.0)
    iou_thres: float = option(0.45, "--nms default IoU threshold", at_least=0.0, at_most=1.0)
    max_det: int = option(300, "--nms boxes kept per image and class", at_least=1, aliases=["--topk-all"])
    agnostic_nms: bool = option(False, "--nms across classes")
    opset: int = option(18, "ONNX opset (>= 17)", at_least=17)
    onnx_exporter: str = option("dynamo", "torch.onnx.export path: dynamo (torch.export, default) or torchscript "
                                "(deprecated tracer, much faster to export)", choices=["dynamo", "torchscript"])
    int8: bool = option(False, f"also INT8 copies of the {_INT8} files (post-training static quantisation), "
                        f"and every {_INT8} file's mAP beside the checkpoint's on --data's val split")
    data: str | None = option(None, "--int8: data set whose TRAIN split calibrates and whose val split scores "
                              "(default: the checkpoint's training data)")
    calib: int = option(DEFAULT_CALIB, "--int8: calibration images", at_least=1)
    json: bool = option(False, "print the results as one JSON object (last line)")
    # YOLOv7 export.py flags whose job is done another way here
    grid: bool = option(False, inert="every export decodes boxes in the graph (grid included) already")
    simplify: bool = option(False, inert="the graph is written already folded by the exporter; onnx-simplifier "
                            "is not run")
    max_wh: int | None = option(None, inert="--nms uses ONNX NonMaxSuppression per class, which needs no "
                                "class offset (YOLOv7 used it for TensorRT's NMS)")
