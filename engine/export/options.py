"""export.py's flags, declared once (the parser is derived from them by utils.cli)."""

from __future__ import annotations

from dataclasses import dataclass

from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, option

DEFAULT_CALIB = 300  # INT8 calibration images: NNCF's own default subset size
FORMATS = ("onnx", "torchscript", "openvino")  # --include; --int8 adds INT8 copies of onnx / openvino


@dataclass
class ExportOptions:
    """What export.py is run with; see export.py --help."""

    weights: str = option("", "checkpoint of this project", required=True)
    include: list[str] = option(["onnx", "torchscript"], "formats: onnx, torchscript, openvino (an IR folder)",
                                choices=FORMATS)
    img_size: list[int] | None = option(None, "input size: H [W] (default: the checkpoint's validation size)",
                                        aliases=["--img"], at_least=MIN_IMG_SIZE, at_most=MAX_IMG_SIZE)
    batch_size: int = option(1, "batch size of the traced input", at_least=1)
    device: str = option("cpu", "cpu or a CUDA index (the export traces on it)")
    dynamic: bool = option(False, "ONNX: dynamic batch, height and width")
    nms: bool = option(False, "ONNX: NonMaxSuppression inside the graph")
    conf_thres: float = option(0.25, "--nms default score threshold", at_least=0.0, at_most=1.0)
    iou_thres: float = option(0.45, "--nms default IoU threshold", at_least=0.0, at_most=1.0)
    max_det: int = option(300, "--nms boxes kept per image and class", at_least=1)
    agnostic_nms: bool = option(False, "--nms across classes")
    opset: int = option(18, "ONNX opset (>= 17)", at_least=17)
    onnx_exporter: str = option("dynamo", "torch.onnx.export path: dynamo (torch.export, default) or torchscript "
                                "(deprecated tracer, much faster to export)", choices=["dynamo", "torchscript"])
    int8: bool = option(False, "also INT8 copies of the ONNX / OpenVINO files (post-training static quantisation), "
                        "and every file's mAP beside the checkpoint's on --data's val split")
    data: str | None = option(None, "--int8: data set whose TRAIN split calibrates and whose val split scores "
                              "(default: the checkpoint's training data)")
    calib: int = option(DEFAULT_CALIB, "--int8: calibration images", at_least=1)
    json: bool = option(False, "print the results as one JSON object (last line)")
