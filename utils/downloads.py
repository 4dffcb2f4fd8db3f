"""Downloading one file over HTTP(S): resumable, size-checked, atomic (standard library only).

``download(url, dest)`` writes ``dest.part`` first and continues it with an HTTP Range request
when a previous try left one; the finished file is checked against the server's length (and a
known size, when the caller has one) and renamed onto ``dest`` only then, so ``dest`` never
holds half a file. A progress bar (tqdm) goes to stderr.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from utils.errors import UserError

CHUNK = 1 << 16
TIMEOUT_S = 30  # per socket operation, not for the whole file


class DownloadError(UserError):
    """A download that failed or gave a wrong file; the message names the address and what to do."""


def _length(response) -> int | None:
    """The body length the response announces (Content-Length), or None."""
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _open(url: str, start: int):
    """The response for ``url`` from byte ``start`` on (a Range request when ``start`` > 0)."""
    headers = {"User-Agent": "elan-yolo"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)


def _refuse(part: Path, url: str, why: str) -> DownloadError:
    part.unlink(missing_ok=True)
    return DownloadError(f"{url}: {why}; the partial file was removed, run the command again to retry")


def download(url: str, dest: Path, *, expected_size: int | None = None, hint: str = "") -> Path:
    """Fetch ``url`` into ``dest`` (created with its folder); returns ``dest``.

    Resumes ``dest`` + ``.part`` when present. ``expected_size`` (bytes, when known) is checked
    against the finished file as well as the server's Content-Length. Raises DownloadError, one
    line naming ``url``: unreachable (``hint`` says where to put the file by hand), an HTTP
    error, or a size that is not the expected one (the partial file is removed).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, start)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing after the part file's end: whole if it is the file's size
            whole = (e.headers.get("Content-Range") or "").rpartition("/")[2]
            if whole.isdigit() and int(whole) == start:
                return _finish(part, dest, url, expected_size)
            raise _refuse(part, url, f"the partial file ({start} bytes) does not fit the server's file") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}{'; ' + hint if hint else ''}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason}){'; ' + hint if hint else ''}") from None
    with response:
        if start and response.status != 206:  # the server ignored the Range: start over
            start = 0
        length = _length(response)
        total = None if length is None else start + length
        if expected_size is not None and total is not None and total != expected_size:
            raise _refuse(part, url, f"the server sends {total} bytes, not the {expected_size} of the released file")
        with open(part, "ab" if start else "wb") as f, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                desc=dest.name, disable=None) as bar:
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:  # dropped connection: keep the part file for the next try
                raise DownloadError(f"{url}: the connection broke after {f.tell()} bytes ({e}); run the "
                                    f"command again to resume from {part}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: the connection ended after {size} of {total} bytes; run the command "
                            f"again to resume from {part}")
    return _finish(part, dest, url, expected_size)


def _finish(part: Path, dest: Path, url: str, expected_size: int | None) -> Path:
    """Check the whole ``part`` file's size and move it onto ``dest`` (one rename: atomic)."""
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        raise _refuse(part, url, f"got {size} bytes, not the {expected_size} of the released file")
    os.replace(part, dest)
    return dest
