"""Rounding up to a multiple: image sizes to the network stride, channel counts to 8."""

from __future__ import annotations

import math


def round_up(x: float, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``x``, e.g. ``round_up(100, 32) == 128``
    (YOLOv7's ``check_img_size`` for a side in pixels, ``make_divisible`` for channel counts)."""
    return math.ceil(x / multiple) * multiple
