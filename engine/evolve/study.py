"""Where an evolution's study lives: its folder, its Optuna storage, and trials of dead processes.

Default: ``runs/evolve/<name>/study.db`` (SQLite). Running the same command again continues the
newest ``<name>``, ``<name>2``, ... folder that holds a study.db (``--exist-ok``: exactly
``<name>``); a new ``--name`` starts another study. ``--evolve-storage URL`` puts the study in
any database Optuna supports; the folder then only holds this machine's outputs.

A trial whose process died (killed, out of memory) is marked FAIL and retried once with the
same hyper-parameters: at start for dead processes of this host (pid check, immediate), and by
Optuna's heartbeat for any host (the trial's heartbeat older than ``GRACE_S``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from utils.config import ConfigError
from utils.paths import increment_path

STUDY_DB = "study.db"
HEARTBEAT_S = 60  # a running trial writes a heartbeat this often (an Optuna thread)
GRACE_S = 300  # a trial without heartbeat for this long is failed and retried by any worker
WORKER_ATTR = "worker"  # user attr: "host:pid" of the process running the trial


def evolve_dir(project: str, name: str, exist_ok: bool) -> Path:
    """The folder of this evolution: the newest ``project/name[N]`` holding a study.db, else a
    new one (training's increment rule); ``exist_ok``: exactly ``project/name``."""
    base = Path(project) / name
    if exist_ok:
        return base
    pattern = re.compile(rf"^{re.escape(name)}(\d*)$")
    studies = [(int(m.group(1) or 1), p) for p in base.parent.glob(f"{name}*")
               if (m := pattern.match(p.name)) and (p / STUDY_DB).is_file()]
    return max(studies)[1] if studies else increment_path(base)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_storage(url: str) -> RDBStorage:
    """An Optuna RDB storage with heartbeats; killed trials are retried once (max_retry=1, so a
    trial that kills its own process, e.g. by running out of memory, is not retried forever)."""
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # wait for other writers
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    try:
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as e:  # sqlalchemy and its drivers raise their own types for bad URLs
        raise ConfigError(f"cannot open the study storage: {e}", what="--evolve-storage", where=url) from None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Serialise study creation between processes of this machine (two starting at once must
    not both enqueue the first trial)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def study_name(storage: RDBStorage, wanted: str, default: str) -> str:
    """``wanted`` (--evolve-study), else the newest study in ``storage``, else ``default``."""
    if wanted:
        return wanted
    studies = optuna.get_all_study_names(storage)
    if not studies:
        return default
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    newest = max(summaries, key=lambda s: (s.datetime_start is not None, s.datetime_start or 0, s._study_id))
    return newest.study_name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of dead processes on this host FAIL and retry each once; their numbers."""
    host = socket.gethostname()
    storage = study._storage
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = str(t.user_attrs.get(WORKER_ATTR, ""))
        trial_host, _, pid = who.rpartition(":")
        if trial_host != host or not pid.isdigit() or _alive(int(pid)) or int(pid) == os.getpid():
            continue
        try:  # the reason first: a finished trial takes no more attributes
            storage.set_trial_user_attr(t._trial_id, "error", f"process {who} died during the trial")
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another process got there first
            continue
        retry(study, storage.get_trial(t._trial_id))
        failed.append(t.number)
    return failed
