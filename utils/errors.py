"""The one error path: expected failures are ``UserError``s; command scripts turn them into one line.

Library code raises ``UserError`` (or a subclass such as ``ConfigError``) for anything a user
can cause: a wrong flag, file, value, device, a malformed config, data set or checkpoint, a full
or read-only disk. Library callers (an evolution trial, a notebook) catch it like any exception.
Only a command's ``main`` is wrapped by ``command_main``, which prints

    train.py: error: <what> (<file>[:line] or <flag/key>): <why>

on stderr and returns 2. Anything else is a bug of ours and stays a traceback. ``--traceback``
on any command line (or ``ELAN_YOLO_TRACEBACK=1``) shows the traceback of a UserError too, for
bug reports.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "ELAN_YOLO_TRACEBACK"

# OSErrors the environment causes (missing or protected paths, full disks), not our code.
_ENVIRONMENT_ERRNOS = {
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
    errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EFBIG, errno.EMFILE, errno.ELOOP,
}


class UserError(Exception):
    """An expected failure caused by input or environment; the message names the culprit.

    ``UserError(why, where=..., line=..., what=...)`` composes ``what (where:line): why``;
    ``UserError(message)`` alone keeps a message that already names its file or key.
    """

    def __init__(self, why: str, *, where: str | Path | None = None, line: int | None = None,
                 what: str | None = None) -> None:
        self.why, self.where, self.line, self.what = why, where, line, what
        super().__init__(self._compose())

    def _compose(self) -> str:
        place = "" if self.where is None else f"{self.where}" + ("" if self.line is None else f":{self.line}")
        head = " ".join(s for s in (self.what or "", f"({place})" if place else "") if s)
        return f"{head}: {self.why}" if head else self.why


def one_line(message: str) -> str:
    """``message`` folded onto one line (a multi-line error reads as one line in a log)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def os_error_message(e: OSError) -> str:
    """A one-line description of an environmental OSError that names its path."""
    path = e.filename if e.filename is not None else "?"
    if e.errno == errno.ENOSPC:
        return f"no space left on {path}"
    if e.errno == errno.EROFS:
        return f"read-only file system ({path}): cannot write"
    reason = e.strerror or e.__class__.__name__
    return f"{reason.lower()} ({path})"


def is_environment_error(e: BaseException) -> bool:
    """True for an OSError the user's environment caused (not a bug of ours)."""
    return isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS


def wants_traceback(argv: Sequence[str] | None) -> bool:
    """True when the user asked to see tracebacks (``--traceback`` or ELAN_YOLO_TRACEBACK=1)."""
    argv = sys.argv[1:] if argv is None else argv
    return TRACEBACK_FLAG in argv or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def command_main(prog: str) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Decorate a command's ``main(argv) -> int``: UserErrors and environmental OSErrors become
    one line on stderr and exit code 2; Ctrl-C exits 130; other exceptions propagate (our bugs).
    ``--traceback`` is removed from argv before ``main`` sees it."""

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(main)
        def wrapped(argv: list[str] | None = None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            show = wants_traceback(argv)
            argv = [a for a in argv if a != TRACEBACK_FLAG]
            try:
                return main(argv)
            except UserError as e:
                if show:
                    raise
                print(f"{prog}: error: {one_line(str(e))}", file=sys.stderr)
            except OSError as e:
                if show or not is_environment_error(e):
                    raise
                print(f"{prog}: error: {os_error_message(e)}", file=sys.stderr)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            return 2

        return wrapped

    return wrap
