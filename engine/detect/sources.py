"""Where detect.py's images come from: an image, a folder, a glob, a .txt list, a video file, a
webcam index or a stream URL. Iteration yields batches of decoded frames (BGR, as OpenCV reads
them); files that cannot be read are skipped with a message so one bad file never stops a run.
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data.sources import IMAGE_SUFFIXES, files_in_folder, files_in_list
from utils.errors import UserError

VIDEO_SUFFIXES = {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv", ".webm"}
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://")


class SourceError(UserError, ValueError):
    """A source that cannot be used at all (missing, empty, a video that will not open)."""


@dataclass
class Frame:
    """One decoded image of a source.

    ``image``: uint8 [H, W, 3] BGR. ``path``: the file (or stream) it came from. ``kind``:
    'image', 'video' or 'stream'. For videos ``index`` is the frame number (0-based), ``count``
    the number of frames the container reports (0 when unknown) and ``fps`` its frame rate.
    """

    path: str
    image: np.ndarray
    kind: str = "image"
    index: int = 0
    count: int = 0
    fps: float = 0.0


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def is_stream(source: str) -> bool:
    """True for a webcam index ('0') or a stream URL that is not a single remote image/video file."""
    if source.isdigit():
        return True
    lower = source.lower()
    return lower.startswith(STREAM_PREFIXES) and Path(lower).suffix not in MEDIA_SUFFIXES


def _media(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.suffix.lower() in MEDIA_SUFFIXES]


def list_files(source: str) -> list[Path]:
    """Image and video files of a file, folder (recursive), glob pattern or .txt list.

    Paths in a .txt list resolve against the list's folder. Raises SourceError naming the source
    when it does not exist or holds no image or video files.
    """
    path = Path(source).expanduser()
    if any(c in source for c in "*?["):
        files = _media(sorted(Path(p) for p in glob.glob(source, recursive=True)))
    elif path.is_dir():
        files = files_in_folder(path, MEDIA_SUFFIXES)
    elif path.is_file() and path.suffix.lower() == ".txt":
        files = files_in_list(path, MEDIA_SUFFIXES)
    elif path.is_file():
        if path.suffix.lower() not in MEDIA_SUFFIXES:
            raise SourceError(f"{source}: not an image or video file (suffix {path.suffix!r})")
        files = [path]
    else:
        raise SourceError(f"{source}: no such file or folder")
    if not files:
        raise SourceError(f"{source}: no image or video files found")
    return files


def read_image(path: Path) -> np.ndarray | None:
    """uint8 [H, W, 3] BGR, or None when OpenCV cannot decode the file (the caller reports it)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def _video_frames(capture: cv2.VideoCapture, name: str, kind: str) -> Iterator[Frame]:
    """Frames of an opened capture until it ends; releases the capture."""
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == "video" else 0
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    index = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok or image is None:
                break
            yield Frame(name, image, kind, index, max(count, 0), fps)
            index += 1
    finally:
        capture.release()


def open_video(path: str | int) -> cv2.VideoCapture:
    """An opened capture; SourceError naming ``path`` when OpenCV cannot open it or read a frame."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"{path}: cannot open video or stream")
    return capture


@dataclass
class Source:
    """An iterable source. ``batch_size`` groups consecutive still images (folders, lists, globs);
    video and stream frames always come one at a time so the output video stays in order.

    ``on_skip`` receives the message for each file that cannot be read (default: stderr).
    """

    source: str
    batch_size: int = 1
    on_skip: Callable[[str], None] = field(default=_warn)

    def __post_init__(self) -> None:
        self.source = str(self.source)
        self.files = [] if is_stream(self.source) else list_files(self.source)
        self.skipped: list[str] = []

    def _skip(self, message: str) -> None:
        self.skipped.append(message)
        self.on_skip(message)

    def _stream(self) -> Iterator[list[Frame]]:
        target = int(self.source) if self.source.isdigit() else self.source
        for frame in _video_frames(open_video(target), self.source, "stream"):
            yield [frame]

    def _video(self, path: Path, single: bool) -> Iterator[list[Frame]]:
        try:
            capture = open_video(str(path))
        except SourceError as e:
            if single:
                raise
            self._skip(f"skipping {e}")
            return
        frames = 0
        for frame in _video_frames(capture, str(path), "video"):
            frames += 1
            yield [frame]
        if frames == 0:
            message = f"{path}: video opened but no frame could be decoded"
            if single:
                raise SourceError(message)
            self._skip(f"skipping {message}")

    def __iter__(self) -> Iterator[list[Frame]]:
        """Yield lists of 1..batch_size frames."""
        if not self.files:
            yield from self._stream()
            return
        batch: list[Frame] = []
        for path in self.files:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                if batch:
                    yield batch
                    batch = []
                yield from self._video(path, single=len(self.files) == 1)
                continue
            image = read_image(path)
            if image is None:
                self._skip(f"skipping {path}: cannot read image")
                continue
            batch.append(Frame(str(path), image))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
