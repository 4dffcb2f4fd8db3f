"""What detect.py does: run a Predictor over a source and write the results.

Output folder (``<project>/<name>``, incremented to ``exp2``, ``exp3``, ... unless exist_ok):
drawn images under their file names, drawn videos as ``<stem>.mp4``, ``labels/<stem>.txt``
(YOLO format: class cx cy w h [score] [id], normalised to the original image: the score with
--save-conf, the track id with --track, -1 for a box no track holds; video frames as
``<stem>_<frame>.txt``) and ``detections.json`` (every image with its boxes in original pixels,
each box with its "id" under --track).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.backends import compile_backend
from engine.detect.predictor import Detections, Predictor
from engine.detect.sources import Frame, Source
from engine.detect.track import Tracks
from engine.formats import BACKENDS
from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, NO_TRACE_NOTE, option
from utils.paths import increment_path


@dataclass
class DetectOptions:
    """detect.py's flags (YOLOv7's names); see detect.py --help. '' weights / source: detect.py
    picks the newest trained checkpoint / the shapes val images."""

    weights: str | list[str] = option("", "checkpoint, .onnx, .torchscript or OpenVINO .xml / folder (default: "
                                      "newest runs/train/*/weights/best.pt or last.pt); several checkpoints: their "
                                      "ensemble", nargs="+")
    source: str = option("", "image, folder, glob, .txt list, video, webcam index or URL (default: the built-in "
                         "shapes val images)")
    img_size: int | None = option(None, "inference size, longer side (default: the checkpoint's validation size, "
                                  "else 640)", aliases=["--img"], at_least=MIN_IMG_SIZE,
                                  at_most=MAX_IMG_SIZE)
    conf_thres: float = option(0.25, "score threshold", at_least=0.0, at_most=1.0)
    iou_thres: float = option(0.45, "NMS IoU threshold", at_least=0.0, at_most=1.0)
    max_det: int = option(300, "most detections per image", at_least=1)
    device: str = option("", "'' (auto), cpu, 0 or mps")
    classes: list[int] | None = option(None, "keep only these class indices", at_least=0)
    agnostic_nms: bool = option(False, "NMS across classes")
    augment: bool = option(False, "test-time augmentation (checkpoints only)")
    backend: str = option("auto", "what runs --weights (default: by its kind; an .onnx file may also run on "
                          "openvino)", choices=BACKENDS)
    batch_size: int = option(8, "images per forward (folders, lists)", at_least=1)
    track: bool = option(False, "give boxes track ids across video frames (ByteTrack; a folder of images is "
                         "tracked as one sequence in file order)")
    tile: int | None = option(None, "also detect in overlapping TILE x TILE pixel tiles and merge by NMS (small "
                              "objects in large images)", at_least=MIN_IMG_SIZE, at_most=MAX_IMG_SIZE)
    tile_overlap: float = option(0.2, "overlap of neighbouring --tile tiles, a fraction of a tile", at_least=0.0,
                                 below=1.0)
    save_txt: bool = option(False, "write labels/*.txt (YOLO rows: class cx cy w h [score] [id], normalised)")
    save_conf: bool = option(False, "add the score to --save-txt rows")
    save_json: bool = option(False, "write detections.json (xyxy original pixels, an id per box with --track)")
    nosave: bool = option(False, "do not write drawn images or videos")
    project: str = option("runs/detect")
    name: str = option("exp")
    exist_ok: bool = option(False, "reuse project/name instead of incrementing")
    line_thickness: int | None = option(None, "box line width in pixels", at_least=1)
    hide_labels: bool = option(False, "draw boxes without labels")
    hide_conf: bool = option(False, "draw labels without scores")
    json: bool = option(False, "print the summary as one JSON object (last line)")
    compile: bool = option(False, "torch.compile the model (checkpoints only; the first batches compile)")
    no_trace: bool = option(False, inert=NO_TRACE_NOTE)  # YOLOv7 detect.py's flag


def summary_line(det: Detections) -> str:
    """'2 circles, 1 square' style counts per class (YOLOv7's per-image line), or '(no detections)'."""
    counts = Counter(int(c) for c in det.classes)
    if not counts:
        return "(no detections)"
    parts = []
    for cls in sorted(counts):
        name = det.name(cls)
        parts.append(f"{counts[cls]} {name}{'s' if counts[cls] > 1 else ''}")
    return ", ".join(parts)


def draw(image_bgr: np.ndarray, det: Detections, opt: DetectOptions) -> np.ndarray:
    """A copy of the BGR image with the detections drawn as detect.py's flags ask."""
    return det.plot(image_bgr, line_thickness=opt.line_thickness, hide_labels=opt.hide_labels,
                    hide_conf=opt.hide_conf)


class VideoSink:
    """One cv2.VideoWriter per video or stream, opened on its first frame."""

    def __init__(self, save_dir: Path) -> None:
        self.save_dir = save_dir
        self.writers: dict[str, cv2.VideoWriter] = {}
        self.files: list[Path] = []

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if frame.path not in self.writers:
            stem = Path(frame.path).stem if frame.kind == "video" else f"stream{len(self.writers)}"
            path = self.save_dir / f"{stem}.mp4"
            h, w = image.shape[:2]
            self.writers[frame.path] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"),
                                                       frame.fps or 30.0, (w, h))
            self.files.append(path)
        self.writers[frame.path].write(image)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.release()
        self.writers.clear()


def frame_label(frame: Frame, number: int, total: int) -> str:
    """'image 3/10 path' or 'video 1 (frame 5/90) path', the start of the per-image line."""
    if frame.kind == "image":
        return f"image {number}/{total} {frame.path}"
    count = f"/{frame.count}" if frame.count else ""
    return f"{frame.kind} (frame {frame.index + 1}{count}) {frame.path}"


def predictor_for(opt: DetectOptions) -> Predictor:
    """The Predictor that ``opt``'s model and thresholds describe."""
    predictor = Predictor(opt.weights, opt.device, opt.img_size, opt.conf_thres, opt.iou_thres, opt.classes,
                          opt.agnostic_nms, opt.max_det, opt.augment, opt.backend, tile=opt.tile,
                          tile_overlap=opt.tile_overlap)
    if opt.compile:
        compile_backend(predictor.backend, opt.weights)
    return predictor


def sequence_of(frame: Frame) -> str:
    """The sequence a frame is tracked within: its video or stream; still images form one."""
    return frame.path if frame.kind != "image" else ""


def attach_frames(tracks: Tracks | None, frames: list[Frame], results: list[Detections]) -> None:
    """Give each result its frame's image, path and frame number (None for a still image), and its
    track ids when ``tracks`` is not None."""
    for frame, det in zip(frames, results, strict=True):
        det.image, det.path = frame.image, frame.path
        det.frame = frame.index if frame.kind != "image" else None
        if tracks is not None:
            tracks.update(det, sequence_of(frame), frame.fps)


def run_detect(opt: DetectOptions, predictor: Predictor | None = None) -> dict:
    """Detect on every frame of ``opt.source``; write outputs; return a summary dict
    (save_dir, images, detections, per-class counts, ms_per_image, skipped, files)."""
    source = Source(opt.source, opt.batch_size)  # first: a bad source fails before the model loads
    predictor = predictor or predictor_for(opt)
    names = predictor.names
    save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    if opt.save_txt:
        (save_dir / "labels").mkdir(exist_ok=True)
    videos = VideoSink(save_dir)
    tracks = Tracks() if opt.track else None
    entries, totals, seconds, images = [], Counter(), 0.0, 0
    try:
        for batch in source:
            start = time.perf_counter()
            results = predictor.predict([f.image for f in batch])
            attach_frames(tracks, batch, results)
            elapsed = time.perf_counter() - start
            seconds += elapsed
            for frame, det in zip(batch, results, strict=False):
                images += 1
                totals.update(int(c) for c in det.classes)
                h, w = det.shape
                print(f"{frame_label(frame, images, len(source.files))}: {w}x{h} {summary_line(det)} "
                      f"({1000 * elapsed / len(batch):.1f} ms)", flush=True)
                save_outputs(frame, det, opt, save_dir, videos)
                if opt.save_json:
                    entries.append(det.to_dict())
    finally:
        videos.close()
    if opt.save_json:
        (save_dir / "detections.json").write_text(json.dumps(entries, indent=1))
    return {
        "save_dir": str(save_dir),
        "images": images,
        "detections": sum(totals.values()),
        "per_class": {names[c] if c < len(names) else str(c): n for c, n in sorted(totals.items())},
        "ms_per_image": round(1000 * seconds / max(images, 1), 2),
        "skipped": source.skipped,
        "videos": [str(p) for p in videos.files],
    }


def save_outputs(frame: Frame, det: Detections, opt: DetectOptions, save_dir: Path,
                 videos: VideoSink) -> None:
    """Drawn image or video frame, and the YOLO label file, of one frame."""
    stem = Path(frame.path).stem if frame.kind == "image" else f"{Path(frame.path).stem}_{frame.index}"
    if opt.save_txt:
        det.save_txt(save_dir / "labels" / f"{stem}.txt", opt.save_conf)
    if opt.nosave:
        return
    drawn = draw(frame.image, det, opt)
    if frame.kind == "image":
        out = save_dir / Path(frame.path).name
        if not cv2.imwrite(str(out), drawn):
            print(f"warning: could not write {out}", file=sys.stderr)
    else:
        videos.write(frame, drawn)
