"""engine/train/log.py and plots.py: results.csv columns, TensorBoard tags and results.png panels
all derive from the evaluation's TrainMetrics and the loss's LossItems, so adding a metric is one
edit."""

from __future__ import annotations

import csv
import dataclasses

import torch

import engine.train.log as log
from engine.train.plots import panel_grid, plot_results
from engine.train.validation import EpochValidation
from engine.val.evaluator import TRAIN_METRICS, TrainMetrics
from models.loss import LossItems

# results.csv's header: a user interface, unchanged since YOLOv7 (x/lr<i>: one per parameter group)
COLUMNS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
           "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss", "x/lr0",
           "fitness"]


def losses(*values: float) -> LossItems:
    return LossItems(*torch.tensor(values))


def test_panel_grid_from_the_count():
    assert panel_grid(10) == (2, 5)  # YOLOv7's results.png
    assert panel_grid(11) == (3, 5) and panel_grid(3) == (1, 3) and panel_grid(1) == (1, 1)


def test_an_added_metric_reaches_csv_and_results_png(tmp_path, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class WithAP75(TrainMetrics):  # a metric added: one more field, logged as AP75
        ap75: float = dataclasses.field(default=0.0, metadata={"name": "AP75"})

    monkeypatch.setattr(log, "TRAIN_METRICS", (*TRAIN_METRICS, "AP75"))  # as evaluator.py derives it
    metrics = WithAP75(precision=0.1, recall=0.2, map50=0.3, map50_95=0.4, ap75=0.5)
    rows = [log.epoch_row(e, losses(1, 1, 1), metrics, losses(1, 1, 1), [0.01]) for e in range(2)]
    assert rows[0]["metrics/AP75"] == 0.5 and set(log.result_panels()) <= set(rows[0])
    log.write_results_csv(rows, tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        assert "metrics/AP75" in next(csv.reader(f))
    assert plot_results(tmp_path / "results.csv").is_file()  # 11 panels: a 3 x 5 grid


def test_columns_are_read_by_name():
    metrics = TrainMetrics(precision=0.1, recall=0.2, map50=0.5, map50_95=0.25)
    row = log.epoch_row(3, losses(0.5, 0.25, 2.0), metrics, losses(1.0, 4.0, 0.125), [0.1])
    assert list(row) == COLUMNS
    assert (row["train/box_loss"], row["train/obj_loss"], row["train/cls_loss"]) == (0.5, 0.25, 2.0)
    assert (row["val/box_loss"], row["val/obj_loss"], row["val/cls_loss"]) == (1.0, 4.0, 0.125)
    assert (row["metrics/precision"], row["metrics/mAP_0.5"], row["metrics/mAP_0.5:0.95"]) == (0.1, 0.5, 0.25)
    assert row["fitness"] == 0.1 * 0.5 + 0.9 * 0.25
    assert log.result_panels() == tuple(COLUMNS[1:11])


def test_an_epoch_without_validation_logs_zeros():
    skipped = EpochValidation.skipped([0.5, 0.25])
    row = log.epoch_row(0, losses(1, 1, 1), skipped.metrics, skipped.losses, [0.1])
    assert all(row[k] == 0 for k in COLUMNS[4:11]) and skipped.class_maps == [0.5, 0.25]


def test_progress_line_has_each_term_and_the_total():
    assert log.progress_header().split() == ["Epoch", "mem", "box", "obj", "cls", "total", "labels", "img_size", "img/s"]
    line = log.progress_line(2, 10, "1.2G", losses(0.5, 0.25, 2.0), 17, 640, 123.45)
    assert line.split() == ["2/9", "1.2G", "0.5", "0.25", "2", "2.75", "17", "640", "123.5"]
