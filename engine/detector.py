"""``Detector``: one object over the four jobs, for Python users (ultralytics' ``YOLO`` object).

    from elan_yolo import Detector

    detector = Detector("yolov7-tiny.yaml")          # a config: untrained
    detector.train(data="shapes", epochs=15)         # train.py's options; then it holds best.pt
    detector.val(img_size=256)                       # val.py's options -> the numbers
    results = detector.predict("images/", conf_thres=0.3)   # detect.py's options -> Detections
    results[0].plot(); results[0].to_json(); results[0].save_txt("a.txt")
    detector.export(include=["onnx"])                # export.py's options

    Detector("runs/train/exp/weights/best.pt")       # a checkpoint of ours, an official YOLOv7
                                                     # file, or an exported .onnx / .torchscript / OpenVINO

Each job takes keyword options named as its command's flags (the fields of ``TrainOptions``,
``ValOptions``, ``DetectOptions``, ``ExportOptions``: one declaration for both); the commands are
thin over the same functions, so the files and numbers are the same. An unknown option or a value
out of range raises ``ConfigError`` naming it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from engine.detect import Detections, DetectOptions, Predictor, Source
from engine.detect.run import attach_frames, predictor_for
from engine.detect.sources import Frame
from engine.detect.track import Tracks
from engine.train import TrainOptions
from engine.val import ValOptions, run_val
from models.released import RELEASED
from utils.cli import check_ranges
from utils.config import ConfigError
from utils.errors import UserError

T = TypeVar("T")
CONFIG_SUFFIXES = (".yaml", ".yml")
# Training events and what a callback receives; on_epoch_end returning True stops after that epoch.
EVENTS = {
    "on_train_start": "(options: TrainOptions)",
    "on_epoch_end": "(epoch: int, row: dict of results.csv's columns) -> bool | None",
    "on_train_end": "(summary: dict)",
}
_PREDICTOR_FIELDS = ("weights", "device", "img_size", "conf_thres", "iou_thres", "classes", "agnostic_nms",
                     "max_det", "augment", "backend", "tile", "tile_overlap", "compile")


def _options(cls: type[T], where: str, given: dict[str, Any], **fixed: Any) -> T:
    """``cls(**fixed, **given)`` with an unknown or doubly given name, or a value out of its
    flag's range, as a ConfigError that names it."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in given:
        if key not in names:
            raise ConfigError(f"{where}: unknown option {key!r} (options: {', '.join(sorted(names))})")
        if key in fixed:
            raise ConfigError(f"{where}: {key!r} is the Detector's own; build another Detector for other weights")
    options = cls(**fixed, **given)
    check_ranges(options)
    return options


class Detector:
    """A detector from a model config (untrained) or a weights file; see the module docstring.

    ``model``: a config name or path (``yolov7-tiny.yaml``, ``cfg/yolor-csp.yaml``) or a weights file
    (checkpoint, official YOLOv7 ``.pt``, ``.onnx``, ``.torchscript``, OpenVINO ``.xml`` / folder).
    ``device``: '' (auto), 'cpu', '0', ... for every job that does not name its own.
    """

    def __init__(self, model: str | Path = "yolov7-tiny.yaml", *, device: str = "") -> None:
        model = str(model)
        if not model:
            raise ConfigError("Detector: model must name a config or a weights file")
        is_config = model.endswith(CONFIG_SUFFIXES)
        self.cfg = model if is_config else ""
        self.weights = "" if is_config else model
        self.device = device
        self.callbacks: dict[str, list[Callable]] = {event: [] for event in EVENTS}
        self._predictor: tuple[tuple, Predictor] | None = None
        if self.weights and not Path(self.weights).exists() and Path(self.weights).name not in RELEASED:
            raise UserError("no such weights file (give a checkpoint, an exported file or a model YAML)",
                            where=self.weights)

    def __repr__(self) -> str:
        return f"Detector({self.weights or self.cfg!r})"

    @functools.cached_property
    def model(self):
        """The PyTorch ``models.Model`` (one object, built on first use): loaded from the weights (a
        checkpoint of ours or an official YOLOv7 file; eval mode, not fused), or built from the config
        with random weights while there are none."""
        from models import Model, load_model
        from utils.device import select_device

        if self.weights:
            return load_model(self.weights, select_device(self.device))
        return Model(self.cfg)

    # Training events -------------------------------------------------------------------------

    def add_callback(self, event: str, callback: Callable) -> None:
        """Call ``callback`` at ``event`` of every later ``train()`` (``EVENTS`` lists them)."""
        if event not in EVENTS:
            raise ConfigError(f"unknown event {event!r} (events: {', '.join(EVENTS)})")
        self.callbacks[event].append(callback)

    def _epoch_end(self, epoch: int, row: dict) -> bool:
        stop = False
        for callback in self.callbacks["on_epoch_end"]:
            stop = bool(callback(epoch, row)) or stop
        return stop

    # Jobs ---------------------------------------------------------------------------------------

    def train(self, **options: Any) -> dict[str, Any]:
        """Train (train.py's options; ``cfg`` and ``weights`` default to this detector's) and hold
        the run's best.pt afterwards. Returns train.py's summary (mAP50, weights, save_dir, ...)."""
        from engine.train import train

        given = {"cfg": self.cfg, "weights": self.weights, "device": self.device, **options}
        opt = _options(TrainOptions, "Detector.train", given)
        for callback in self.callbacks["on_train_start"]:
            callback(opt)
        summary = train(opt, on_epoch_end=self._epoch_end if self.callbacks["on_epoch_end"] else None)
        if summary.get("weights"):
            self.weights, self._predictor = summary["weights"], None
            self.__dict__.pop("model", None)  # the cached model was the untrained one
        for callback in self.callbacks["on_train_end"]:
            callback(summary)
        return summary

    def val(self, **options: Any) -> dict[str, Any]:
        """Evaluate the weights (val.py's options); returns val.py's numbers (``mAP_0.5``, ``AP``, ...)."""
        opt = _options(ValOptions, "Detector.val", {"device": self.device, **options}, weights=self._need_weights())
        return run_val(opt)

    def export(self, **options: Any) -> dict[str, Any]:
        """Export the weights (export.py's options); returns export.py's summary (files, checks)."""
        from engine.export import ExportOptions, run_export

        opt = _options(ExportOptions, "Detector.export", {"device": self.device, **options},
                       weights=self._need_weights())
        return run_export(opt)

    def predict(self, source: Any, *, stream: bool = False, **options: Any) -> list[Detections] | Iterator[Detections]:
        """Detect on ``source``: an image path, folder, glob, .txt list, video, stream, a BGR uint8
        [h, w, 3] array, or a list of paths / arrays. ``options``: detect.py's (conf_thres, img_size,
        classes, batch_size, ...; the ones that write files do not apply). One ``Detections`` per
        image or frame, holding its image, path and class names; ``stream=True`` yields them one at
        a time (for long videos). ``track=True`` sets each result's ``ids`` (ByteTrack over the
        frames of each video, or over the images in their order); ``tile=640`` adds sliced
        inference."""
        results = self._predict(source, options)
        return results if stream else list(results)

    __call__ = predict

    # Internals ----------------------------------------------------------------------------------

    def _need_weights(self) -> str:
        if not self.weights:
            raise UserError(f"{self.cfg}: an untrained config has no weights: train() it first, or build the "
                            "Detector from a checkpoint")
        return self.weights

    def predictor(self, opt: DetectOptions) -> Predictor:
        """The Predictor for ``opt``'s model and thresholds, reused while they stay the same."""
        key = tuple(repr(getattr(opt, name)) for name in _PREDICTOR_FIELDS)
        if self._predictor is None or self._predictor[0] != key:
            self._predictor = (key, predictor_for(opt))
        return self._predictor[1]

    def _predict(self, source: Any, options: dict[str, Any]) -> Iterator[Detections]:
        arrays = isinstance(source, np.ndarray) or (isinstance(source, Sequence) and not isinstance(source, str))
        opt = _options(DetectOptions, "Detector.predict", {"device": self.device, **options},
                       weights=self._need_weights(), source="" if arrays else str(source))
        predictor = self.predictor(opt)
        tracks = Tracks() if opt.track else None
        if arrays:
            results = predictor(source)
            attach_frames(tracks, [Frame(det.path, det.image) for det in results], results)
            yield from results
            return
        for batch in Source(opt.source, opt.batch_size):
            results = predictor.predict([f.image for f in batch])
            attach_frames(tracks, batch, results)
            yield from results
