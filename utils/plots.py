"""Pictures: boxes drawn on images, batch mosaics (train_batch0.jpg), label statistics (labels.jpg).

Images are RGB uint8 (numpy [H, W, 3] or torch [B, 3, H, W]); files are written with OpenCV
(JPEG/PNG by suffix) or matplotlib's object API (no pyplot global state, no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.boxes import cxcywh_to_xyxy

# 20 distinct RGB colours; class c uses PALETTE[c % 20]
PALETTE = np.array([
    (255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
    (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
    (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
    (255, 149, 200), (255, 55, 199),
], np.uint8)


def class_colour(cls: int) -> tuple[int, int, int]:
    """RGB colour of class ``cls``."""
    return tuple(int(v) for v in PALETTE[int(cls) % len(PALETTE)])


def draw_boxes(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: Sequence[int],
    scores: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    line_width: int | None = None,
    ids: Sequence[int] | None = None,
) -> np.ndarray:
    """Return a copy of RGB uint8 ``img`` [H, W, 3] with xyxy pixel ``boxes`` [n, 4] drawn,
    labelled with the track id ('#3', when given and not -1), the class name (or index) and the
    score (when given)."""
    img = np.ascontiguousarray(img).copy()
    lw = line_width or max(round(sum(img.shape[:2]) / 2 * 0.003), 1)
    for i, (box, cls) in enumerate(zip(np.asarray(boxes, np.float64), classes, strict=False)):
        colour = class_colour(cls)
        p1, p2 = (int(box[0]), int(box[1])), (int(box[2]), int(box[3]))
        cv2.rectangle(img, p1, p2, colour, lw)  # axis-aligned: anti-aliasing would only blur it
        label = names[int(cls)] if names is not None and int(cls) < len(names) else str(int(cls))
        if scores is not None:
            label = f"{label} {scores[i]:.2f}"
        if ids is not None and ids[i] >= 0:
            label = f"#{int(ids[i])} {label}"
        scale = lw / 3
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(lw - 1, 1))
        if p1[1] - th - 3 >= 0:  # label above the box, else just inside its top edge
            bg1, bg2, origin = (p1[0], p1[1] - th - 3), (p1[0] + tw, p1[1]), (p1[0], p1[1] - 2)
        else:
            bg1, bg2, origin = p1, (p1[0] + tw, p1[1] + th + 3), (p1[0], p1[1] + th + 1)
        cv2.rectangle(img, bg1, bg2, colour, -1)
        cv2.putText(img, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(lw - 1, 1),
                    cv2.LINE_AA)
    return img


def _to_uint8_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[B, 3, H, W] uint8 or float 0..1 -> numpy uint8 [B, H, W, 3]."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.dtype != np.uint8:
        x = (x.astype(np.float32) * (255 if x.max() <= 1 else 1)).clip(0, 255).astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


def plot_images(
    images: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    paths: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    fname: str | Path | None = None,
    max_size: int = 1920,
    max_subplots: int = 16,
    conf_thres: float = 0.25,
    *,
    polygons: Sequence[Sequence[np.ndarray | None]] | None = None,
) -> np.ndarray:
    """A grid of up to ``max_subplots`` batch images with their boxes, like YOLOv7's train_batch0.jpg.

    ``images`` [B, 3, H, W] (uint8, or float 0..1); ``targets`` [N, 6] = (image index, cls,
    cx, cy, w, h), normalised (as in a Batch) or in input pixels (when every value is > 1.01
    somewhere, i.e. predictions); a 7th column is a score: boxes below ``conf_thres`` are skipped.
    ``polygons``: per image, one outline per target row of that image ([k, 2] pixels of the
    batch image, None for a box row), drawn in the row's class colour.
    Returns the RGB uint8 grid [H', W', 3]; writes it to ``fname`` when given.
    """
    imgs = _to_uint8_images(images)[:max_subplots]
    t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    t = t.reshape(-1, t.shape[-1] if t.size else 6).astype(np.float64)
    bs, h, w, _ = imgs.shape if len(imgs) else (0, 32, 32, 3)
    cols = math.ceil(math.sqrt(max(bs, 1)))
    rows = math.ceil(max(bs, 1) / cols)
    scale = min(1.0, max_size / max(rows * h, cols * w))
    th, tw = math.ceil(h * scale), math.ceil(w * scale)
    grid = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    normalised = len(t) == 0 or t[:, 2:6].max() <= 1.01
    for i, img in enumerate(imgs):
        rows_i = t[t[:, 0] == i]
        if t.shape[1] > 6:
            rows_i = rows_i[rows_i[:, 6] >= conf_thres]
        boxes = cxcywh_to_xyxy(rows_i[:, 2:6]) * (np.array([w, h, w, h]) if normalised else 1)
        tile = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA) if scale < 1 else img
        if polygons is not None:
            tile = np.ascontiguousarray(tile).copy()
            for cls, outline in zip(rows_i[:, 1], polygons[i], strict=True):
                if outline is not None and len(outline) >= 2:
                    pts = np.round(np.asarray(outline) * scale * 16).astype(np.int32)  # 4-bit sub-pixel
                    cv2.polylines(tile, [pts], True, class_colour(int(cls)), 1, cv2.LINE_AA, 4)
        tile = draw_boxes(tile, boxes * scale, rows_i[:, 1].astype(int),
                          rows_i[:, 6] if t.shape[1] > 6 else None, names)
        if paths is not None:
            cv2.putText(tile, Path(paths[i]).name[:40], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
        cv2.rectangle(tile, (0, 0), (tw - 1, th - 1), (255, 255, 255), 2)
        r, c = divmod(i, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
    if fname is not None:
        Path(fname).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(fname), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return grid


def plot_labels(labels: Sequence[np.ndarray] | np.ndarray, names: Sequence[str], fname: str | Path) -> Path:
    """labels.jpg: class counts, box centres (x, y), box sizes (w, h) and box outlines.

    ``labels``: per-image float [n, 5] (cls, cx, cy, w, h) normalised, or one [N, 5] array.
    """
    from matplotlib.figure import Figure  # imported here: slow, and only plots need it

    lab = np.asarray(labels).reshape(-1, 5) if isinstance(labels, np.ndarray) \
        else np.concatenate([np.zeros((0, 5), np.float32)] + [np.asarray(x).reshape(-1, 5) for x in labels], 0)
    nc = max(len(names), int(lab[:, 0].max()) + 1 if len(lab) else 1)
    fig = Figure(figsize=(9, 9), tight_layout=True)
    ax = fig.subplots(2, 2).ravel()
    counts = np.bincount(lab[:, 0].astype(int), minlength=nc)
    ax[0].bar(range(nc), counts, color=[PALETTE[c % len(PALETTE)] / 255 for c in range(nc)])
    ax[0].set_xticks(range(nc), [names[c] if c < len(names) else str(c) for c in range(nc)], rotation=90, fontsize=8)
    ax[0].set_ylabel("instances")
    ax[1].hist2d(lab[:, 1], lab[:, 2], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[1].set(xlabel="x", ylabel="y", title="box centres")
    ax[2].hist2d(lab[:, 3], lab[:, 4], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set(xlabel="width", ylabel="height", title="box sizes")
    canvas = np.full((500, 500, 3), 255, np.uint8)
    for cls, _, _, bw, bh in lab[:1000]:  # outlines of up to 1000 boxes, centred, to show shapes
        x1, y1, x2, y2 = (cxcywh_to_xyxy(np.array([0.5, 0.5, bw, bh])) * 500).astype(int)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), class_colour(int(cls)), 1)
    ax[3].imshow(canvas)
    ax[3].axis("off")
    fname = Path(fname)
    fname.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fname, dpi=120)
    return fname
