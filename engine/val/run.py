"""val.py's work: evaluate a checkpoint or an exported file (.onnx, .torchscript, OpenVINO) on a
data set split and report, as YOLOv7's test.py does; or score a COCO results file against a
ground-truth file."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import build_dataloader, load_data_config
from data.loader import consumer_options
from data.sources import is_coco_json
from engine.backends import BACKENDS, TorchBackend, compile_backend, load_backend
from engine.val.batch_plots import batch_hook
from engine.val.evaluator import TRAIN_METRICS, EvalResult, evaluate, image_keys
from engine.val.report import (
    format_stats,
    pycocotools_stats,
    results_table,
    save_coco_json,
    save_plots,
)
from utils.checkpoint import CheckpointError
from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, NO_TRACE_NOTE, V5_METRIC_NOTE, option
from utils.coco_eval import GroundTruth, coco_evaluate
from utils.coco_json import load_detections, load_ground_truth
from utils.device import select_device
from utils.errors import UserError
from utils.paths import increment_path

STUDY_SIZES = tuple(range(256, 1536 + 128, 128))  # --task study's image sizes (YOLOv7's)


@dataclass
class ValOptions:
    """val.py's command line (YOLOv7 test.py flags); ``plots`` is for the Python API only."""

    weights: str | list[str] = option("", "checkpoint, .onnx, .torchscript or OpenVINO .xml / folder to evaluate; "
                                      "several checkpoints: their ensemble", nargs="+")
    data: str = option("shapes", "data-set YAML or built-in name (default: shapes)")
    batch_size: int = option(32, at_least=1)
    img_size: int = option(640, "inference size (pixels)", aliases=["--img"], at_least=MIN_IMG_SIZE,
                             at_most=MAX_IMG_SIZE)
    conf_thres: float = option(0.001, "object confidence threshold", at_least=0.0, at_most=1.0)
    iou_thres: float = option(0.65, "IoU threshold for NMS", at_least=0.0, at_most=1.0)
    task: str = option("val", "split to evaluate; speed: deployment thresholds, nothing saved; study: mAP and "
                       f"speed at --img {STUDY_SIZES[0]}..{STUDY_SIZES[-1]} into study_<data>_<weights>.txt",
                       choices=["val", "test", "speed", "study"])
    device: str = option("", "'' (cuda if available, else cpu), cpu, 0, ...")
    single_cls: bool = option(False, "treat every class as one")
    augment: bool = option(False, "test-time augmentation (flips and scales)")
    verbose: bool = option(False, "per-class table")
    save_txt: bool = option(False, "save detections as YOLO label files")
    save_conf: bool = option(False, "add the score to --save-txt labels")
    save_json: bool = option(False, "save a COCO results json (and check it with pycocotools)")
    project: str = option("runs/val")
    name: str = option("exp")
    exist_ok: bool = option(False, "reuse project/name instead of incrementing it")
    workers: int = option(0, "data-loader workers", at_least=0)
    gt: str | None = option(None, "COCO ground-truth json (with --dt: score a results file, no model)")
    dt: str | None = option(None, "COCO results json to score against --gt")
    json: bool = option(False, "print one JSON object with the numbers as the last line")
    plots: bool = option(True, cli=False)
    backend: str = option("auto", "what runs --weights (default: by its kind; an .onnx file may also run on "
                          "openvino)", choices=BACKENDS)
    square: bool = option(False, "square-letterboxed batches at --img, as a fixed-shape export is evaluated "
                          "(like-for-like with one)")
    compile: bool = option(False, "torch.compile the model (checkpoints only; the first batches compile)")
    # YOLOv7 test.py flags whose job is done another way here
    save_hybrid: bool = option(False, inert="not supported: it adds the ground-truth labels to the predictions "
                               "(an mAP that means nothing); --save-txt --save-conf writes the predictions")
    v5_metric: bool = option(False, aliases=["--v5_metric"], inert=V5_METRIC_NOTE)
    no_trace: bool = option(False, inert=NO_TRACE_NOTE)


def input_geometry(meta, opt: ValOptions) -> tuple[int, int, bool]:
    """(img_size, batch_size, rect) of the evaluation: a fixed-shape file's own size and batch,
    square-letterboxed; otherwise the options (rect unless ``opt.square``)."""
    if meta.img_size is None:
        return opt.img_size, opt.batch_size, not opt.square
    h, w = meta.img_size
    if h != w:
        raise UserError(f"val.py evaluates square fixed-shape files; this one is {h}x{w} (export it square "
                        "or with --dynamic)", where=opt.weights)
    return h, meta.batch or opt.batch_size, False


def run_val(opt: ValOptions) -> dict:
    """Evaluate ``opt.weights`` on ``opt.data``'s split; print the table and speed, write plots
    (and labels / json when asked) under project/name. Returns the numbers for --json."""
    device = select_device(opt.device)
    if not isinstance(opt.weights, str) and len(opt.weights) == 1:
        opt = dataclasses.replace(opt, weights=opt.weights[0])
    if opt.task == "speed":  # YOLOv7's speed task: deployment thresholds, nothing saved
        opt = dataclasses.replace(opt, conf_thres=0.25, iou_thres=0.45, save_json=False, plots=False)
    split = "test" if opt.task == "test" else "val"
    backend = load_backend(opt.weights, device, opt.backend)
    if opt.compile:
        compile_backend(backend, opt.weights)
    model = backend.model if isinstance(backend, TorchBackend) else backend
    img_size, batch_size, rect = input_geometry(backend.meta, opt)
    if (img_size, batch_size) != (opt.img_size, opt.batch_size) and backend.meta.img_size is not None:
        print(f"{opt.weights}: fixed-shape file, evaluated at its own {img_size}x{img_size}, batch {batch_size}")
    opt = dataclasses.replace(opt, img_size=img_size, batch_size=batch_size)
    data = load_data_config(opt.data)
    if not opt.single_cls and backend.meta.names and len(backend.meta.names) != data.nc:
        # class indices would mean other classes
        raise CheckpointError(f"{opt.weights}: the weights have {len(backend.meta.names)} classes but {data.source} "
                              f"has {data.nc} classes (train on this data set, or pass its own data YAML)")
    sources = data.split(split)
    loader, dataset = build_dataloader(sources, data.nc, img_size=opt.img_size, batch_size=opt.batch_size,
                                       stride=backend.meta.stride, rect=rect, workers=opt.workers,
                                       single_cls=opt.single_cls, names=data.names, **consumer_options(device))
    names = ["item"] if opt.single_cls else list(backend.meta.names or data.names)
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = evaluate(model, loader, conf_thres=opt.conf_thres, iou_thres=opt.iou_thres, single_cls=opt.single_cls,
                      augment=opt.augment, on_batch=batch_hook(save_dir, names, plots=opt.plots, save_txt=opt.save_txt,
                                                                 save_conf=opt.save_conf),
                      ground_truth=_coco_ground_truth(sources, dataset, opt.single_cls, device))
    seconds = time.perf_counter() - start
    print(results_table(result, names, per_class=opt.verbose or (len(names) < 50 and len(names) > 1)))
    pre, inf, nms = result.speed_ms
    print(f"Speed: {pre:.1f}/{inf:.1f}/{nms:.1f} ms pre-process/inference/NMS per {opt.img_size}x{opt.img_size} "
          f"image at batch-size {opt.batch_size} on {device}")
    print(format_stats(result.metrics))
    if opt.plots:
        save_plots(result, names, save_dir)
    summary = {k: result.metrics[k] for k in result.metrics}
    summary.update(speed_ms=list(result.speed_ms), seconds=seconds, images=result.num_images,
                   save_dir=str(save_dir), device=str(device))
    if opt.save_json:
        summary.update(_save_json(result, dataset, sources, opt, save_dir))
    print(f"Results saved to {save_dir}")
    return summary


def run_study(opt: ValOptions) -> dict:
    """YOLOv7's ``--task study``: evaluate ``opt.weights`` at each of STUDY_SIZES (pixels); one row
    per size (size, TRAIN_METRICS, ms per image pre-process / inference / NMS) into
    ``study_<data>_<weights>.txt`` in the run folder. Returns {"study": path, "rows": rows}."""
    rows = []
    summary: dict = {}
    for size in STUDY_SIZES:
        name = Path(summary["save_dir"]).name if summary else opt.name  # every size in one folder
        summary = run_val(dataclasses.replace(opt, task="val", img_size=size, plots=False, name=name,
                                              exist_ok=bool(summary) or opt.exist_ok))
        rows.append([size, *(summary[k] for k in TRAIN_METRICS), *summary["speed_ms"]])
    path = Path(summary["save_dir"]) / f"study_{Path(opt.data).stem}_{_stems(opt.weights)}.txt"
    header = " ".join(["img_size", *TRAIN_METRICS, "ms_preprocess", "ms_inference", "ms_nms"])
    np.savetxt(path, np.array(rows), fmt="%10.4g", header=header)
    print(f"study: {path}")
    return {"study": str(path), "rows": rows}


def _stems(weights: str | list[str]) -> str:
    """The file-name stem(s) of --weights (an ensemble's joined by ``_``)."""
    return "_".join(Path(w).stem for w in ([weights] if isinstance(weights, str) else weights))


def _coco_ground_truth(sources: list[Path], dataset, single_cls: bool, device: torch.device) -> GroundTruth | None:
    """On a one-json COCO split, that file's boxes and segment areas (what pycocotools scores
    against), when its classes are the dataset's; else None (the dataset's labels are used)."""
    annotations = [Path(s) for s in sources if is_coco_json(Path(s))]
    if single_cls or len(annotations) != 1 or len(sources) != 1:
        return None
    ref = load_ground_truth(annotations[0], device)
    ids = [int(i) for i in dataset.image_ids]
    if ref.category_ids != list(dataset.category_ids) or len(set(ids)) != len(ids):
        return None
    return ref.gt


def _save_json(result: EvalResult, dataset, sources: list[Path], opt: ValOptions, save_dir: Path) -> dict:
    """Write the COCO results json; on a COCO-json data set also score it with pycocotools."""
    indices = list(range(len(dataset)))
    keys = image_keys(dataset, indices)
    key_to_id = {k: int(dataset.image_ids[i]) for k, i in zip(keys, indices, strict=True)}
    path = save_coco_json(result, key_to_id, dataset.category_ids,
                          save_dir / f"{_stems(opt.weights)}_predictions.json")
    print(f"COCO results json: {path}")
    out = {"json": str(path)}
    annotations = [s for s in sources if is_coco_json(Path(s))]
    if len(annotations) == 1 and result.detections.scores.numel():
        theirs = pycocotools_stats(annotations[0], path, list(key_to_id.values()))
        # Both score the same boxes and areas; only the json's rounding (boxes 1e-3 px, scores 1e-5) differs.
        print(format_stats(result.metrics, theirs, "pycocotools"))
        out["pycocotools"] = theirs
    return out


def evaluate_files(gt_path: str, dt_path: str, device: str) -> tuple[dict[str, float], float]:
    """The 12 COCO numbers for a results file against a ground-truth file, and the seconds the
    metric itself took (reading json excluded)."""
    dev = select_device(device)
    ref = load_ground_truth(gt_path, dev)
    dt = load_detections(dt_path, ref, dev)
    start = time.perf_counter()
    stats = coco_evaluate(ref.gt, dt, len(ref.category_ids)).as_dict()
    return stats, time.perf_counter() - start
