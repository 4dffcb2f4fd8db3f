"""Experiment tracking in MLflow and Weights & Biases, through the libraries themselves.

Both are optional: a tracker is on when its library is installed and the run asks for it
(``--logger mlflow`` / ``--logger wandb``, or the library's own environment variables:
``MLFLOW_TRACKING_URI``, ``WANDB_MODE``); otherwise nothing here imports it. A tracker gets the
run's parameters (options, and the hyper-parameters as ``hyp/<key>``) at the start, every
results.csv row as metrics under the same column names at step = epoch, and the pictures and
weights/best.pt at the end. Each tracker's run id is kept in ``<run>/trackers.yaml``, so that
``--resume`` continues the same tracked run. A tracker that fails (a server down, a bad key)
says so in one line and is off for the rest of the run: training never stops for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

LOG = logging.getLogger(__name__)
TRACKERS = ("mlflow", "wandb")
RUN_IDS_FILE = "trackers.yaml"  # in the run folder: {tracker: its run id}
ARTIFACT_PATTERNS = ("*.png", "*.jpg", "results.csv", "weights/best.pt")  # sent at the end, from the run folder
PROBE_TIMEOUT_S = 3.0  # an http tracking server that does not accept a connection by then is down
MLFLOW_PARAMS_PER_CALL = 100  # MLflow's log_batch limit


def wanted(asked: Iterable[str], env: dict[str, str] | None = None) -> list[str]:
    """The trackers a run asks for: ``asked`` (--logger) plus those their environment variables turn on."""
    env = os.environ if env is None else env
    names = set(asked)
    if env.get("MLFLOW_TRACKING_URI"):
        names.add("mlflow")
    if env.get("WANDB_MODE", "disabled") != "disabled":
        names.add("wandb")
    return [n for n in TRACKERS if n in names]


def run_params(opt: dict[str, Any], hyp: dict[str, Any]) -> dict[str, Any]:
    """One flat parameter dict: the options by name, the hyper-parameters as ``hyp/<key>``."""
    return {**opt, **{f"hyp/{k}": v for k, v in hyp.items()}}


class MLflowTracker:
    """One MLflow run, through ``MlflowClient`` (no process-wide active run is left behind)."""

    name = "mlflow"

    def __init__(self, save_dir: Path, params: dict[str, Any], run_id: str | None):
        import mlflow
        from mlflow.entities import Param

        uri = mlflow.get_tracking_uri()
        _check_reachable(uri)
        self.client = mlflow.MlflowClient(uri)
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            return
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or save_dir.parent.name
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=save_dir.name).info.run_id
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), MLFLOW_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[i:i + MLFLOW_PARAMS_PER_CALL])

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, files: list[tuple[Path, str]]) -> None:
        for path, folder in files:
            self.client.log_artifact(self.run_id, str(path), folder or None)
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """One W&B run (``WANDB_MODE=offline`` keeps it on disk under the run folder)."""

    name = "wandb"

    def __init__(self, save_dir: Path, params: dict[str, Any], run_id: str | None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or save_dir.parent.name,
                              name=save_dir.name, dir=str(save_dir), config=params, id=run_id,
                              resume="allow" if run_id else None)
        self.run_id = self.run.id

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def finish(self, files: list[tuple[Path, str]]) -> None:
        images = {f"{folder}/{p.stem}" if folder else p.stem: self.wandb.Image(str(p))
                  for p, folder in files if p.suffix in (".png", ".jpg")}
        if images:
            self.run.log(images)
        model = self.wandb.Artifact(f"run_{self.run.id}_model", type="model")
        for path, _ in files:
            if path.suffix == ".pt":
                model.add_file(str(path))
        if model.manifest.entries:
            self.run.log_artifact(model)
        self.run.finish()


BACKENDS: dict[str, Callable[[Path, dict[str, Any], str | None], Any]] = {
    "mlflow": MLflowTracker, "wandb": WandbTracker}


class Trackers:
    """The trackers of one run (rank 0); with none on, every call does nothing."""

    def __init__(self, save_dir: Path | None = None, backends: list[Any] | None = None):
        self.save_dir = save_dir
        self.backends = backends or []
        self.seconds: dict[str, float] = {b.name: 0.0 for b in self.backends}  # spent in epoch()
        self.epochs = 0

    @classmethod
    def start(cls, names: Iterable[str], save_dir: Path, params: dict[str, Any]) -> Trackers:
        """Start (or, with a run id in ``save_dir``/trackers.yaml, continue) each named tracker
        whose library is installed; one line for each that is not, or that fails to start."""
        ids_file = save_dir / RUN_IDS_FILE
        ids = (yaml.safe_load(ids_file.read_text()) or {}) if ids_file.is_file() else {}
        backends = []
        for name in names:
            if importlib.util.find_spec(name) is None:
                LOG.warning("%s: not installed (pip install %s); this run is not tracked there", name, name)
                continue
            ok, backend = _guarded(name, "start", lambda name=name: BACKENDS[name](save_dir, params, ids.get(name)))
            if ok:
                backends.append(backend)
                ids[name] = backend.run_id
                LOG.info("%s: tracking this run as %s", name, backend.run_id)
        if backends:
            ids_file.write_text(yaml.safe_dump(ids))
        return cls(save_dir, backends)

    def epoch(self, row: dict[str, float]) -> None:
        """A results.csv row: every column but ``epoch`` as a metric at step ``epoch``."""
        step = int(row["epoch"])
        metrics = {k: float(v) for k, v in row.items() if k != "epoch"}
        self.epochs += 1
        for backend in list(self.backends):
            t0 = time.perf_counter()
            self._call(backend, "log metrics", lambda b=backend: b.epoch(step, metrics))
            self.seconds[backend.name] += time.perf_counter() - t0

    def finish(self) -> None:
        """Send the run folder's pictures, results.csv and weights/best.pt; close each run."""
        if not self.backends:
            return
        files = [(p, p.parent.relative_to(self.save_dir).as_posix().strip("."))  # folder "" = the top
                 for pattern in ARTIFACT_PATTERNS for p in sorted(self.save_dir.glob(pattern))]
        for backend in list(self.backends):
            self._call(backend, "send artifacts", lambda b=backend: b.finish(files))
            LOG.info("%s: %.1f ms per epoch of logging", backend.name,
                     1000 * self.seconds[backend.name] / max(self.epochs, 1))
        self.backends = []

    def _call(self, backend: Any, what: str, fn: Callable[[], None]) -> None:
        if not _guarded(backend.name, what, fn)[0]:
            self.backends.remove(backend)


def _guarded(name: str, what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, ``fn()``), or (False, None) after one line saying why the tracker ``name`` stops
    (training goes on)."""
    try:
        return True, fn()
    except Exception as e:  # noqa: BLE001 - any tracker failure must leave the training running
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        LOG.warning("%s: could not %s (%s); tracking there is off for the rest of this run", name, what, reason)
        return False, None


def _check_reachable(uri: str) -> None:
    """Raise ConnectionError when an http(s) tracking ``uri`` accepts no connection within
    PROBE_TIMEOUT_S: MLflow's client would retry with back-off for minutes before failing."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise ConnectionError(f"tracking server {uri} unreachable: {e}") from None
