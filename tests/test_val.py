"""engine/val/evaluator.py and val.py on an untrained checkpoint of a tiny shapes set (YOLO labels
and COCO json), checked against our metric on the same detections and against pycocotools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from detect_fixtures import write_checkpoint
from train_helpers import TINY_MODEL, tiny_data

import val
from data import build_dataloader, load_data_config
from data.shapes import CLASSES
from engine.val.evaluator import TRAIN_METRICS, evaluate
from engine.val.report import pycocotools_stats, save_coco_json
from models.loss import LossItems, YoloLoss
from models.yolo import Model
from utils.coco_eval import STAT_NAMES, coco_evaluate
from utils.config import Hyp

ROOT = Path(__file__).resolve().parents[1]
IMG = 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Tiny shapes set (YOLO and COCO-json YAMLs) and an untrained checkpoint whose objectness
    is biased up, so it emits boxes that sometimes hit."""
    root = tmp_path_factory.mktemp("val")
    data_yaml = tiny_data(root, n_train=2, n_val=8)
    coco_yaml = root / "tiny_coco.yaml"
    d = yaml.safe_load(data_yaml.read_text())
    coco_yaml.write_text(yaml.safe_dump({**d, "val": "annotations/instances_val.json"}))
    torch.manual_seed(0)
    model = Model(dict(TINY_MODEL))
    with torch.no_grad():
        for conv in model.head.m:
            conv.bias.view(model.head.na, -1)[:, 4] += 3.0
            conv.bias.view(model.head.na, -1)[:, 5:] += 3.0
    model.names = list(CLASSES)
    weights = write_checkpoint(root / "tiny.pt", model)
    return {"root": root, "data": data_yaml, "coco": coco_yaml, "model": model.eval(), "weights": weights}


def _loader(data_yaml: Path, batch_size: int = 4):
    cfg = load_data_config(data_yaml)
    loader, _ = build_dataloader(cfg.split("val"), cfg.nc, img_size=IMG, batch_size=batch_size, stride=16, rect=True)
    return loader


def test_evaluate_metrics_losses_and_detections(setup) -> None:
    model = setup["model"]
    loader = _loader(setup["data"])
    r = evaluate(model, loader, loss_fn=YoloLoss(model.head, Hyp(), assigner="yolov5"))
    assert set(TRAIN_METRICS) <= set(r.metrics) and set(STAT_NAMES) <= set(r.metrics)
    assert r.train_metrics.by_name() == {k: r.metrics[k] for k in TRAIN_METRICS}
    assert r.num_images == 8 and int(r.num_labels.sum()) == len(r.gt.image)
    assert isinstance(r.losses, LossItems) and all(term > 0 for term in r.losses)
    # The untrained model finds something, but far from everything.
    assert r.detections.scores.numel() > 0 and 0 < r.metrics["mAP_0.5"] < 0.5
    # The metric equals a fresh COCO evaluation of the returned gt and detections.
    again = coco_evaluate(r.gt, r.detections, model.nc).as_dict()
    assert again == pytest.approx({k: r.metrics[k] for k in STAT_NAMES})
    # Detections are in original pixels: inside the images.
    ds = loader.dataset
    max_side = float(ds.shapes.max())
    assert float(r.detections.boxes[:, :2].min()) >= 0 and float((r.detections.boxes[:, :2] + r.detections.boxes[:, 2:]).max()) <= max_side
    # Batch size does not change the result (padding of rectangular batches aside, the same images).
    one = evaluate(model, _loader(setup["data"], batch_size=8))
    assert one.num_images == 8 and one.confusion.shape == (len(CLASSES) + 1,) * 2


def test_evaluate_equals_pycocotools_on_saved_json(setup, tmp_path: Path) -> None:
    loader = _loader(setup["coco"])
    r = evaluate(setup["model"], loader)
    ds = loader.dataset
    ids = {int(i): int(i) for i in ds.image_ids}
    path = save_coco_json(r, ids, ds.category_ids, tmp_path / "dt.json")
    entries = json.loads(path.read_text())
    assert {e["category_id"] for e in entries} <= set(ds.category_ids)
    ann = setup["root"] / "shapes_tiny" / "annotations" / "instances_val.json"
    theirs = pycocotools_stats(ann, path, list(ids))
    # The json rounds boxes to 1e-3 px; scores to 1e-5.
    np.testing.assert_allclose([r.metrics[k] for k in STAT_NAMES], [theirs[k] for k in STAT_NAMES], atol=2e-3)


def test_tta_and_single_class(setup) -> None:
    loader = _loader(setup["data"])
    plain = evaluate(setup["model"], loader, conf_thres=0.05)
    tta = evaluate(setup["model"], loader, conf_thres=0.05, augment=True)
    assert tta.detections.scores.numel() > 0 and plain.detections.scores.numel() > 0
    assert tta.metrics["AP50"] != plain.metrics["AP50"]
    single = evaluate(setup["model"], loader, conf_thres=0.05, single_cls=True)
    assert int(single.detections.category.max()) == 0 and single.coco.precision.shape[2] == 1


def test_val_command_on_checkpoint(setup) -> None:
    project = setup["root"] / "runs"
    run = subprocess.run(
        [sys.executable, "val.py", "--weights", str(setup["weights"]), "--data", str(setup["data"]), "--img", str(IMG),
         "--batch-size", "4", "--device", "cpu", "--project", str(project), "--save-txt", "--save-conf", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "Class      Images      Labels           P           R      mAP@.5  mAP@.5:.95" in out
    assert "pre-process/inference/NMS per 128x128 image" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(STAT_NAMES) <= set(summary) and summary["images"] == 8
    save_dir = Path(summary["save_dir"])
    for name in ("PR_curve.png", "F1_curve.png", "confusion_matrix.png", "test_batch0_labels.jpg", "test_batch0_pred.jpg"):
        assert (save_dir / name).stat().st_size > 1000, name
    label = next((save_dir / "labels").glob("*.txt")).read_text().splitlines()
    assert label and all(len(line.split()) == 6 for line in label)


def test_val_save_json_on_coco_dataset_prints_both(setup, capsys) -> None:
    project = setup["root"] / "runs_coco"
    rc = val.main(["--weights", str(setup["weights"]), "--data", str(setup["coco"]), "--img", str(IMG),
                   "--batch-size", "4", "--device", "cpu", "--project", str(project), "--save-json", "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "pycocotools" in out
    summary = json.loads(out.strip().splitlines()[-1])
    theirs = summary["pycocotools"]
    np.testing.assert_allclose([summary[k] for k in STAT_NAMES], [theirs[k] for k in STAT_NAMES], atol=1e-4)


def test_val_errors(setup, capsys) -> None:
    assert val.main(["--weights", str(setup["root"] / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert val.main(["--gt", "x.json"]) == 2


def test_val_speed_task_uses_deployment_thresholds(setup, capsys) -> None:
    project = setup["root"] / "runs_speed"
    rc = val.main(["--weights", str(setup["weights"]), "--data", str(setup["data"]), "--img", str(IMG),
                   "--task", "speed", "--device", "cpu", "--project", str(project), "--save-json", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # conf 0.25 instead of 0.001: fewer detections, no json and no plots written.
    assert "json" not in summary and not list(Path(summary["save_dir"]).glob("*.png"))
    assert len(summary["speed_ms"]) == 3 and summary["images"] == 8


def test_ground_truth_with_image_ids_equal_to_dataset_indices(setup) -> None:
    """COCO ids 0..N-1 in dataset order (e.g. a one-image set with id 0) are unique ids, not a
    sign of missing ones: evaluate scores the given ground truth."""
    from utils.coco_json import load_ground_truth

    loader = _loader(setup["coco"])
    ds = loader.dataset
    ref = load_ground_truth(setup["root"] / "shapes_tiny" / "annotations" / "instances_val.json").gt
    before = evaluate(setup["model"], loader, ground_truth=ref)
    new_id = {int(old): i for i, old in enumerate(ds.image_ids)}
    ds.image_ids = list(range(len(ds)))
    renamed = ref._replace(image=torch.tensor([new_id[int(i)] for i in ref.image], dtype=torch.long))
    after = evaluate(setup["model"], loader, ground_truth=renamed)
    assert after.metrics == before.metrics and after.num_labels.tolist() == before.num_labels.tolist()


def test_evaluate_restores_train_mode_when_the_forward_raises():
    class Broken(torch.nn.Module):
        nc = 1

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise RuntimeError("broken forward")

    model = Broken().train()
    batch = SimpleNamespace(images=torch.zeros(1, 3, 8, 8), targets=torch.zeros(0, 6))
    with pytest.raises(RuntimeError, match="broken forward"):
        evaluate(model, [batch])
    assert model.training
