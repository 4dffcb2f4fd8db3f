"""The released YOLOv7 weights by name: ``--weights yolov7-tiny.pt`` fetches the official file.

A ``--weights`` value that is not a file but whose name is one of ``RELEASED`` (the files of
WongKinYiu/yolov7's release v0.1 that its README links: the test weights and the ``_training``
ones for transfer learning) is taken from the weights folder (``$ELAN_YOLO_WEIGHTS``, default
``<repo>/weights``) and downloaded there from the release address first when missing
(``$ELAN_YOLO_WEIGHTS_URL`` replaces the address, e.g. a mirror). The file stays official;
``models.checkpoint_io.read_checkpoint`` converts it in memory as it does any official file.
"""

from __future__ import annotations

import os
from pathlib import Path

from utils.downloads import download

RELEASE_URL = "https://github.com/WongKinYiu/yolov7/releases/download/v0.1"
URL_ENV = "ELAN_YOLO_WEIGHTS_URL"
DIR_ENV = "ELAN_YOLO_WEIGHTS"
_REPO = Path(__file__).resolve().parents[1]

# name -> size in bytes where a published download log gives it (a wrong size is refused), else None
RELEASED: dict[str, int | None] = {
    "yolov7-tiny.pt": 12_639_769,
    "yolov7.pt": None,
    "yolov7x.pt": None,
    "yolov7-w6.pt": None,
    "yolov7-e6.pt": None,
    "yolov7-d6.pt": None,
    "yolov7-e6e.pt": 304_425_133,
    "yolov7_training.pt": None,
    "yolov7x_training.pt": None,
    "yolov7-w6_training.pt": None,
    "yolov7-e6_training.pt": None,
    "yolov7-d6_training.pt": None,
    "yolov7-e6e_training.pt": None,
}


def weights_dir() -> Path:
    """Where released weights are kept: ``$ELAN_YOLO_WEIGHTS`` or ``<repo>/weights``."""
    env = os.environ.get(DIR_ENV)
    return Path(env).expanduser() if env else _REPO / "weights"


def release_url(name: str) -> str:
    """The address of released file ``name`` (``$ELAN_YOLO_WEIGHTS_URL`` replaces the base)."""
    return f"{os.environ.get(URL_ENV, RELEASE_URL).rstrip('/')}/{name}"


def resolve_weights(path: str | Path) -> Path:
    """``path`` itself when it exists or is not a released name; else the released file of that
    name in ``weights_dir()``, downloaded first when missing (utils.downloads.DownloadError,
    one line naming the address and where to put the file by hand, when that fails)."""
    p = Path(path).expanduser()
    if p.exists() or p.name not in RELEASED:
        return p
    local = weights_dir() / p.name
    if local.is_file():
        return local
    url = release_url(p.name)
    return download(url, local, expected_size=RELEASED[p.name],
                    hint=f"download it by hand and put it at {local} (or give its path to --weights)")
