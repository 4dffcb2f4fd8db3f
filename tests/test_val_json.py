"""val.py --gt/--dt: our metric on COCO json files, against pycocotools on the same files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_coco_eval import make_case, pycoco

from utils.coco_eval import STAT_NAMES
from utils.coco_json import CocoJsonError, load_detections, load_ground_truth

ROOT = Path(__file__).resolve().parents[1]


def _write_case(tmp_path: Path, seed: int) -> tuple[Path, Path, dict, list]:
    gt, dets = make_case(seed)
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(dets))
    return gt_path, dt_path, gt, dets


def test_val_gt_dt_json_equals_pycocotools(tmp_path: Path) -> None:
    gt_path, dt_path, gt, dets = _write_case(tmp_path, 3)
    run = subprocess.run(
        [sys.executable, "val.py", "--gt", str(gt_path), "--dt", str(dt_path), "--device", "cpu", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout.strip().splitlines()[-1])
    assert list(stats) == list(STAT_NAMES)
    np.testing.assert_allclose([stats[k] for k in STAT_NAMES], pycoco(gt, dets).stats, atol=1e-4)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in run.stdout


def test_loader_drops_unknown_categories_and_rejects_unknown_images(tmp_path: Path) -> None:
    gt_path, dt_path, gt, dets = _write_case(tmp_path, 4)
    ref = load_ground_truth(gt_path)
    assert ref.category_ids == sorted(c["id"] for c in gt["categories"])
    extra = dets + [{"image_id": dets[0]["image_id"], "category_id": 10_000, "bbox": [0, 0, 5, 5], "score": 1.0}]
    dt_path.write_text(json.dumps(extra))
    assert load_detections(dt_path, ref).scores.numel() == len(dets)
    dt_path.write_text(json.dumps([{"image_id": -5, "category_id": dets[0]["category_id"], "bbox": [0, 0, 5, 5], "score": 1.0}]))
    with pytest.raises(CocoJsonError, match="image_id -5"):
        load_detections(dt_path, ref)


def test_bad_json_names_file_and_entry(tmp_path: Path) -> None:
    bad = tmp_path / "gt.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "categories": [{"id": 1}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 1}]}))
    with pytest.raises(CocoJsonError, match=r"gt.json: annotations\[0\] has no 'bbox'"):
        load_ground_truth(bad)
    bad.write_text("{not json")
    with pytest.raises(CocoJsonError, match="gt.json:1: invalid json"):
        load_ground_truth(bad)
