"""engine/train/log.py and plots.py: results.csv columns, TensorBoard tags and results.png panels
all derive from TRAIN_METRICS and LOSS_NAMES, so adding a metric is one edit."""

from __future__ import annotations

import csv

import torch

import engine.train.log as log
from engine.train.plots import panel_grid, plot_results
from engine.val.evaluator import TRAIN_METRICS


def test_panel_grid_from_the_count():
    assert panel_grid(10) == (2, 5)  # YOLOv7's results.png
    assert panel_grid(11) == (3, 5) and panel_grid(3) == (1, 3) and panel_grid(1) == (1, 1)


def test_an_added_metric_reaches_csv_and_results_png(tmp_path, monkeypatch):
    metrics = ("precision", "recall", "mAP_0.5", "mAP_0.5:0.95", "AP75")
    monkeypatch.setattr(log, "TRAIN_METRICS", metrics)
    values = {m: 0.1 * i for i, m in enumerate(metrics)}
    rows = [log.epoch_row(e, torch.ones(4), values, torch.ones(3), [0.01]) for e in range(2)]
    assert "metrics/AP75" in rows[0] and set(log.result_panels()) <= set(rows[0])
    log.write_results_csv(rows, tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        assert "metrics/AP75" in next(csv.reader(f))
    assert plot_results(tmp_path / "results.csv").is_file()  # 11 panels: a 3 x 5 grid


def test_default_columns_follow_train_metrics():
    row = log.epoch_row(0, torch.zeros(4), dict.fromkeys(TRAIN_METRICS, 0.0), torch.zeros(3), [0.1])
    assert [k for k in row if k.startswith("metrics/")] == [f"metrics/{m}" for m in TRAIN_METRICS]
    assert log.zero_metrics()[0] == dict.fromkeys(TRAIN_METRICS, 0.0)
