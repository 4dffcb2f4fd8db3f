"""Official YOLOv7 checkpoints: read without running their pickle, every tensor in its place.

The files are written by tests/official_fixtures.py (stand-in classes with the official names
and attribute layout, in a subprocess). The real-network cases use the official configs in
../shared/reference/yolov7 and skip without them; the safety cases run everywhere.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from official_fixtures import randomize, train_checkpoint, write_official
from train_helpers import TINY_MODEL

from models import load_model
from models.convert import main as convert_main
from models.official import ALLOWED_GLOBALS, ArrayRecord, DtypeRecord, describe_foreign, pickle_globals, plain
from models.official_convert import convert_official
from models.yolo import Model, unrolled_key_map
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.config import read_yaml

REF = Path(os.environ.get("ELAN_YOLO_REFERENCE",
                          Path(__file__).resolve().parents[2] / "shared" / "reference" / "yolov7"))
needs_ref = pytest.mark.skipif(not (REF / "README.md").is_file(), reason=f"{REF} not present")
NAMES = ["cat", "dog", "bird"]


def _source(cfg: dict, seed: int, fuse: bool = False) -> Model:
    model = randomize(Model(cfg), seed)
    model.names = list(NAMES[: model.nc]) if model.nc <= len(NAMES) else model.names
    if fuse:
        model.fuse().eval()
        with torch.no_grad():  # fused weights rounded as the fp16 file holds them
            for v in model.state_dict().values():
                v.copy_(v.half().float() if v.is_floating_point() else v)
    return model


def _official_cfg(name: str, width: float | None = None, head: str | None = None) -> dict:
    cfg = read_yaml(REF / "cfg" / "training" / f"{name}.yaml")
    cfg["nc"] = 3
    if width:
        cfg["width_multiple"] = width
    if head:
        cfg["head"][-1][2] = head  # cfg/deploy rows are the training rows with a plain Detect head
    return cfg


@pytest.fixture(scope="module")
def ref_files(tmp_path_factory):
    """tiny: a training checkpoint (ema + model + optimizer); yolov7: stripped IDetect; w6:
    IAuxDetect P6; deploy: Detect head, RepConv and Conv fused by the official fuse()."""
    if not (REF / "README.md").is_file():
        pytest.skip(f"{REF} not present")
    tmp = tmp_path_factory.mktemp("official")
    cases = {
        "tiny": (_official_cfg("yolov7-tiny"), "IDetect", False, True),
        "yolov7": (_official_cfg("yolov7", 0.25), "IDetect", False, False),
        "w6": (_official_cfg("yolov7-w6", 0.25), "IAuxDetect", False, True),
        "deploy": (_official_cfg("yolov7", 0.25, "Detect"), "Detect", True, False),
    }
    files, sources = {}, {}
    for name, (cfg, kind, fuse, training) in cases.items():
        ema = _source(cfg, 0, fuse)
        raw = _source(cfg, 1, fuse) if training else None
        official_name = {"tiny": "yolov7-tiny", "w6": "yolov7-w6"}.get(name, "yolov7")
        files[tmp / f"{name}.pt"] = train_checkpoint(ema, raw, cfg, kind, yaml_file=f"{official_name}.yaml")
        sources[name] = (tmp / f"{name}.pt", ema)
    write_official(tmp, files)
    return sources


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """A small IDetect network (not one of our configs); the same with an os.system object; a
    pose checkpoint (IKeypoint head)."""
    tmp = tmp_path_factory.mktemp("official_small")
    cfg = dict(copy.deepcopy(TINY_MODEL), nc=3)
    ema = _source(cfg, 0)
    marker = tmp / "PWNED"
    good = train_checkpoint(ema, _source(cfg, 1), cfg, "IDetect")
    evil = dict(good, wandb_id={"__evil__": f"touch {marker}"})
    files = {tmp / "small.pt": good, tmp / "evil.pt": evil,
             tmp / "pose.pt": train_checkpoint(ema, None, cfg, "IKeypoint")}
    write_official(tmp, files, numpy1_paths=True)
    return {"small": tmp / "small.pt", "evil": tmp / "evil.pt", "pose": tmp / "pose.pt", "marker": marker,
            "ema": ema, "dir": tmp}


def _assert_same_tensors(converted: Model, source: Model, key_map: dict[str, str] | None = None) -> None:
    """Every tensor of ``converted`` equals the source tensor behind it (fp16-exact values)."""
    got, want = converted.state_dict(), source.state_dict()
    assert len(got) == len(want)
    for key, value in got.items():
        expected = want[(key_map or {}).get(key, key)]
        assert value.dtype == (torch.float32 if value.is_floating_point() else expected.dtype), key
        assert torch.equal(value, expected.to(value.dtype)), key


@needs_ref
def test_training_tiny_lands_on_our_compact_config_with_every_tensor(ref_files):
    path, ema = ref_files["tiny"]
    conv = convert_official(path)
    assert conv.cfg == "yolov7-tiny" and conv.weights_from == "ema" and conv.epoch == 7
    key_map = conv.checkpoint["converted_from"]["official_key_map"]
    assert key_map == unrolled_key_map(conv.model)  # the official names stay available
    _assert_same_tensors(conv.model, ema, key_map)  # ema, not the (different) raw model
    assert conv.model.names == NAMES and conv.checkpoint["best_fitness"] == 0.25
    # anchors: the file stores grid units in `anchors` and pixels in `anchor_grid`; ours are pixels
    assert torch.equal(conv.model.head.anchors, ema.head.anchors)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(conv.model.eval()(x)[0], ema.eval()(x)[0], atol=1e-5)


@needs_ref
def test_keep_official_cfg_keeps_the_files_rows_and_keys(ref_files):
    path, ema = ref_files["tiny"]
    conv = convert_official(path, keep_official_cfg=True)
    assert conv.cfg == "official" and conv.checkpoint["model_cfg"]["backbone"][0][2] == "Conv"
    assert "ch" not in conv.checkpoint["model_cfg"]
    _assert_same_tensors(conv.model, ema)


@needs_ref
def test_stripped_idetect_and_iauxdetect_p6(ref_files):
    path, ema = ref_files["yolov7"]
    conv = convert_official(path)
    assert (conv.cfg, conv.weights_from, conv.epoch) == ("yolov7", "model", -1)
    _assert_same_tensors(conv.model, ema, conv.checkpoint["converted_from"]["official_key_map"])
    path, ema = ref_files["w6"]
    conv = convert_official(path)
    assert conv.cfg == "yolov7-w6" and conv.model.head.aux and conv.model.head.nl == 4
    assert conv.checkpoint["converted_from"]["head"] == "models.yolo.IAuxDetect"
    _assert_same_tensors(conv.model, ema, conv.checkpoint["converted_from"]["official_key_map"])


@needs_ref
def test_deploy_file_with_fused_repconv_and_detect_head(ref_files):
    path, fused = ref_files["deploy"]
    conv = convert_official(path)
    assert conv.cfg == "official" and conv.checkpoint["converted_from"]["head"] == "models.yolo.Detect"
    assert any("fused" in n for n in conv.notes)
    _assert_same_tensors(conv.model, fused)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(conv.model(x)[0], fused(x)[0], atol=1e-5)
    rebuilt = load_model(save_checkpoint(conv.checkpoint, path.with_name("deploy-elan.pt")))
    with torch.no_grad():
        assert torch.allclose(rebuilt(x)[0], fused(x)[0], atol=1e-5)


def test_convert_command_writes_our_checkpoint(small_files, capsys):
    src = small_files["small"]
    assert convert_main([str(src), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["out"] == str(src.with_name("small-elan.pt")) and out["cfg"] == "official"
    assert out["nc"] == 3 and out["names"] == NAMES and out["params"] == sum(
        p.numel() for p in small_files["ema"].parameters())
    ckpt = load_checkpoint(out["out"])  # weights_only=True, our schema
    assert ckpt["converted_from"]["weights"] == "ema" and ckpt["converted_from"]["epoch"] == 7
    assert "numpy.core.multiarray._reconstruct" in pickle_globals(src) and ckpt["best_fitness"] == 0.25
    _assert_same_tensors(load_model(out["out"]), small_files["ema"])
    assert convert_main([out["out"]]) == 2  # ours: nothing to convert
    assert "need no conversion" in capsys.readouterr().err


def test_load_model_converts_an_official_file_in_memory_and_says_so(small_files, caplog):
    with caplog.at_level(logging.WARNING, logger="models.checkpoint_io"):
        model = load_model(small_files["small"])
    lines = [r.getMessage() for r in caplog.records if r.name == "models.checkpoint_io"]
    assert len(lines) == 1 and "official YOLOv7 checkpoint converted in memory" in lines[0]
    _assert_same_tensors(model, small_files["ema"])


def test_a_pickle_that_would_call_os_system_is_refused_and_nothing_runs(small_files, capsys):
    src, marker = small_files["evil"], small_files["marker"]
    assert "posix.system" in pickle_globals(src)
    out = small_files["dir"] / "evil-out.pt"
    assert convert_main([str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "posix.system" in err and "not allowed" in err
    with pytest.raises(CheckpointError, match="posix.system"):
        load_model(src)
    with pytest.raises(CheckpointError, match="posix.system"):
        convert_official(src)
    assert not marker.exists() and not out.exists()


def test_torch_refuses_the_global_even_without_our_opcode_check(small_files):
    """Second line of defence: the stand-ins do not widen torch's weights_only allowlist."""
    from models.official import _SAFE

    with torch.serialization.safe_globals(_SAFE), pytest.raises(Exception, match="system"):
        torch.load(small_files["evil"], weights_only=True)
    assert not small_files["marker"].exists()


def test_pose_and_other_repositories_are_refused_saying_what_they_are(small_files, tmp_path):
    with pytest.raises(CheckpointError, match="pose"):
        convert_official(small_files["pose"])
    assert convert_main([str(small_files["pose"])]) == 2
    assert not small_files["pose"].with_name("pose-elan.pt").exists()


@pytest.mark.parametrize("globals_, what", [
    (["models.yolo.DetectionModel", "models.common.C3"], "YOLOv5"),
    (["models.yolo.Model", "models.common.C3", "models.common.Focus"], "YOLOv5"),
    (["ultralytics.nn.tasks.DetectionModel"], "ultralytics"),
    (["models.models.Darknet"], "YOLOR"),
    (["models.yolo.Model", "models.yolo.IKeypoint"], "pose"),
    (["models.yolo.Model", "models.yolo.IDetect"], None),
])
def test_what_a_foreign_file_is(globals_, what):
    found = describe_foreign(globals_)
    assert (found is None) if what is None else (what in found)


def test_numpy_values_only_for_plain_dtypes():
    assert {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.dtype",
            "numpy.core.multiarray.scalar"} <= ALLOWED_GLOBALS
    dtype = DtypeRecord("f8", False, True)
    dtype.__setstate__((3, "<", None, None, None, -1, -1, 0))
    array = ArrayRecord(ArrayRecord, (0,), b"b")
    raw = torch.tensor([0.25, 0.5], dtype=torch.float64).numpy().tobytes()
    array.__setstate__((1, (2,), dtype, False, raw))
    assert plain({"best_fitness": array}) == {"best_fitness": [0.25, 0.5]}
    objects = DtypeRecord("O8", False, True)
    objects.__setstate__((3, "|", None, None, None, -1, -1, 63))
    array.__setstate__((1, (1,), objects, False, [print]))
    with pytest.raises(ValueError):
        plain(array)
