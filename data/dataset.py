"""``DetectionDataset``: images and labels of one split, letterboxed (validation) or augmented (training).

A sample is (image uint8 [3, H, W] RGB, targets float [n, 6] = (0, cls, cx, cy, w, h)
normalised, path, shapes, index); ``data.loader.collate`` fills column 0 with the image's
position in the batch. ``shapes`` is ((h0, w0), ((w_gain, h_gain), (pad_w, pad_h))), the letterbox
applied to the original image, or None for a mosaic sample (no single original image).

Randomness: each sample draws from ``numpy.random.default_rng((seed, epoch, index))``, so a
sample is the same whatever the number of workers or the order they run in.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.augment import Augmenter
from data.polygons import Polygons, to_pixels
from data.scan import ScanResult
from data.transforms import letterbox, normalized_to_pixels, pixels_to_normalized
from utils.config import Hyp

LOGGER = logging.getLogger(__name__)
JPEG_SUFFIXES = (".jpg", ".jpeg")
# reduction factor -> cv2.imread flags: RGB (no BGR copy to convert) at 1 / r size (libjpeg scales while decoding)
REDUCED_DECODE = {1: cv2.IMREAD_COLOR_RGB, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_COLOR_RGB,
                  4: cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_COLOR_RGB,
                  8: cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_COLOR_RGB}
CACHES = (None, "auto", "ram", "disk")  # "auto": "ram" if the resized images take little memory, else None
AUTO_RAM_FRACTION = 0.1  # of the available memory, the most "auto" gives the RAM cache
Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[int, int]]] | None


class DetectionDataset(Dataset):
    """One split of a detection data set.

    Attributes for evaluation and autoanchor (index i = dataset index, as in ``Batch.indices``):
    ``files[i]``; ``labels[i]`` float32 [n, 5] (cls, cx, cy, w, h) normalised to the original
    image, non-crowd; ``segments[i]`` their n polygons (float32 [k, 2] normalised, [0, 2] for a
    box row); ``crowd[i]`` same format, crowd boxes (``labels``, ``crowd``: ``RaggedRows``,
    ``segments``: ``SegmentStore``, data.label_store; items are read-only views); ``image_ids[i]``; ``category_ids``
    (class index -> original category id); ``shapes`` float [N, 2] original (width, height), as
    YOLOv7's ``dataset.shapes``.
    """

    def __init__(
        self,
        scan: ScanResult,
        *,
        img_size: int = 640,
        batch_size: int = 16,
        stride: int = 32,
        hyp: Hyp | None = None,
        augment: bool = False,
        rect: bool = False,
        pad: float = 0.5,
        cache: str | None = None,
        single_cls: bool = False,
        seed: int = 0,
    ) -> None:
        if cache not in CACHES:
            raise ValueError(f"cache must be one of {', '.join(map(repr, CACHES))}, got {cache!r}")
        self.img_size, self.stride, self.augment, self.rect = img_size, stride, augment, rect
        self.hyp = hyp or Hyp()
        self.seed, self.epoch = seed, 0
        self.mosaic = augment and not rect and self.hyp.mosaic > 0
        order = self._rect_order(scan) if rect else np.arange(len(scan.files))
        self.files = [scan.files[i] for i in order]
        self._jpeg = [os.path.splitext(f)[1].lower() in JPEG_SUFFIXES for f in self.files]  # these have a reduced decode
        # one flat store per split, read-only views on access: a forked worker copies nothing by reading
        self.labels, self.crowd = scan.labels.take(order), scan.crowd.take(order)
        if single_cls:
            self.labels, self.crowd = self.labels.with_class(0), self.crowd.with_class(0)
        self.segments = scan.segments.take(order)
        self.has_segments = self.segments.has_points()
        self.image_ids = [scan.image_ids[i] for i in order]
        self.category_ids = list(scan.category_ids)
        self.shapes = np.array([scan.shapes[i][::-1] for i in order], np.float64).reshape(-1, 2)
        self.batch_shapes = self._batch_shapes(batch_size, pad) if rect else None
        self.cache = self._auto_cache() if cache == "auto" else cache
        self.batch_size = batch_size
        self._ram: list[np.ndarray | None] = [None] * len(self.files)
        self.augmenter = Augmenter(self, self.hyp) if augment else None
        if augment and not self.has_segments and (self.hyp.copy_paste > 0 or self.hyp.paste_in > 0):
            LOGGER.warning("copy_paste=%g, paste_in=%g have no effect: the labels have no polygons (box-only data "
                           "set; both cut objects out by their outlines)", self.hyp.copy_paste, self.hyp.paste_in)
        if self.cache == "ram":
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # OpenCV decodes without the GIL
                self._ram = list(pool.map(lambda i: self.load_image(i)[0], range(len(self.files))))

    def cache_bytes(self) -> int:
        """Memory the resized images take in the RAM cache (uint8 RGB, as ``load_image`` makes them)."""
        return sum(w * h * 3 for w, h in (self._resized_size(h0, w0) for w0, h0 in self.shapes.tolist()))

    def _resized_size(self, h0: float, w0: float) -> tuple[int, int]:
        """(w, h) of an image of original size (h0, w0) resized so its long side is ``img_size``."""
        r = self.img_size / max(h0, w0)
        return round(w0 * r), round(h0 * r)

    def _auto_cache(self) -> str | None:
        """'ram' when the resized images fit in AUTO_RAM_FRACTION of the available memory (shared by
        this machine's processes of a torchrun job), else None; said in one line either way."""
        need, available = self.cache_bytes(), available_memory()
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        fits = available is not None and need * processes <= AUTO_RAM_FRACTION * available
        need_text = f"{need * processes / 1e9:.2f} GB" + (f" for {processes} processes" if processes > 1 else "")
        of = f"the {available / 1e9:.1f} GB available" if available is not None else "an unknown free memory"
        if fits:
            LOGGER.info("caching %d images in RAM (%s of %s; --cache-images none reads them from disk)",
                        len(self.files), need_text, of)
        else:
            LOGGER.info("not caching %d images in RAM (%s, over %.0f%% of %s; --cache-images ram caches them anyway)",
                        len(self.files), need_text, 100 * AUTO_RAM_FRACTION, of)
        return "ram" if fits else None

    @staticmethod
    def _rect_order(scan: ScanResult) -> np.ndarray:
        """Indices sorted by aspect ratio (h / w), so each rectangular batch pads little."""
        return np.argsort([h / w for h, w in scan.shapes], kind="stable")

    def _batch_shapes(self, batch_size: int, pad: float) -> np.ndarray:
        """int [num_batches, 2] (h, w) letterbox target of each batch: a stride multiple that
        fits the batch's most extreme aspect ratio at ``img_size`` (YOLOv5/v7 rule)."""
        aspect = self.shapes[:, 1] / self.shapes[:, 0]  # h / w, already sorted
        n_batches = int(np.ceil(len(aspect) / batch_size))
        shapes = np.ones((n_batches, 2))
        for b in range(n_batches):
            ar = aspect[b * batch_size:(b + 1) * batch_size]
            lo, hi = ar.min(), ar.max()
            shapes[b] = [hi, 1] if hi < 1 else [1, 1 / lo] if lo > 1 else [1, 1]
        return (np.ceil(shapes * self.img_size / self.stride + pad) * self.stride).astype(int)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (the loader calls this; see module docstring)."""
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        """The random generator of sample ``index`` in the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def _disk_path(self, index: int) -> Path:
        return Path(self.files[index] + ".npy")  # beside the image; a.jpg and a.png do not collide

    def _reduction(self, index: int) -> int:
        """The JPEG decoder's downscale (1, 2, 4 or 8) that still leaves the long side at least
        ``img_size``: decoding at 1/2 or 1/4 size costs a fraction of a full decode that is then shrunk."""
        if self.cache == "disk" or not self._jpeg[index]:
            return 1  # the disk cache keeps original sizes; other formats have no reduced decode
        long_side = self.shapes[index].max()
        return max((f for f in REDUCED_DECODE if long_side / f >= self.img_size), default=1)

    def _read(self, index: int, reduction: int = 1) -> np.ndarray:
        """RGB image [h0, w0, 3] (EXIF orientation applied; about [h0 / r, w0 / r] when decoded at
        ``reduction`` r), from the disk cache if enabled and not older than the image."""
        npy = self._disk_path(index)
        if self.cache == "disk" and npy.is_file() and npy.stat().st_mtime_ns >= Path(self.files[index]).stat().st_mtime_ns:
            return np.load(npy, allow_pickle=False)
        img = cv2.imread(self.files[index], REDUCED_DECODE[reduction])
        if img is None:
            raise FileNotFoundError(f"{self.files[index]}: cannot read image (changed since the label scan?)")
        if self.cache == "disk":
            tmp = npy.with_name(f"{npy.name}.{os.getpid()}.tmp.npy")
            try:
                np.save(tmp, img, allow_pickle=False)
                os.replace(tmp, npy)  # atomic: workers may write the same file
            except OSError as e:
                LOGGER.warning("%s: cannot write disk cache (%s); reading images directly", npy, e)
                self.cache = None
        return img

    def load_image(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """RGB image [h, w, 3] resized so its long side is ``img_size``; returns it and (h0, w0)."""
        h0, w0 = int(self.shapes[index, 1]), int(self.shapes[index, 0])
        if self._ram[index] is not None:
            return self._ram[index], (h0, w0)
        reduction = self._reduction(index)
        img = self._read(index, reduction)
        if reduction == 1:
            h0, w0 = img.shape[:2]
        size = self._resized_size(h0, w0)  # from the original size: the same whatever the decode
        if img.shape[1::-1] != size:
            # area averaging is the better downscale; training keeps YOLOv7's faster linear
            interp = cv2.INTER_LINEAR if self.augment or self.img_size > max(h0, w0) else cv2.INTER_AREA
            img = cv2.resize(img, size, interpolation=interp)
        return img, (h0, w0)

    def letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, Polygons, Shapes]:
        """Image ``index`` letterboxed to its target shape; labels [n, 5] (cls, xyxy pixels) and their
        polygons (pixels, None for box rows)."""
        img, (h0, w0) = self.load_image(index)
        h, w = img.shape[:2]
        target = tuple(self.batch_shapes[index // self.batch_size]) if self.rect else self.img_size
        img, (gw, gh), pad = letterbox(img, target, self.stride, auto=False, scaleup=self.augment)
        gains = (w * gw / w0, h * gh / h0)  # original -> letterboxed, per axis
        labels = normalized_to_pixels(self.labels[index], w0 * gains[0], h0 * gains[1], *pad)
        polygons = to_pixels(self.segments[index], w0 * gains[0], h0 * gains[1], *pad)
        return img, labels, polygons, ((h0, w0), (gains, pad))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Shapes, int]:
        if self.augmenter is not None:
            img, labels, shapes = self.augmenter(index, self.rng(index))
        else:
            img, pixel_labels, _, shapes = self.letterboxed(index)
            labels = pixels_to_normalized(pixel_labels, img.shape[1], img.shape[0])
        targets = torch.zeros((len(labels), 6))
        targets[:, 1:] = torch.from_numpy(labels)
        # [3, H, W] as a view of the HWC pixels: collate stacks them channels-last, the model's layout
        image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        return image, targets, self.files[index], shapes, index


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable, else free pages), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
