"""train.py --evolve on tiny data: trials, outputs train.py accepts, fixed keys, pruning, failed
trials, a killed process continued, two processes on one SQLite study."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from train_helpers import tiny_data, tiny_options

import train as train_cli
from engine.evolve.run import evolve
from engine.evolve.space import TABLE, UNUSED, searched_keys
from engine.train.loop import NonFiniteLossError
from engine.train.loop import train as real_train
from utils.config import ConfigError, Hyp, load

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
QUICK = ["warmup_epochs=0", "mosaic=0.5", "mixup=0.0", "paste_in=0.0", "loss_ota=false"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evolve")
    tiny_data(root, n_train=16, n_val=8)
    return root


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "evolve.csv") as f:
        return list(csv.DictReader(f))


def cli_args(root: Path, name: str, trials: int) -> list[str]:
    return ["--evolve", str(trials), "--data", str(root / "tiny.yaml"), "--cfg", str(root / "tiny_model.yaml"),
            "--epochs", "1", "--img", "64", "--batch-size", "8", "--workers", "0", "--device", "cpu",
            "--project", str(root / "runs"), "--name", name, "--noautoanchor", *QUICK]


def test_search_space_is_yolov7s_table_minus_fixed_and_unused():
    keys = searched_keys({"lr0"})
    assert "lr0" not in keys and not set(UNUSED) & set(keys)
    assert not {k for k, r in TABLE.items() if r.gain == 0} & set(keys)  # YOLOv7 never mutates these
    assert {"momentum", "weight_decay", "mosaic", "hsv_h"} <= set(keys)
    assert TABLE["lr0"].log and TABLE["weight_decay"].log and not TABLE["momentum"].log


def test_plots_leave_the_backend_and_style_of_pyplot_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    from engine.evolve.report import write_plots

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr0", 1e-3, 1e-1, log=True) - t.suggest_float("momentum", 0.6, 0.98),
                   n_trials=4)
    previous = matplotlib.get_backend()
    plt.switch_backend("svg")  # a user's own (non-Agg) backend, as a notebook's inline one
    try:
        style = dict(matplotlib.rcParams)
        written = write_plots(study, tmp_path)
        assert matplotlib.get_backend() == "svg" and dict(matplotlib.rcParams) == style  # no ggplot left behind
        assert not plt.get_fignums()  # every figure closed
    finally:
        plt.switch_backend(previous)
    assert [p.name for p in written] == ["evolve_history.png", "evolve_importances.png", "evolve_slices.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_three_trials_write_csv_and_hyp_train_accepts(root):
    opt = tiny_options(root, name="three", evolve=3, overrides=[*QUICK, "lr0=0.02"])
    summary = evolve(opt)
    folder = Path(summary["save_dir"])
    table = rows(folder)
    assert [r["trial"] for r in table] == ["0", "1", "2"] and {r["state"] for r in table} == {"COMPLETE"}
    assert all(r["epochs_run"] == "2" and set(r) >= {"fitness", "lr0", "mosaic", "loss_ota"} for r in table)
    assert {float(r["lr0"]) for r in table} == {0.02}  # fixed with key=value: never searched
    assert {float(r["warmup_epochs"]) for r in table} == {0.0}
    assert len({r["momentum"] for r in table}) == 3  # searched
    hyp = load(Hyp, folder / "hyp_evolved.yaml")
    assert hyp.lr0 == 0.02 and summary["best_trial"] in (0, 1, 2)
    for name in ("evolve_history.png", "evolve_importances.png", "evolve_slices.png", "study.db"):
        assert (folder / name).is_file(), name
    assert list(folder.glob("events.out.tfevents.*"))
    weights = [p.parent.name for p in folder.glob("trials/trial*/weights")]
    assert weights == [f"trial{summary['best_trial']}"]  # only the best trial keeps its checkpoint
    best_dir = folder / "trials" / f"trial{summary['best_trial']}"
    assert (best_dir / "results.png").is_file() and (best_dir / "val" / "confusion_matrix.png").is_file()
    assert len(list(folder.glob("trials/*/results.png"))) == 1
    assert not list(folder.glob("trials/*/train_batch0.jpg"))  # no pictures in trial folders
    assert train_cli.main(["--hyp", str(folder / "hyp_evolved.yaml"), "--data", str(root / "tiny.yaml"), "--cfg",
                           str(root / "tiny_model.yaml"), "--epochs", "1", "--img", "64", "--batch-size", "8",
                           "--workers", "0", "--device", "cpu", "--project", str(root / "runs"), "--noautoanchor",
                           "--noplots"]) == 0


def test_pruned_and_failed_trials_are_recorded_and_the_study_goes_on(root):
    calls = []

    def diverge_first(opt, **kwargs):  # the first trial diverges, as a bad lr0 makes it
        calls.append(opt.name)
        if len(calls) == 1:
            raise NonFiniteLossError("loss was NaN/inf for 5 batches in a row")
        return real_train(opt, **kwargs)

    opt = tiny_options(root, name="prune", evolve=3)
    summary = evolve(opt, pruner=optuna.pruners.ThresholdPruner(lower=1.0), train_fn=diverge_first)
    table = rows(Path(summary["save_dir"]))
    assert [r["state"] for r in table] == ["FAIL", "PRUNED", "PRUNED"]
    assert "NaN" in table[0]["error"] and table[0]["fitness"] == ""
    assert [r["epochs_run"] for r in table[1:]] == ["1", "1"]  # stopped after epoch 0 of 2
    assert summary["best_trial"] == -1 and not (Path(summary["save_dir"]) / "hyp_evolved.yaml").exists()


@pytest.mark.parametrize("flags", [["--resume"], ["--notest"]])
def test_refused_combinations(root, flags, capsys):
    assert train_cli.main([*cli_args(root, "refused", 1), *flags]) == 2
    assert "--evolve" in capsys.readouterr().err


def test_refused_under_ddp(root, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="torchrun"):
        evolve(tiny_options(root, name="ddp", evolve=1))


def test_storage_url_and_study_name(root, tmp_path):
    def fake_train(opt, *, on_epoch_end):  # the storage is under test here, not the trainer
        assert on_epoch_end(0, {"fitness": 0.25}) is False
        return {"epochs": 1, "fitness": 0.25}

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    opt = tiny_options(root, project=str(tmp_path / "out"), name="w1", evolve=2, evolve_storage=url,
                       evolve_study="mine")
    summary = evolve(opt, train_fn=fake_train)
    assert summary["study"] == "mine" and summary["save_dir"] == str(tmp_path / "out" / "w1")
    assert len(optuna.load_study(study_name="mine", storage=url).trials) == 2
    assert evolve(opt, train_fn=fake_train)["trials"] == 2  # already done: nothing more runs
    with pytest.raises(ConfigError, match="--epochs"):  # a continuation must be the same experiment
        evolve(tiny_options(root, project=str(tmp_path / "out"), name="w1", evolve=3, epochs=5,
                            evolve_storage=url, evolve_study="mine"), train_fn=fake_train)
    with pytest.raises(ConfigError, match="--evolve-storage"):
        evolve(tiny_options(root, name="bad", evolve=1, evolve_storage="nosuchdb://x"), train_fn=fake_train)


def running_trials(db: Path) -> list[int]:
    with sqlite3.connect(db, timeout=30) as con:
        return [n for (n,) in con.execute("select number from trials where state = 'RUNNING'")]


def test_killed_process_continues_the_same_study(root):
    folder = root / "runs" / "killed"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *cli_args(root, "killed", 3)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def training_in_second_trial() -> bool:  # a trial finished and the next one is in its epochs
        running = (folder / "evolve.csv").is_file() and running_trials(folder / "study.db")
        return bool(running) and (folder / "trials" / f"trial{running[0]}" / "opt.yaml").is_file()

    deadline = time.time() + 120
    while time.time() < deadline and not training_in_second_trial():
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = running_trials(folder / "study.db")
    before = rows(folder)
    assert killed and before and proc.returncode == -signal.SIGKILL
    assert train_cli.main(cli_args(root, "killed", 3)) == 0  # the same command continues
    after = {int(r["trial"]): r for r in rows(folder)}
    for r in before:  # finished trials are kept, not run again
        assert after[int(r["trial"])]["worker"] == r["worker"] == f"{os.uname().nodename}:{proc.pid}"
    assert after[killed[0]]["state"] == "FAIL" and "died" in after[killed[0]]["error"]
    retry = [r for n, r in after.items() if n > killed[0] and r["momentum"] == after[killed[0]]["momentum"]]
    assert len(retry) == 1 and retry[0]["state"] == "COMPLETE"  # retried once, same hyper-parameters
    assert sum(r["state"] == "COMPLETE" for r in after.values()) == 3 and len(after) == 4


def test_two_processes_share_one_sqlite_study(root):
    args = [sys.executable, str(REPO / "train.py"), *cli_args(root, "shared", 3)]
    first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    second = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for p in (first, second):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    table = rows(root / "runs" / "shared")
    assert [r["trial"] for r in table] == ["0", "1", "2"] and {r["state"] for r in table} == {"COMPLETE"}
    assert {r["worker"].rsplit(":", 1)[1] for r in table} == {str(first.pid), str(second.pid)}
    assert len({r["momentum"] for r in table}) == 3  # distinct trials
    assert not (root / "runs" / "shared2").exists()  # both used the one study
    assert yaml.safe_load((root / "runs" / "shared" / "hyp_evolved.yaml").read_text())["lr0"] > 0
