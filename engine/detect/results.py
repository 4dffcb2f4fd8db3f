"""The result of detection on one image: boxes, scores and classes in original pixels, with the
class names and (when known) the image and where it came from; it draws and writes itself.

    det = predictor(["a.jpg"])[0]
    det.boxes, det.scores, det.classes   # float32 [n, 4] xyxy pixels, float32 [n], int64 [n]
    cv2.imwrite("a_pred.jpg", det.plot())
    det.save_txt("a.txt", save_conf=True)  # YOLO rows: class cx cy w h [score] [id], normalised
    det.to_json()                          # {"path", "height", "width", "detections": [...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from utils.boxes import xyxy_to_cxcywh
from utils.plots import class_colour, draw_boxes


@dataclass
class Detections:
    """Detections of one image, sorted by score.

    ``boxes`` float32 [n, 4] xyxy in original pixels, ``scores`` float32 [n], ``classes`` int64 [n],
    ``shape`` (height, width) of the image; ``names`` the class names (index -> name); ``image`` the
    BGR uint8 [h, w, 3] image when the caller kept it (``Detector.predict`` does), ``path`` its
    file, video or stream ('' for an array), ``frame`` the frame number of a video or stream
    (None for a still image); ``ids`` int64 [n] the track ids when tracked (-1: a box no track
    holds yet), else None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    shape: tuple[int, int]
    names: list[str] = field(default_factory=list)
    image: np.ndarray | None = field(default=None, repr=False)
    path: str = ""
    frame: int | None = None
    ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def as_array(self) -> np.ndarray:
        """float32 [n, 6] = (x1, y1, x2, y2, score, class)."""
        return np.concatenate([self.boxes, self.scores[:, None], self.classes[:, None].astype(np.float32)], 1)

    def name(self, cls: int) -> str:
        """The name of class index ``cls`` (its number when the names do not cover it)."""
        return self.names[cls] if 0 <= cls < len(self.names) else str(cls)

    def plot(self, image: np.ndarray | None = None, *, line_thickness: int | None = None,
             hide_labels: bool = False, hide_conf: bool = False) -> np.ndarray:
        """A BGR uint8 copy of ``image`` (default: the one the detections came from) with the boxes
        drawn: label and score above each box unless ``hide_labels`` / ``hide_conf``."""
        image = self.image if image is None else image
        if image is None:
            raise ValueError("plot() needs the image: these detections were made without keeping it")
        rgb = np.ascontiguousarray(image[..., ::-1])  # utils.plots works in RGB
        if hide_labels:
            lw = line_thickness or max(round(sum(rgb.shape[:2]) / 2 * 0.003), 1)
            for box, cls in zip(self.boxes.astype(int), self.classes, strict=True):
                cv2.rectangle(rgb, tuple(box[:2]), tuple(box[2:]), class_colour(cls), lw, cv2.LINE_AA)
        else:
            rgb = draw_boxes(rgb, self.boxes, self.classes, None if hide_conf else self.scores,
                             self.names or None, line_thickness, self.ids)
        return np.ascontiguousarray(rgb[..., ::-1])

    def label_lines(self, save_conf: bool = False) -> list[str]:
        """YOLO label rows 'class cx cy w h [score] [id]', normalised to the original image: the
        score with ``save_conf``, the track id (-1: untracked box) when the detections were tracked."""
        h, w = self.shape
        xywh = xyxy_to_cxcywh(self.boxes) / np.array([w, h, w, h], np.float32)
        ids = self.ids if self.ids is not None else [None] * len(self)
        rows = []
        for cls, box, score, track in zip(self.classes, xywh, self.scores, ids, strict=True):
            values = [f"{v:.6f}" for v in box] + ([f"{score:.6f}"] if save_conf else [])
            values += [str(int(track))] if track is not None else []
            rows.append(" ".join([str(int(cls))] + values))
        return rows

    def save_txt(self, path: str | Path, save_conf: bool = False) -> Path:
        """Write :meth:`label_lines` to ``path`` (one row per box; an empty file without boxes)."""
        path = Path(path)
        path.write_text("".join(row + "\n" for row in self.label_lines(save_conf)))
        return path

    def to_dict(self) -> dict:
        """The image and its boxes as plain data: xyxy in original pixels, rounded to 0.01 px; each
        box has an "id" when the detections were tracked."""
        boxes = [
            {"class": int(c), "name": self.name(int(c)), "score": round(float(s), 5),
             "box": [round(float(v), 2) for v in b]}
            for b, s, c in zip(self.boxes, self.scores, self.classes, strict=True)
        ]
        if self.ids is not None:
            for box, track in zip(boxes, self.ids, strict=True):
                box["id"] = int(track)
        return {
            "path": self.path,
            "frame": self.frame,
            "height": self.shape[0],
            "width": self.shape[1],
            "detections": boxes,
        }

    def to_json(self, **dumps_options) -> str:
        """:meth:`to_dict` as a JSON string (``json.dumps`` options pass through)."""
        return json.dumps(self.to_dict(), **dumps_options)
