"""Export a fused model to the formats of ``engine.formats.EXPORT_FORMATS`` (ONNX, TorchScript,
OpenVINO IR), each followed by a parity check against the PyTorch model it came from, and INT8
copies of the formats that have a quantiser (engine/export/quantize.py,
engine/export/openvino_export.py). ``export_model`` reads the table: which writer, in which order
(a converted format after its source), which options apply, where the file goes.

ONNX goes through ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript) by default,
the maintained exporter of torch 2.x; dynamic height and width are declared as multiples of the
model's stride, which torch.export needs to prove the upsample/concat shapes agree. The older
TorchScript-based exporter (``dynamo=False``, deprecated in torch 2.x) stays selectable: it
exports much faster (docs/benchmarks.md) and both pass the same parity checks.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from engine.backends import load_backend
from engine.export.onnx_nms import NmsInputs, append_nms
from engine.export.options import DEFAULT_CALIB
from engine.export.quantize import calibration_batches
from engine.formats import EXPORT_FORMATS, METADATA_KEY, Format, Metadata, format_named, names, resolve
from utils.errors import UserError
from utils.nms import keep_best, non_max_suppression

INT8_SUFFIX = "-int8"  # ExportResult.format of an INT8 copy: onnx-int8, openvino-int8
RTOL = 1e-4  # parity tolerance on raw outputs, relative
ATOL = 1e-5  # absolute floor, for probabilities that are ~0


class ExportError(UserError, RuntimeError):
    """An export or its parity check failed; the message says which and by how much."""


class PredOnly(nn.Module):
    """Eval-mode model -> decoded predictions only, [B, 3, H, W] -> [B, N, 5 + nc]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


@dataclass
class ExportResult:
    """One exported file and the parity check it passed."""

    format: str  # a name of FORMATS, + INT8_SUFFIX for an INT8 copy
    file: Path
    size_mb: float
    check: str
    max_abs_diff: float
    dynamic: bool = False  # free batch and size (else the file runs at its export shape only)

    def to_dict(self) -> dict:
        return {"format": self.format, "file": str(self.file), "size_mb": round(self.size_mb, 3),
                "check": self.check, "max_abs_diff": self.max_abs_diff}


def metadata(model: nn.Module, img_size: tuple[int, int], batch: int, dynamic: bool,
             nms_options: dict | None = None) -> Metadata:
    """The self-description stored in an exported file (read back by engine.backends)."""
    return Metadata(names=list(model.names), stride=int(model.stride.max()),
                    img_size=None if dynamic else tuple(img_size), batch=None if dynamic else batch,
                    nms=nms_options is not None, nms_options=nms_options or {}, default_img_size=max(img_size))


@dataclass(frozen=True)
class ExportSpec:
    """How one file is written, as a writer of FORMATS is given it: input [batch, 3, *img_size]
    (H, W), ``dynamic`` (free batch and size), ``nms_options`` (conf_thres, iou_thres, max_det,
    agnostic; None: no NMS in this file), the ONNX ``opset`` and ``exporter``."""

    img_size: tuple[int, int]
    batch: int = 1
    dynamic: bool = False
    nms_options: dict | None = None
    opset: int = 18
    exporter: str = "dynamo"

    def for_format(self, fmt: Format) -> ExportSpec:
        """This spec as ``fmt`` supports it: NMS only where it can be inside, dynamic where
        --dynamic applies or the format is always shape-free."""
        return dataclasses.replace(self, dynamic=(self.dynamic and fmt.dynamic) or not fmt.fixed_shape,
                                   nms_options=self.nms_options if fmt.nms else None)

    def metadata(self, model: nn.Module) -> Metadata:
        """The metadata a file written to this spec carries."""
        return metadata(model, self.img_size, self.batch, self.dynamic, self.nms_options)


def export_onnx(model: nn.Module, path: Path, img_size: tuple[int, int], *, batch: int = 1, dynamic: bool = False,
                nms: bool = False, conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                agnostic: bool = False, opset: int = 18, exporter: str = "dynamo") -> Path:
    """Write ``model`` (eval mode, fused) to ``path`` as ONNX.

    Input ``images`` float [B, 3, H, W] in 0..1. Output ``pred`` [B, N, 5 + nc] decoded, or
    with ``nms`` ``detections`` [K, 7] (see engine.export.onnx_nms). ``dynamic`` frees B, H and W
    (H, W multiples of the stride). ``exporter``: 'dynamo' (torch.export, the maintained path)
    or 'torchscript' (the deprecated tracer: faster to export, same outputs).
    """
    if opset < 17:
        raise ExportError(f"opset {opset}: ONNX export needs opset >= 17")
    wrapper = NmsInputs(model, agnostic) if nms else PredOnly(model)
    outputs = ["boxes", "scores", "classes"] if nms else ["pred"]
    x = torch.zeros(batch if not dynamic else max(batch, 2), 3, *img_size, device=next(model.parameters()).device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations inside torch.export / torch.jit)
        if exporter == "dynamo":
            proto = _dynamo_export(wrapper.eval(), x, outputs, opset, int(model.stride.max()) if dynamic else None)
        elif exporter == "torchscript":
            proto = _torchscript_export(wrapper.eval(), x, outputs, opset, dynamic)
        else:
            raise ExportError(f"unknown ONNX exporter {exporter!r} (dynamo, torchscript)")
    nms_options = None
    if nms:
        proto = append_nms(proto, conf_thres, iou_thres, max_det)
        nms_options = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det, "agnostic": agnostic}
    meta = metadata(model, img_size, batch, dynamic, nms_options)
    onnx.helper.set_model_props(proto, {METADATA_KEY: meta.to_json()})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def _dynamo_export(wrapper: nn.Module, x: torch.Tensor, outputs: list[str], opset: int,
                   dynamic_stride: int | None) -> onnx.ModelProto:
    """torch.export-based ONNX; ``dynamic_stride`` frees batch and H, W (multiples of it)."""
    shapes = None
    if dynamic_stride:
        s = dynamic_stride
        # the example batch is 2: torch.export specialises dimensions of size 1
        shapes = ({0: torch.export.Dim("batch", min=1, max=1024),
                   2: s * torch.export.Dim("height_blocks", min=1, max=8192 // s),
                   3: s * torch.export.Dim("width_blocks", min=1, max=8192 // s)},)
    program = torch.onnx.export(wrapper, (x,), None, dynamo=True, opset_version=opset, input_names=["images"],
                                output_names=outputs, dynamic_shapes=shapes, external_data=False, verbose=False)
    return program.model_proto


def _torchscript_export(wrapper: nn.Module, x: torch.Tensor, outputs: list[str], opset: int,
                        dynamic: bool) -> onnx.ModelProto:
    """The tracing ONNX exporter; ``dynamic`` frees batch, H and W of the input and the outputs."""
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        axes |= {name: {0: "batch", 1 + (name == "scores"): "anchors"} for name in outputs}
    buffer = io.BytesIO()
    torch.onnx.export(wrapper, (x,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                      output_names=outputs, dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def export_torchscript(model: nn.Module, path: Path, img_size: tuple[int, int], batch: int = 1) -> Path:
    """Trace ``model`` (eval mode, fused) at [batch, 3, *img_size] and save it with its metadata.

    Tracing records shapes symbolically, so the file also runs at other batch sizes and sizes
    (multiples of the stride); the metadata therefore marks it dynamic.
    """
    x = torch.zeros(batch, 3, *img_size, device=next(model.parameters()).device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        traced = torch.jit.trace(PredOnly(model).eval(), x, strict=False, check_trace=False)  # checked below
    meta = metadata(model, img_size, batch, dynamic=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
        torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: meta.to_json()})
    return path


def write_onnx(model: nn.Module, path: Path, spec: ExportSpec, files: dict[str, Path]) -> Path:
    """The writer of FORMATS' 'onnx' (``export_onnx`` to ``spec``)."""
    return export_onnx(model, path, spec.img_size, batch=spec.batch, dynamic=spec.dynamic,
                       nms=spec.nms_options is not None, **(spec.nms_options or {}), opset=spec.opset,
                       exporter=spec.exporter)


def write_torchscript(model: nn.Module, path: Path, spec: ExportSpec, files: dict[str, Path]) -> Path:
    """The writer of FORMATS' 'torchscript' (``export_torchscript`` at the spec's input)."""
    return export_torchscript(model, path, spec.img_size, spec.batch)


def compare(name: str, out: torch.Tensor, ref: torch.Tensor) -> float:
    """Max absolute difference; ExportError unless |out - ref| <= RTOL |ref| + ATOL everywhere."""
    if out.shape != ref.shape:
        raise ExportError(f"{name}: output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}")
    diff = (out - ref).abs()
    bad = diff > RTOL * ref.abs() + ATOL
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        raise ExportError(f"{name}: output differs from PyTorch beyond rtol={RTOL}: "
                          f"{out.flatten()[i]:.6g} vs {ref.flatten()[i]:.6g} (max abs diff {diff.max():.3g})")
    return float(diff.max())


def sorted_detections(det: torch.Tensor) -> torch.Tensor:
    """[n, 6] detections ordered by (score desc, class, x1, y1) so two NMS outputs compare row by row."""
    keys = [det[:, 1], det[:, 0], det[:, 5], -det[:, 4]]  # np.lexsort: last key is primary
    return det[torch.from_numpy(np.lexsort([k.cpu().numpy() for k in keys]))]


def check_detections(name: str, dets: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """Same detections per image (count, classes exact; boxes and scores within tolerance)."""
    worst = 0.0
    for i, (det, ref) in enumerate(zip(dets, refs, strict=False)):
        if len(det) != len(ref):
            raise ExportError(f"{name}: image {i}: {len(det)} detections, PyTorch NMS gives {len(ref)}")
        det, ref = sorted_detections(det), sorted_detections(ref)
        if not torch.equal(det[:, 5], ref[:, 5]):
            raise ExportError(f"{name}: image {i}: detected classes differ from PyTorch NMS")
        worst = max(worst, compare(f"{name} image {i}", det[:, :5], ref[:, :5]) if len(det) else 0.0)
    return worst


def check_threshold(pred: torch.Tensor, count: int = 100) -> float:
    """A score threshold (<= 0.001) that ~``count`` boxes per image pass: [B, N, 5 + nc] -> float.

    Scores as utils.nms computes them (obj * class, obj alone with one class). Untrained models
    score ~1e-5, so a fixed 0.001 would compare empty outputs.
    """
    scores = pred[..., 4] if pred.shape[-1] == 6 else (pred[..., 5:] * pred[..., 4:5]).amax(-1)
    kth = scores.topk(min(count, scores.shape[1]), dim=1).values[:, -1].min()
    return min(0.001, float(kth) * 0.999)


def check_export(path: Path, model: nn.Module, x: torch.Tensor, nms_options: dict | None = None) -> tuple[str, float]:
    """Run the exported file on ``x`` through engine.backends and compare it with ``model``.

    Raw outputs must agree within RTOL; an NMS graph must give the same detections as
    utils.nms on the PyTorch outputs, at a threshold low enough for boxes to compare even from
    an untrained model (see check_threshold). Returns (a description of the check passed, max abs diff).
    """
    backend = load_backend(path, x.device)
    with torch.no_grad():
        ref = model(x)[0]
    if nms_options is None:
        diff = compare(path.name, backend(x), ref)
        return f"raw outputs equal PyTorch within rtol {RTOL} (max abs diff {diff:.2e})", diff
    conf, iou = check_threshold(ref), nms_options["iou_thres"]
    refs = non_max_suppression(ref, conf, iou, agnostic=nms_options["agnostic"], max_det=nms_options["max_det"])
    # the graph caps boxes per class; like Predictor, keep the best max_det of each image
    dets = [keep_best(d, nms_options["max_det"]) for d in backend(x, conf, iou)]
    diff = check_detections(path.name, dets, refs)
    count = sum(len(r) for r in refs)
    return f"same {count} detections as PyTorch + utils.nms at conf {conf:.3g} (max abs diff {diff:.2e})", diff


def check_int8(path: Path, model: nn.Module, x: torch.Tensor, nms_options: dict | None, calib_images: int
               ) -> tuple[str, float]:
    """Run an INT8 file on ``x``; describe how far it is from ``model`` (no tolerance: INT8 is judged
    by its mAP). Returns (the description, max abs diff of the raw outputs, or 0 with NMS inside)."""
    backend = load_backend(path, x.device)
    with torch.no_grad():
        ref = model(x)[0]
    if nms_options is not None:
        count = sum(len(d) for d in backend(x))
        return f"runs ({count} detections on the check input; calibrated on {calib_images} images)", 0.0
    out = backend(x)
    if out.shape != ref.shape:
        raise ExportError(f"{path.name}: output shape {tuple(out.shape)} != PyTorch {tuple(ref.shape)}")
    diff = float((out - ref).abs().max())
    return f"runs (max abs diff {diff:.3g} from PyTorch; calibrated on {calib_images} images)", diff


def file_size_mb(path: Path, fmt: Format) -> float:
    """Size of an exported file in MB; a format written as a folder (an OpenVINO .xml + .bin) counts
    every file in it."""
    files = list(path.parent.iterdir()) if fmt.folder else [path]
    return sum(f.stat().st_size for f in files) / 1e6


def export_model(model: nn.Module, stem: Path, formats: list[str], img_size: tuple[int, int], *, batch: int = 1,
                 dynamic: bool = False, nms: bool = False, conf_thres: float = 0.25, iou_thres: float = 0.45,
                 max_det: int = 300, agnostic: bool = False, opset: int = 18, exporter: str = "dynamo",
                 int8: bool = False, calib_sources: list[Path] | None = None, calib: int = DEFAULT_CALIB
                 ) -> list[ExportResult]:
    """Export a fused eval-mode ``model`` to each of ``formats`` (names of EXPORT_FORMATS) at
    ``Format.path(stem)`` (stem.onnx, stem.torchscript, stem_openvino_model/, ...) and check each
    against it (raw outputs or NMS detections).

    ``nms`` and ``dynamic`` apply to the formats that support them (``Format.nms``,
    ``Format.dynamic``); the others are written without. ``int8`` adds an INT8 copy
    (``Format.path(stem, int8=True)``) of each format that has a quantiser, calibrated on
    ``calib`` images of ``calib_sources`` (a training split); their check reports the difference
    from PyTorch without a tolerance (INT8 is judged by its mAP: engine.export.accuracy).
    Raises ExportError when a check fails.
    """
    exported = [f.name for f in EXPORT_FORMATS]
    unknown = [f for f in formats if f not in exported]
    if unknown:
        raise ExportError(f"unknown format {unknown[0]!r} ({', '.join(exported)})")
    rows = [format_named(name) for name in dict.fromkeys(formats)]
    quantised = [f for f in rows if f.quantizer]
    if int8 and not calib_sources:
        raise ExportError("--int8 needs calibration images (--data)")
    if int8 and not quantised:
        raise ExportError(f"--int8: none of {', '.join(f.name for f in rows)} has an INT8 copy "
                          f"(formats that have: {names(tuple(f for f in EXPORT_FORMATS if f.quantizer))})")
    device = next(model.parameters()).device
    x = torch.rand(batch, 3, *img_size, generator=torch.Generator().manual_seed(0)).to(device)
    nms_options = {"conf_thres": conf_thres, "iou_thres": iou_thres, "max_det": max_det,
                   "agnostic": agnostic} if nms else None
    spec = ExportSpec(tuple(img_size), batch, dynamic, nms_options, opset, exporter)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        files, specs = {}, {}
        for fmt in _write_order(rows):  # a source not asked for is written to the temporary folder
            specs[fmt.name] = spec.for_format(fmt)
            path = fmt.path(stem if fmt in rows else Path(tmp) / stem.name)
            files[fmt.name] = resolve(fmt.writer)(model, path, specs[fmt.name], files)
        for fmt in rows:
            path, options = files[fmt.name], specs[fmt.name].nms_options
            check, diff = check_export(path, model, x, options)
            results.append(ExportResult(fmt.name, path, file_size_mb(path, fmt), check, diff, specs[fmt.name].dynamic))
        if int8:
            batches = calibration_batches(calib_sources, len(model.names), img_size, batch, calib,
                                          int(model.stride.max()))
            for fmt in quantised:
                meta = dataclasses.replace(specs[fmt.name].metadata(model), precision="int8")
                path = resolve(fmt.quantizer)(files[fmt.name], fmt.path(stem, int8=True), batches, meta)
                check, diff = check_int8(path, model, x, specs[fmt.name].nms_options, len(batches) * batch)
                results.append(ExportResult(fmt.name + INT8_SUFFIX, path, file_size_mb(path, fmt), check, diff,
                                            specs[fmt.name].dynamic))
    return results


def _write_order(rows: list[Format]) -> list[Format]:
    """``rows`` with the sources of converted formats added, each source before its conversions."""
    order = []
    for fmt in rows:
        for needed in ([format_named(fmt.source)] if fmt.source else []) + [fmt]:
            if needed not in order:
                order.append(needed)
    return order
