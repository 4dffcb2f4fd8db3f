"""Tracking across video frames: ByteTrack from the ``trackers`` library (the maintained successor of
supervision's ByteTrack) gives each box an id that stays the same while the object stays in view.

    tracks = Tracks()
    for frame, det in zip(frames, detections):
        tracks.update(det, frame.path, frame.fps)   # sets det.ids: int64 [n], -1 = no track yet

A new track's first box has id -1: the library gives the id when the track is matched again, on the
object's second frame (so an object seen in a single frame never takes an id).

One tracker per sequence (a video, a stream, or the still images of a source in their order, as an
image-sequence data set stores a clip); ids restart at 0 in each sequence. The tracker is
class-agnostic: it matches boxes by IoU after a Kalman prediction of where each track moves.
"""

from __future__ import annotations

import numpy as np

from engine.detect.results import Detections
from utils.errors import UserError

# ByteTrack's two score levels (its paper's track_thresh 0.5): boxes scoring at least HIGH_SCORE are
# matched first and may start a track; lower ones (down to the detector's --conf-thres) only extend
# a track that lost its high-scoring box, which is what keeps ids through brief occlusions.
HIGH_SCORE = 0.5
START_SCORE = 0.5
MIN_IOU = 0.1  # the least IoU between a track's predicted box and a box for them to match


def _byte_tracker(fps: float):
    """A fresh ``trackers.ByteTrackTracker`` that keeps a lost track for one second of frames."""
    try:
        from trackers import ByteTrackTracker  # local: only --track needs the library
    except ImportError as e:
        raise UserError(f"--track needs the 'trackers' package ({e}); pip install -r requirements.txt") from None
    tracker = ByteTrackTracker(lost_track_buffer=30, frame_rate=fps or 30.0, track_activation_threshold=START_SCORE,
                               minimum_iou_threshold=MIN_IOU, high_conf_det_threshold=HIGH_SCORE)
    tracker.reset()  # the library counts ids per class, not per tracker: start this sequence at 0
    return tracker


def assign_ids(tracker, det: Detections) -> np.ndarray:
    """Update ``tracker`` with one frame's boxes; their track ids, int64 [n] in ``det``'s order (-1:
    a box that neither continues nor starts a track)."""
    import supervision as sv  # local: the library's box container, only for --track

    ids = np.full(len(det), -1, np.int64)
    boxes = sv.Detections(xyxy=det.boxes.astype(np.float32).reshape(-1, 4), confidence=det.scores,
                          class_id=det.classes, data={"index": np.arange(len(det))})
    tracked = tracker.update(boxes)  # a re-ordered subset of the boxes: map back by index
    if len(tracked):
        ids[np.asarray(tracked.data["index"], np.int64)] = np.asarray(tracked.tracker_id, np.int64)
    return ids


class Tracks:
    """ByteTrack over consecutive sequences (a source's videos, streams, still images) in turn."""

    def __init__(self) -> None:
        self.tracker = None
        self.sequence: str | None = None

    def update(self, det: Detections, sequence: str, fps: float = 30.0) -> Detections:
        """Set ``det.ids`` from the tracker of ``sequence`` (a video path, a stream, '' for still
        images): a new sequence starts a new tracker, so ids never carry over between clips.
        Returns ``det``."""
        if sequence != self.sequence:
            self.tracker, self.sequence = _byte_tracker(fps), sequence
        det.ids = assign_ids(self.tracker, det)
        return det
