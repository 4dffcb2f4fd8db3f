"""The evaluation val.py runs and the trainer calls after each epoch.

``evaluate(model, loader, ...)`` runs the model (or an exported file's backend) over a validation loader, post-processes on the
model's device, maps detections back to original-image pixels and scores them with the COCO
metric (utils/coco_eval.py, equal to pycocotools) plus YOLO's P / R / F1 and confusion matrix.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from data import unit_images
from engine.backends import Backend, call_fixed_batch
from engine.tta import tta_forward
from models.loss import LossItems
from utils.boxes import letterbox_to_original
from utils.coco_eval import CocoResult, DatasetDetections, GroundTruth, accumulate, match, summarize
from utils.detection_metrics import F1Result, best_f1, confusion_matrix
from utils.nms import keep_best, non_max_suppression


def _logged_as(name: str) -> Any:
    """A TrainMetrics field logged under ``name``."""
    return dataclasses.field(metadata={"name": name})


@dataclass(frozen=True)
class TrainMetrics:
    """The metrics a training logs of each evaluation, each under its own name: results.csv
    ``metrics/<name>`` columns (in this order), TensorBoard tags and results.png panels derive
    from these fields (engine/train/log.py). 0 where undefined."""

    precision: float = _logged_as("precision")  # mean over classes with labels, at the best mean F1
    recall: float = _logged_as("recall")  # the same
    map50: float = _logged_as("mAP_0.5")  # COCO AP50
    map50_95: float = _logged_as("mAP_0.5:0.95")  # COCO AP

    def by_name(self) -> dict[str, float]:
        """The values under their logged names, in field order."""
        return {f.metadata["name"]: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def zeros(cls) -> TrainMetrics:
        """Every metric 0 (an epoch that was not validated)."""
        return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})


# The logged names of TrainMetrics; EvalResult.metrics also holds COCO's 12 numbers under their
# STAT_NAMES.
TRAIN_METRICS = tuple(f.metadata["name"] for f in dataclasses.fields(TrainMetrics))

# on_batch(batch, dets_input, dets_original): per image [n, 6] (x1, y1, x2, y2, score, class) in
# network-input and in original-image pixels; val.py uses it to save labels and to plot the first batches.
BatchHook = Callable[[object, list[Tensor], list[Tensor]], None]


@dataclass
class EvalResult:
    """What one evaluation produced; ``train_metrics`` is what the trainer logs."""

    train_metrics: TrainMetrics
    metrics: dict[str, float]  # train_metrics under TRAIN_METRICS names and COCO's 12 STAT_NAMES (-1: undefined)
    losses: LossItems  # mean validation loss per batch; zeros without loss_fn
    coco: CocoResult
    f1: F1Result
    confusion: Tensor  # int64 [K + 1, K + 1], rows predicted, columns true, K = background
    num_images: int
    num_labels: Tensor  # int64 [K] non-crowd ground truths per class
    speed_ms: tuple[float, float, float]  # per image: pre-process, inference, NMS
    gt: GroundTruth  # original pixels, xywh; image = dataset image id
    detections: DatasetDetections  # same conventions, classes contiguous


def _sync(device: torch.device) -> float:
    """Wall time after the device's queued work finished (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _to_original(dets: list[Tensor], shapes: list) -> list[Tensor]:
    """Map per-image [n, 6] xyxy input-pixel detections to original-image pixels, clipped.
    ``shapes`` per image: ((h0, w0), ((w_gain, h_gain), (pad_w, pad_h)))."""
    out = []
    for d, (original, (gain, pad)) in zip(dets, shapes, strict=True):
        out.append(torch.cat([letterbox_to_original(d[:, :4], gain, pad, original), d[:, 4:]], 1))
    return out


def dataset_ground_truth(dataset, indices: list[int], image_keys: list[int], device: torch.device) -> GroundTruth:
    """Ground truth of dataset images ``indices`` in original pixels (xywh, area w*h), crowd
    boxes included and flagged; ``image_keys`` name the images (same order)."""
    rows, crowd, image = [], [], []
    for i, key in zip(indices, image_keys, strict=True):
        w0, h0 = dataset.shapes[i]
        for labels, is_crowd in ((dataset.labels[i], False), (dataset.crowd[i], True)):
            lab = np.asarray(labels, np.float64).reshape(-1, 5)
            xywh = np.stack([(lab[:, 1] - lab[:, 3] / 2) * w0, (lab[:, 2] - lab[:, 4] / 2) * h0,
                             lab[:, 3] * w0, lab[:, 4] * h0], 1)
            rows.append(np.concatenate([lab[:, :1], xywh], 1))
            crowd += [is_crowd] * len(lab)
            image += [key] * len(lab)
    table = torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, 5))).to(device)
    boxes = table[:, 1:]
    return GroundTruth(torch.tensor(image, dtype=torch.long, device=device), table[:, 0].long(), boxes,
                       boxes[:, 2] * boxes[:, 3], torch.tensor(crowd, dtype=torch.bool, device=device))


def image_keys(dataset, indices: list[int]) -> list[int]:
    """The dataset's image ids when they are unique (so ties break as pycocotools breaks them
    on the saved json), else the dataset indices."""
    ids = [int(dataset.image_ids[i]) for i in indices]
    return ids if len(set(ids)) == len(ids) else list(indices)


def _detections(dets: list[Tensor], keys: list[int], device: torch.device) -> DatasetDetections:
    """Concatenate per-image [n, 6] xyxy detections into COCO-convention DatasetDetections (xywh)."""
    d = torch.cat(dets) if dets else torch.zeros(0, 6, device=device)
    image = torch.repeat_interleave(torch.tensor(keys, dtype=torch.long, device=device),
                                    torch.tensor([len(x) for x in dets], device=device))
    box = d[:, :4].double()
    return DatasetDetections(image, d[:, 5].long(), torch.cat([box[:, :2], box[:, 2:] - box[:, :2]], 1), d[:, 4].double())


def _file_forward(backend: Backend, images: Tensor, conf_thres: float, iou_thres: float,
                  max_det: int) -> Tensor | list[Tensor]:
    """An exported file's output for a batch, run at its fixed batch size: decoded [B, N, 5 + nc],
    or with NMS in the graph (its single-label NMS, given val's thresholds) per image [n, 6]."""
    if not backend.meta.nms:
        return call_fixed_batch(backend, images, backend.meta.batch)
    dets = call_fixed_batch(lambda x: backend(x, conf_thres=conf_thres, iou_thres=iou_thres), images,
                            backend.meta.batch)
    return [keep_best(d, max_det) for d in dets]  # the graph caps per class


@torch.no_grad()
def evaluate(
    model: nn.Module | Backend,
    loader,
    *,
    loss_fn: Callable | None = None,
    conf_thres: float = 0.001,
    iou_thres: float = 0.65,
    max_det: int = 300,
    single_cls: bool = False,
    augment: bool = False,
    on_batch: BatchHook | None = None,
    ground_truth: GroundTruth | None = None,
) -> EvalResult:
    """Evaluate ``model`` (eval-mode output ``(pred, raw)``, or an exported file's backend from
    engine.backends.load_backend) on ``loader`` (yields ``Batch``,
    letterboxed with ``shapes``; its ``dataset`` holds labels, crowd boxes, image ids).

    ``loss_fn(raw, targets, img_size) -> (loss, LossItems)`` adds the mean validation loss
    (skipped with ``augment``, whose outputs are not one training forward). NMS is multi-label,
    as in YOLOv7's test.py. ``augment``: flip + scale test-time augmentation. With
    ``single_cls`` every detection is class 0. The metric runs on the model's device.
    ``ground_truth``: score against these boxes instead of the dataset's labels (val.py passes
    a COCO json's own boxes and segment areas, so the numbers equal pycocotools on that file);
    its ``image`` must hold the dataset's image ids; only the evaluated images are kept.
    The model's train / eval mode is restored afterwards, also when this raises.
    """
    is_module = isinstance(model, nn.Module)
    if not is_module and (augment or loss_fn is not None):
        raise ValueError("augment and loss_fn need a PyTorch model, not an exported file")
    was_training = is_module and model.training
    if is_module:
        model.eval()
    try:
        run = _predict(model, loader, loss_fn=loss_fn, conf_thres=conf_thres, iou_thres=iou_thres,
                       max_det=max_det, single_cls=single_cls, augment=augment, on_batch=on_batch)
    finally:
        if is_module:
            model.train(was_training)
    nc = 1 if single_cls else int(model.nc if is_module else len(model.meta.names))
    return _score(run, loader.dataset, nc=nc, single_cls=single_cls, ground_truth=ground_truth,
                  n_batches=max(len(loader), 1))


@dataclass
class _Predictions:
    """What the forward passes of an evaluation gave: detections per image in original pixels
    [n, 6] (x1, y1, x2, y2, score, class), their dataset indices, summed loss terms (LossItems
    stacked), seconds [3]."""

    detections: list[Tensor]
    indices: list[int]
    losses: Tensor
    times: np.ndarray
    device: torch.device


def _predict(model: nn.Module | Backend, loader, *, loss_fn: Callable | None, conf_thres: float, iou_thres: float,
             max_det: int, single_cls: bool, augment: bool, on_batch: BatchHook | None) -> _Predictions:
    """Forward, (loss,) NMS and hook over every batch of ``loader``; ``model`` is in eval mode
    (or an exported file's backend)."""
    is_module = isinstance(model, nn.Module)
    if is_module:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    else:
        device, dtype = model.device, torch.float32
    losses = torch.zeros(len(LossItems._fields), device=device)
    times = np.zeros(3)
    all_dets, indices = [], []
    for batch in loader:
        t0 = _sync(device)
        images = unit_images(batch.images, device, dtype)
        targets = batch.targets.to(device)
        t1 = _sync(device)
        if augment:
            pred = tta_forward(model, images)
        elif not is_module:
            pred = _file_forward(model, images, conf_thres, iou_thres, max_det)
        else:
            pred, raw = model(images)
            if loss_fn is not None:
                _, items = loss_fn([r.float() for r in raw], targets, tuple(images.shape[2:]))
                losses += torch.stack(items)
        t2 = _sync(device)
        if isinstance(pred, list):  # NMS inside the exported graph
            dets = pred
        else:
            dets = non_max_suppression(pred.float(), conf_thres, iou_thres, multi_label=True, max_det=max_det)
        times += (t1 - t0, t2 - t1, _sync(device) - t2)
        if single_cls:
            for d in dets:
                d[:, 5] = 0
        original = _to_original(dets, batch.shapes)
        if on_batch is not None:
            on_batch(batch, dets, original)
        all_dets += original
        indices += batch.indices.tolist()
    return _Predictions(all_dets, indices, losses, times, device)


def _score(run: _Predictions, dataset, *, nc: int, single_cls: bool, ground_truth: GroundTruth | None,
           n_batches: int) -> EvalResult:
    """Match the predictions against the ground truth and compute every number of EvalResult."""
    indices, device = run.indices, run.device
    keys = image_keys(dataset, indices)
    if ground_truth is None:
        gt = dataset_ground_truth(dataset, indices, keys, device)
    else:
        if len(set(int(dataset.image_ids[i]) for i in indices)) != len(indices):
            raise ValueError("ground_truth needs unique dataset image ids")
        inside = torch.isin(ground_truth.image, torch.tensor(keys, device=ground_truth.image.device))
        gt = GroundTruth(*(t[inside].to(device) for t in ground_truth))
    if single_cls:  # also when the loader kept the classes
        gt = gt._replace(category=torch.zeros_like(gt.category))
    dt = _detections(run.detections, keys, device)
    matching = match(gt, dt, nc)
    precision, recall = accumulate(matching)
    coco = CocoResult(precision, recall, summarize(precision, recall))
    f1 = best_f1(matching)
    stats = coco.as_dict()
    has_gt = f1.has_gt
    train_metrics = TrainMetrics(
        precision=float(f1.precision[has_gt].mean()) if has_gt.any() else 0.0,
        recall=float(f1.recall[has_gt].mean()) if has_gt.any() else 0.0,
        map50=max(stats["AP50"], 0.0),
        map50_95=max(stats["AP"], 0.0),
    )
    metrics = train_metrics.by_name() | stats
    num_labels = torch.bincount(gt.category[~gt.crowd], minlength=nc)[:nc]
    n = max(len(indices), 1)
    return EvalResult(
        train_metrics=train_metrics,
        metrics=metrics,
        losses=LossItems(*(run.losses.cpu() / n_batches)),
        coco=coco,
        f1=f1,
        confusion=confusion_matrix(gt, dt, nc),
        num_images=len(indices),
        num_labels=num_labels,
        speed_ms=tuple(float(t) * 1e3 / n for t in run.times),
        gt=gt,
        detections=dt,
    )
