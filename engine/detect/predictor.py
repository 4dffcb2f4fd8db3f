"""The Python inference API: weights (checkpoint, .torchscript, .onnx or OpenVINO) in, boxes out.

    predictor = Predictor("runs/train/exp/weights/best.pt", img_size=640)
    for det in predictor(["a.jpg", image_bgr]):
        det.boxes    # float32 [n, 4] xyxy, pixels of the original image
        det.scores   # float32 [n]
        det.classes  # int64 [n]

Images are letterboxed with the model's stride (rectangular, the smallest padding a batch
allows), run as one batch, post-processed with utils.nms and mapped back to original pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from data import letterbox, unit_images
from engine.backends import BackendError, call_fixed_batch, load_backend
from engine.detect.results import Detections
from engine.detect.slices import sliced_predict
from engine.detect.sources import read_image
from utils.boxes import letterbox_to_original
from utils.device import select_device
from utils.nms import keep_best, non_max_suppression
from utils.rounding import round_up

ImageInput = str | Path | np.ndarray


def batch_shape(shapes: Sequence[tuple[int, int]], img_size: int, stride: int) -> tuple[int, int]:
    """The smallest (H, W), multiples of ``stride``, that hold every image of a batch resized so
    its longer side is ``img_size``. For one image this is YOLOv7's minimal-padding letterbox."""
    heights, widths = [], []
    for h, w in shapes:
        r = img_size / max(h, w)
        heights.append(round(h * r))
        widths.append(round(w * r))
    return round_up(max(heights), stride), round_up(max(widths), stride)


class Predictor:
    """Detector over a weights file. Thresholds follow YOLOv7's detect.py defaults.

    ``img_size`` (longer side of the network input) defaults to the size the checkpoint was
    validated at during training, or the size a file was exported at. ``classes`` keeps only
    those class indices; ``agnostic`` runs NMS across classes;
    ``augment`` enables test-time augmentation (PyTorch checkpoints only); ``backend`` overrides
    what runs the file (engine.formats.BACKENDS: an .onnx file on 'openvino'); ``threads``
    the CPU threads of onnxruntime / OpenVINO (None: all cores). ``tile`` (pixels) detects each
    image also in overlapping ``tile`` x ``tile`` tiles (``tile_overlap`` of a tile apart) and merges
    the boxes by NMS (engine.detect.slices): small objects in large images.
    Several checkpoints in ``weights`` run as one ensemble (models.ensemble). Raises
    BackendError naming the file when the weights are unusable.
    """

    def __init__(self, weights: str | Path | Sequence[str | Path], device: str = "", img_size: int | None = None,
                 conf_thres: float = 0.25, iou_thres: float = 0.45, classes: Sequence[int] | None = None,
                 agnostic: bool = False, max_det: int = 300, augment: bool = False, backend: str = "auto",
                 threads: int | None = None, *, tile: int | None = None, tile_overlap: float = 0.2) -> None:
        self.device = select_device(device)
        self.backend = load_backend(weights, self.device, backend, threads)
        self.meta = self.backend.meta
        self.names = self.meta.names
        self.stride = self.meta.stride
        img_size = img_size or self.meta.default_img_size
        self.img_size = round_up(img_size, self.stride)  # as YOLOv7's check_img_size
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det
        self.classes = list(classes) if classes is not None else None
        self.agnostic = agnostic
        if augment and not hasattr(self.backend, "model"):
            raise BackendError(f"{weights}: --augment needs a PyTorch checkpoint, not an exported file")
        self.augment = augment
        self.tile, self.tile_overlap = tile, tile_overlap
        if self.meta.nms and agnostic != bool(self.meta.nms_options.get("agnostic", False)):
            raise BackendError(f"{weights}: NMS inside this ONNX file was exported with "
                               f"agnostic={self.meta.nms_options.get('agnostic')}; re-export to change it")

    def input_shape(self, shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """Network input (H, W) for a batch of original (h, w): fixed for static exports."""
        if self.meta.img_size is not None:
            return tuple(self.meta.img_size)
        return batch_shape(shapes, self.img_size, self.stride)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[tuple]]:
        """BGR uint8 [h, w, 3] images -> float [B, 3, H, W] RGB in 0..1 on the device, and per image
        ((w_gain, h_gain), (pad_w, pad_h), (h0, w0)) to undo the letterbox."""
        target = self.input_shape([im.shape[:2] for im in images])
        batch, undo = [], []
        for im in images:
            boxed, gains, pad = letterbox(im, target, self.stride, auto=False)
            batch.append(boxed[..., ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
            undo.append((gains, pad, im.shape[:2]))
        return unit_images(torch.from_numpy(np.ascontiguousarray(np.stack(batch))), self.device), undo

    def _detect(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Input batch -> per image [n, 6] (x1, y1, x2, y2, score, class) in input pixels."""
        if self.meta.nms:
            return [self._filter(d) for d in self.backend(x, conf_thres=self.conf_thres, iou_thres=self.iou_thres)]
        out = self.backend(x, augment=self.augment)
        return non_max_suppression(out, self.conf_thres, self.iou_thres, classes=self.classes,
                                   agnostic=self.agnostic, max_det=self.max_det)

    def _filter(self, det: torch.Tensor) -> torch.Tensor:
        """Class filter, order and max_det for detections of an NMS-in-graph export. Filtering
        classes after class-aware NMS equals filtering before; after agnostic NMS a box of a
        filtered-out class may already have suppressed a neighbour (utils.nms filters first)."""
        if self.classes is not None:
            det = det[torch.isin(det[:, 5], torch.tensor(self.classes, dtype=det.dtype, device=det.device))]
        return keep_best(det, self.max_det)

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect on BGR uint8 [h, w, 3] images (OpenCV order); one Detections per image."""
        if not self.tile:
            return self.predict_whole(images)
        return [sliced_predict(self.predict_whole, im, self.tile, self.tile_overlap, iou_thres=self.iou_thres,
                               agnostic=self.agnostic, max_det=self.max_det) for im in images]

    @torch.no_grad()
    def predict_whole(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect on BGR uint8 [h, w, 3] images, each whole (no tiles), as one batch."""
        if not images:
            return []
        x, undo = self.preprocess(images)
        results = []
        for det, (gains, pad, shape) in zip(call_fixed_batch(self._detect, x, self.meta.batch), undo, strict=True):
            det = det.detach().cpu().float().numpy()
            boxes = letterbox_to_original(det[:, :4], gains, pad, shape) if len(det) else det[:, :4]
            results.append(Detections(boxes.astype(np.float32), det[:, 4].astype(np.float32),
                                      det[:, 5].astype(np.int64), tuple(shape), list(self.names)))
        return results

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> list[Detections]:
        """Detect on one or several images given as paths or BGR uint8 [h, w, 3] arrays; each result
        keeps its image and path (so ``plot()`` needs no argument)."""
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        arrays, paths = [], []
        for im in images:
            if isinstance(im, np.ndarray):
                arrays.append(im)
                paths.append("")
                continue
            array = read_image(Path(im))
            if array is None:
                raise FileNotFoundError(f"{im}: cannot read image")
            arrays.append(array)
            paths.append(str(im))
        results = self.predict(arrays)
        for det, array, path in zip(results, arrays, paths, strict=True):
            det.image, det.path = array, path
        return results
