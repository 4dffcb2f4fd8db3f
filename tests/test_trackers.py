"""MLflow and W&B tracking (engine/train/trackers.py) around tiny CPU trainings: MLflow against a
real SQLite store, W&B offline, a tracking server that is down, a library that is absent. The
tests that need a library skip when it is not installed (neither is in requirements.txt)."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import re
import socket
import time

import pytest
import yaml
from train_helpers import tiny_data, tiny_options

from engine.train import train
from engine.train.trackers import RUN_IDS_FILE, run_params, wanted

WANDB_FLUSH_S = 10


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    tiny_data(root, n_train=8, n_val=4)
    return root


@pytest.fixture(autouse=True)
def no_tracker_environment(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def results_columns(run_dir) -> set[str]:
    """results.csv's column names but ``epoch`` (the step)."""
    header = (run_dir / "results.csv").read_text().splitlines()[0]
    return {c.strip() for c in header.split(",")} - {"epoch"}


def tracker_lines(caplog, level=logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "engine.train.trackers" and r.levelno >= level]


def test_wanted_by_flag_or_by_the_libraries_environment_variables():
    assert wanted([], {}) == []
    assert wanted(["wandb", "mlflow", "mlflow"], {}) == ["mlflow", "wandb"]
    assert wanted([], {"MLFLOW_TRACKING_URI": "sqlite:///x.db"}) == ["mlflow"]
    assert wanted([], {"WANDB_MODE": "offline"}) == ["wandb"]
    assert wanted([], {"WANDB_MODE": "disabled"}) == []


def test_params_keep_options_and_hyp_apart():
    params = run_params({"label_smoothing": 0.0, "epochs": 3}, {"label_smoothing": 0.1, "lr0": 0.01})
    assert params == {"label_smoothing": 0.0, "epochs": 3, "hyp/label_smoothing": 0.1, "hyp/lr0": 0.01}


def test_logger_flag_is_repeatable():
    import train as train_script

    assert train_script.parse_options(["--logger", "mlflow", "--logger", "wandb"]).logger == ["mlflow", "wandb"]
    assert train_script.parse_options([]).logger == []


def test_an_absent_library_is_one_line_and_training_goes_on(root, monkeypatch, caplog):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    summary = train(tiny_options(root, epochs=1, name="absent", logger=["mlflow"]))
    assert summary["epochs"] == 1
    (line,) = tracker_lines(caplog)
    assert "mlflow: not installed" in line


def test_mlflow_sqlite_store_gets_params_every_row_artifacts_and_the_resume(root, tmp_path, monkeypatch, caplog):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # the store's default artifact folder (./mlruns) lands here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # on by its variable
    caplog.set_level(logging.INFO)
    opt = tiny_options(root, epochs=2, save_period=1, name="mlflow")
    summary = train(opt)
    run_dir = root / "runs" / "mlflow"
    run_id = yaml.safe_load((run_dir / RUN_IDS_FILE).read_text())["mlflow"]
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "mlflow"
    assert run.data.params["epochs"] == "2" and "hyp/lr0" in run.data.params
    assert set(run.data.metrics) == results_columns(run_dir)  # results.csv's names, every one
    history = client.get_metric_history(run_id, "metrics/mAP_0.5:0.95")
    assert [m.step for m in history] == [0, 1]
    assert history[-1].value == pytest.approx(summary["final_mAP50_95"])
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "weights")}
    assert {"results.png", "results.csv", "weights/best.pt"} <= artifacts
    cost = [float(m) for line in tracker_lines(caplog, logging.INFO)
            for m in re.findall(r"mlflow: ([\d.]+) ms per epoch", line)]
    assert len(cost) == 1
    print(f"MLflow logging: {cost[0]:.1f} ms per epoch (SQLite store)")

    # --resume from the first epoch's checkpoint continues the same MLflow run
    train(dataclasses.replace(opt, resume=str(run_dir / "weights" / "epoch_000.pt")))
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run_id]
    steps = [m.step for m in client.get_metric_history(run_id, "metrics/mAP_0.5:0.95")]
    assert steps == [0, 1, 1] and client.get_run(run_id).info.status == "FINISHED"


def test_mlflow_server_down_is_one_line_and_training_goes_on(root, monkeypatch, caplog):
    pytest.importorskip("mlflow")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    summary = train(tiny_options(root, epochs=1, name="down"))
    assert summary["epochs"] == 1 and (root / "runs" / "down" / "weights" / "best.pt").is_file()
    (line,) = tracker_lines(caplog)
    assert line.startswith("mlflow: could not start") and f"127.0.0.1:{port}" in line


def test_wandb_offline_run_gets_every_row(root, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []
    log = wandb.Run.log
    monkeypatch.setattr(wandb.Run, "log", lambda self, data, *a, **k: (logged.append((data, k)), log(self, data, *a, **k)))
    train(tiny_options(root, epochs=1, name="wandb"))
    run_dir = root / "runs" / "wandb"
    columns = results_columns(run_dir)
    run_id = yaml.safe_load((run_dir / RUN_IDS_FILE).read_text())["wandb"]
    assert [k for d, k in logged if set(d) == columns] == [{"step": 0}]  # results.csv's names, every one
    assert any("results" in d for d, _ in logged)  # the pictures, at the end
    (offline,) = run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    for _ in range(WANDB_FLUSH_S * 10):  # wandb's service process may still be writing the file
        if all(name.encode() in offline.read_bytes() for name in columns):
            break
        time.sleep(0.1)
    assert all(name.encode() in offline.read_bytes() for name in columns)  # on disk, for wandb sync
