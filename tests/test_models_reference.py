"""Against the official YOLOv7 configs (GPL-3.0, never copied here): they build unchanged with
the published sizes, and our compact configs are the same networks. Skips when
../shared/reference/yolov7 (or $ELAN_YOLO_REFERENCE) is absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from models.parse import resolve_cfg_path
from models.yolo import Model, unrolled_key_map
from utils.config import read_yaml

REF = Path(os.environ.get("ELAN_YOLO_REFERENCE",
                          Path(__file__).resolve().parents[2] / "shared" / "reference" / "yolov7"))
pytestmark = pytest.mark.skipif(not (REF / "README.md").is_file(), reason=f"{REF} not present")


def _checker():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "check_reference_configs.py"
    spec = importlib.util.spec_from_file_location("check_reference_configs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_official_configs_build_with_the_published_sizes_and_match_ours():
    checker = _checker()
    results = checker.check(REF)
    assert len(results) == 9  # 7 YOLOv7 training configs + YOLOR-CSP, YOLOR-CSP-X
    for r in results:
        assert r["params"] == r["table"]["params"], r["config"]
        assert r["compact_params"] == r["params"] and r["compact_key_map"], r["config"]
        assert abs(r["gflops"] - r["table"]["gflops"]) <= checker.GFLOPS_TOLERANCE, r["config"]
        expected_rule = "ours + implicit" if "yolor-csp.yaml" in r["config"] else "ours"
        assert r["fused_rule"] == expected_rule, r["config"]
        assert r["ok"]


def narrow(path: Path) -> dict:
    """The config at a quarter of its width: the same graph, 16x cheaper to build and run."""
    cfg = read_yaml(path)
    cfg["width_multiple"] = 0.25
    return cfg


@pytest.mark.parametrize("name, size", [("yolov7-tiny", 160), ("yolov7", 128), ("yolov7-e6e", 128)])
def test_compact_and_official_give_identical_outputs(name, size):
    """Weights copied through the key map; E6E covers E-ELAN and the aux taps inside it."""
    compact = Model(narrow(resolve_cfg_path(f"{name}.yaml")[0]))
    official = Model(narrow(REF / "cfg" / "training" / f"{name}.yaml"))
    key_map = unrolled_key_map(compact)
    official.load_state_dict({key_map[k]: v for k, v in compact.state_dict().items()})
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        for a, b in zip(compact.train()(x), official.train()(x), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(compact.eval()(x)[0], official.eval()(x)[0])
