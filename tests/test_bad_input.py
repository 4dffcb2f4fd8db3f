"""Hostile input and faults against the five commands: every case ends with exit code 2 and one
line naming the culprit, no traceback, and no file changed (nothing created, nothing written).

Each case runs a command's ``main(argv)`` in-process (a few also as real subprocesses). A case is
(id, command, setup, culprit): ``setup(case_dir, base) -> argv`` writes the bad input under
``case_dir``; ``culprit`` must appear on the error line. Faults the machine would cause (a
read-only folder: CI runs as root, where chmod does not protect anything; a full disk) are
injected by monkeypatching the OSError in.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from train_helpers import TINY_MODEL, tiny_data

import detect
import export
import models.__main__ as models_cli
import train
import utils.checkpoint
import val

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"train.py": train.main, "val.py": val.main, "detect.py": detect.main, "export.py": export.main,
            "python -m models": models_cli.main}
SCRIPTS = {"train.py": [str(REPO / "train.py")], "val.py": [str(REPO / "val.py")], "detect.py": [str(REPO / "detect.py")],
           "export.py": [str(REPO / "export.py")], "python -m models": ["-m", "models"]}


@dataclass
class Base:
    """What the cases build on: a tiny data set, model config and trained run."""

    root: Path
    data: Path  # data YAML of the tiny shapes set
    cfg: Path  # tiny model YAML
    run: Path  # a finished 2-epoch run (weights/last.pt stripped, epoch_000.pt resumable)

    @property
    def last(self) -> Path:
        return self.run / "weights" / "last.pt"

    @property
    def epoch0(self) -> Path:
        return self.run / "weights" / "epoch_000.pt"

    def train_args(self, case: Path, *extra: str) -> list[str]:
        return ["--data", str(self.data), "--cfg", str(self.cfg), "--epochs", "1", "--batch-size", "4", "--img", "64",
                "--workers", "0", "--device", "cpu", "--project", str(case / "runs"), "--noautoanchor", *extra]

    def val_args(self, case: Path, *extra: str) -> list[str]:
        return ["--weights", str(self.last), "--data", str(self.data), "--img", "64", "--batch-size", "4",
                "--workers", "0", "--device", "cpu", "--project", str(case / "runs"), *extra]

    def detect_args(self, case: Path, *extra: str) -> list[str]:
        return ["--weights", str(self.last), "--source", str(self.root / "shapes_tiny" / "images" / "val"),
                "--img", "64", "--device", "cpu", "--project", str(case / "runs"), *extra]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    torch.set_num_threads(1)  # tiny convolutions on a shared 2-core machine: one thread is fastest
    root = tmp_path_factory.mktemp("bad_input")
    data = tiny_data(root, n_train=8, n_val=4)
    b = Base(root, data, root / "tiny_model.yaml", root / "runs" / "exp")
    args = b.train_args(root, "--epochs", "2", "--save-period", "1", "warmup_epochs=0", "mosaic=0", "mixup=0",
                        "paste_in=0", "loss_ota=false")
    args[args.index("--project") + 1] = str(root / "runs")
    assert train.main(args) == 0
    assert b.last.is_file() and b.epoch0.is_file()
    return b


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with (size, mtime); label caches (derived, rebuilt) left out."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and ".cache." not in p.name}


# ---- builders of bad inputs -------------------------------------------------------------------

def write_yaml(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def image(h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def yolo_set(case: Path, images: dict[str, np.ndarray | bytes], labels: dict[str, str] | None = None) -> Path:
    """A data set whose train and val split are ``images`` (arrays written as .jpg, or raw bytes);
    ``labels`` maps image names to label text (default: one box each)."""
    for name, content in images.items():
        path = case / "set" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            cv2.imwrite(str(path), content)
        text = "0 0.5 0.5 0.2 0.2\n" if labels is None else labels.get(name)
        if text is not None:
            label = case / "set" / "labels" / Path(name).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(text)
    return write_yaml(case / "data.yaml", {"path": str(case / "set"), "train": "images", "val": "images",
                                           "names": ["a", "b"]})


def coco_set(case: Path, change: Callable[[dict], None]) -> Path:
    """A COCO-json data set of two images, with ``change`` applied to the json first."""
    folder = case / "coco" / "images" / "train"
    folder.mkdir(parents=True)
    for i in (1, 2):
        cv2.imwrite(str(folder / f"{i}.jpg"), image(seed=i))
    coco = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 80, "height": 64} for i in (1, 2)],
            "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400,
                             "iscrowd": 0} for i in (1, 2)],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    change(coco)
    (case / "coco" / "annotations").mkdir()
    (case / "coco" / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    return write_yaml(case / "data.yaml", {"path": str(case / "coco"), "train": "annotations/instances_train.json",
                                           "val": "annotations/instances_train.json", "names": ["a", "b"]})


def model_yaml(case: Path, change: Callable[[dict], None] | None = None, text: str | None = None) -> Path:
    path = case / "model.yaml"
    case.mkdir(parents=True, exist_ok=True)
    if text is not None:
        path.write_text(text)
        return path
    cfg = copy.deepcopy(TINY_MODEL)
    change(cfg)
    return write_yaml(path, cfg)


def alias_bomb() -> str:
    lines = ["nc: 5", "anchors: [[10, 13, 16, 30, 33, 23]]", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines + ["backbone: *a8", "head: []"]) + "\n"


def checkpoint_copy(case: Path, source: Path, change: Callable[[dict], None], name: str = "bad.pt") -> Path:
    ckpt = torch.load(source, weights_only=True)
    change(ckpt)
    case.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, case / name)  # around save_checkpoint's checks, as a foreign tool would write it
    return case / name


def nan_weights(ckpt: dict) -> None:
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][first] = torch.full_like(ckpt["model"][first], float("nan"))


def hyp_file(case: Path, text: str) -> Path:
    case.mkdir(parents=True, exist_ok=True)
    path = case / "hyp.yaml"
    path.write_text((REPO / "cfg" / "hyp" / "hyp.shapes.yaml").read_text() + text)
    return path


def truncated_jpeg() -> bytes:
    data = cv2.imencode(".jpg", image(200, 300))[1].tobytes()
    return data[: len(data) // 2] + b"\xff\xd9"  # the end marker kept: only a full decode notices


# ---- the table ------------------------------------------------------------------------------

Setup = Callable[[Path, Base], list[str]]
CASES: list[tuple[str, str, Setup, str]] = [
    # flags
    ("train-img-negative", "train.py", lambda c, b: b.train_args(c, "--img", "-32"), "--img"),
    ("train-img-huge", "train.py", lambda c, b: b.train_args(c, "--img", "100000"), "--img"),
    ("train-batch-0", "train.py", lambda c, b: b.train_args(c, "--batch-size", "0"), "--batch-size"),
    ("train-workers-negative", "train.py", lambda c, b: b.train_args(c, "--workers", "-3"), "--workers"),
    ("train-epochs-0", "train.py", lambda c, b: b.train_args(c, "--epochs", "0"), "--epochs"),
    ("train-freeze-999", "train.py", lambda c, b: b.train_args(c, "--freeze", "999"), "--freeze"),
    ("train-patience-negative", "train.py", lambda c, b: b.train_args(c, "--patience", "-1"), "--patience"),
    ("val-img-0", "val.py", lambda c, b: b.val_args(c, "--img", "0"), "--img"),
    ("val-batch-0", "val.py", lambda c, b: b.val_args(c, "--batch-size", "0"), "--batch-size"),
    ("val-conf-above-1", "val.py", lambda c, b: b.val_args(c, "--conf-thres", "1.5"), "--conf-thres"),
    ("detect-img-negative", "detect.py", lambda c, b: b.detect_args(c, "--img", "-32"), "--img"),
    ("detect-iou-negative", "detect.py", lambda c, b: b.detect_args(c, "--iou-thres", "-0.1"), "--iou-thres"),
    ("detect-max-det-0", "detect.py", lambda c, b: b.detect_args(c, "--max-det", "0"), "--max-det"),
    ("export-batch-0", "export.py", lambda c, b: ["--weights", str(b.last), "--batch-size", "0"], "--batch-size"),
    ("export-img-0", "export.py", lambda c, b: ["--weights", str(b.last), "--img", "0"], "--img"),
    ("models-img-0", "python -m models", lambda c, b: ["--cfg", str(b.cfg), "--img", "0"], "--img"),
    ("models-nc-0", "python -m models", lambda c, b: ["--cfg", str(b.cfg), "--nc", "0"], "nc"),
    ("export-opset-5", "export.py", lambda c, b: ["--weights", str(b.last), "--opset", "5"], "--opset"),
    ("val-gt-without-dt", "val.py", lambda c, b: ["--gt", str(coco_json(c, "gt"))], "--gt"),
    ("val-task-test-without-split", "val.py", lambda c, b: b.val_args(c, "--task", "test"), "'test'"),
    ("detect-source-missing", "detect.py", lambda c, b: b.detect_args(c, "--source", str(c / "nowhere")), "nowhere"),
    ("train-cfg-missing", "train.py", lambda c, b: b.train_args(c, "--cfg", str(c / "nomodel.yaml")), "nomodel.yaml"),
    ("train-hyp-missing", "train.py", lambda c, b: b.train_args(c, "--hyp", str(c / "nohyp.yaml")), "nohyp.yaml"),
    ("train-resume-missing", "train.py", lambda c, b: ["--resume", str(c / "gone.pt")], "gone.pt"),
    ("train-resume-nothing-to-resume", "train.py", lambda c, b: ["--resume", "--project", str(c / "empty")],
     "--resume"),
    # devices (this machine has no CUDA device 7, and the tests run on CPU-only CI)
    ("train-device-7", "train.py", lambda c, b: b.train_args(c, "--device", "7"), "--device"),
    ("train-device-banana", "train.py", lambda c, b: b.train_args(c, "--device", "banana"), "--device"),
    ("val-device-7", "val.py", lambda c, b: b.val_args(c, "--device", "7"), "--device"),
    ("export-device-banana", "export.py", lambda c, b: ["--weights", str(b.last), "--device", "banana"], "--device"),
    # hyper-parameters
    ("hyp-lr0-negative", "train.py", lambda c, b: b.train_args(c, "lr0=-0.01"), "lr0"),
    ("hyp-lr0-nan", "train.py", lambda c, b: b.train_args(c, "lr0=.nan"), "lr0"),
    ("hyp-mosaic-7.5", "train.py", lambda c, b: b.train_args(c, "mosaic=7.5"), "mosaic"),
    ("hyp-warmup-negative", "train.py", lambda c, b: b.train_args(c, "warmup_epochs=-3"), "warmup_epochs"),
    ("hyp-file-inf", "train.py", lambda c, b: b.train_args(c, "--hyp", str(hyp_file(c, "fliplr: .inf\n"))), "fliplr"),
    ("hyp-file-unknown-key", "train.py", lambda c, b: b.train_args(c, "--hyp", str(hyp_file(c, "mosiac: 1\n"))),
     "mosiac"),
    ("hyp-file-syntax", "train.py", lambda c, b: b.train_args(c, "--hyp", str(hyp_file(c, "lr0: [\n"))), "hyp.yaml"),
    # data YAMLs and images
    ("data-nc-0", "train.py", lambda c, b: b.train_args(c, "--data", str(write_yaml(
        c / "d.yaml", {"path": str(c), "train": "x", "val": "x", "nc": 0}))), "nc"),
    ("data-no-names", "train.py", lambda c, b: b.train_args(c, "--data", str(write_yaml(
        c / "d.yaml", {"path": str(c), "train": "x", "val": "x", "names": []}))), "names"),
    ("data-unknown-key", "train.py", lambda c, b: b.train_args(c, "--data", str(write_yaml(
        c / "d.yaml", {"path": str(c), "train": "x", "val": "x", "names": ["a"], "nc_": 1}))), "nc_"),
    ("data-missing-yaml", "train.py", lambda c, b: b.train_args(c, "--data", str(c / "nope.yaml")), "nope.yaml"),
    ("data-zero-usable-images", "train.py", lambda c, b: b.train_args(c, "--data", str(yolo_set(
        c, {"thin.jpg": image(20, 2000), "cut.jpg": truncated_jpeg(), "junk.jpg": b"not an image"}))),
     "no usable images"),
    ("data-no-labels-at-all", "train.py", lambda c, b: b.train_args(c, "--data", str(yolo_set(
        c, {"a.jpg": image(), "b.jpg": image(seed=1)}, labels={}))), "no labels"),
    ("val-data-other-nc", "val.py", lambda c, b: b.val_args(c, "--data", str(yolo_set(
        c, {"a.jpg": image()}))), "classes"),
    # COCO json sources
    ("coco-image-without-id", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["images"][0].pop("id")))), "images[0]"),
    ("coco-image-without-file-name", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["images"][1].pop("file_name")))), "images[1]"),
    ("coco-category-without-id", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["categories"][0].pop("id")))), "categories[0]"),
    ("coco-bbox-3-values", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["annotations"][0].update(bbox=[1, 2, 3])))), "annotations[0]"),
    ("coco-bbox-string", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["annotations"][1].update(bbox="1 2 3 4")))), "annotations[1]"),
    ("coco-bbox-nan", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["annotations"][0].update(bbox=[1, 2, float("nan"), 4])))), "annotations[0]"),
    ("coco-width-0", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["images"][0].update(width=0)))), "'width'"),
    ("coco-duplicate-image-id", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["images"][1].update(id=1)))), "repeats id 1"),
    ("coco-file-outside-root", "train.py", lambda c, b: b.train_args(c, "--data", str(coco_set(
        c, lambda j: j["images"][0].update(file_name="../../../../../../etc/passwd")))), "outside the image folder"),
    ("val-gt-bbox-string", "val.py", lambda c, b: ["--gt", str(coco_json(c, "gt", bbox="x")), "--dt",
                                                   str(coco_json(c, "dt")), "--device", "cpu"], "gt.json"),
    ("val-dt-score-nan", "val.py", lambda c, b: ["--gt", str(coco_json(c, "gt")), "--dt",
                                                 str(coco_json(c, "dt", score=float("nan"))), "--device", "cpu"],
     "dt.json"),
    # model YAMLs
    ("model-alias-bomb", "python -m models", lambda c, b: ["--cfg", str(model_yaml(c, text=alias_bomb()))], "nodes"),
    ("model-5000-nested-lists", "python -m models", lambda c, b: ["--cfg", str(model_yaml(
        c, text="nc: 1\nbackbone: " + "[" * 5000 + "]" * 5000 + "\n"))], "nested"),
    ("model-backbone-42", "python -m models", lambda c, b: ["--cfg", str(model_yaml(
        c, lambda m: m.update(backbone=42)))], "backbone"),
    ("model-depth-negative", "python -m models", lambda c, b: ["--cfg", str(model_yaml(
        c, lambda m: m.update(depth_multiple=-0.5)))], "depth_multiple"),
    ("model-nc-0", "python -m models", lambda c, b: ["--cfg", str(model_yaml(c, lambda m: m.update(nc=0)))], "nc"),
    ("model-anchors-text", "python -m models", lambda c, b: ["--cfg", str(model_yaml(
        c, lambda m: m.update(anchors="big")))], "anchors"),
    ("model-syntax-error", "python -m models", lambda c, b: ["--cfg", str(model_yaml(
        c, text="nc: 1\nbackbone: [[-1, 1, Conv\n"))], "model.yaml"),
    ("model-bad-scale-entry", "python -m models", lambda c, b: ["--cfg", str(model_yaml(
        c, lambda m: m.update(scales={"n": 0.5})))], "scales"),
    ("model-unknown-module", "train.py", lambda c, b: b.train_args(c, "--cfg", str(model_yaml(
        c, lambda m: m["backbone"].__setitem__(0, [-1, 1, "Conve", [8, 3, 2]])))), "Conve"),
    # checkpoints
    ("val-weights-missing", "val.py", lambda c, b: b.val_args(c, "--weights", str(c / "none.pt")), "none.pt"),
    ("detect-weights-garbage", "detect.py", lambda c, b: b.detect_args(c, "--weights", str(garbage(c))), "junk.pt"),
    ("detect-nan-weights", "detect.py", lambda c, b: b.detect_args(c, "--weights", str(checkpoint_copy(
        c, b.last, nan_weights))), "bad.pt"),
    ("val-nan-weights", "val.py", lambda c, b: b.val_args(c, "--weights", str(checkpoint_copy(
        c, b.last, nan_weights))), "bad.pt"),
    ("export-nan-weights", "export.py", lambda c, b: ["--weights", str(checkpoint_copy(c, b.last, nan_weights))],
     "bad.pt"),
    ("val-model-not-a-dict", "val.py", lambda c, b: b.val_args(c, "--weights", str(checkpoint_copy(
        c, b.last, lambda k: k.update(model=[1, 2, 3])))), "bad.pt"),
    ("detect-checkpoint-nc-0", "detect.py", lambda c, b: b.detect_args(c, "--weights", str(checkpoint_copy(
        c, b.last, lambda k: k.update(nc=0, names=[])))), "bad.pt"),
    ("train-weights-nan", "train.py", lambda c, b: b.train_args(c, "--weights", str(checkpoint_copy(
        c, b.last, nan_weights))), "bad.pt"),
    ("resume-stripped", "train.py", lambda c, b: ["--resume", str(b.last)], "last.pt"),
    ("resume-copied-elsewhere", "train.py", lambda c, b: ["--resume", str(copied_checkpoint(c, b))], "--weights"),
    ("resume-other-model", "train.py", lambda c, b: ["--resume", str(in_own_run(c, b, other_model))], "model"),
    ("resume-bad-optimizer", "train.py", lambda c, b: ["--resume", str(in_own_run(c, b, bad_optimizer))],
     "optimizer"),
]


def coco_json(case: Path, kind: str, bbox: object = None, score: float = 0.9) -> Path:
    case.mkdir(parents=True, exist_ok=True)
    if kind == "gt":
        data: object = {"images": [{"id": 1, "width": 80, "height": 64}], "categories": [{"id": 1, "name": "a"}],
                        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox or [1, 2, 3, 4]}]}
    else:
        data = [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": score}]
    path = case / f"{kind}.json"
    path.write_text(json.dumps(data))
    return path


def garbage(case: Path) -> Path:
    case.mkdir(parents=True, exist_ok=True)
    (case / "junk.pt").write_bytes(os.urandom(2000))
    return case / "junk.pt"


def copied_checkpoint(case: Path, b: Base) -> Path:
    """A resumable checkpoint copied into another run's downloads/ folder (it used to overwrite
    that run's weights/last.pt, results.csv, hyp.yaml and opt.yaml)."""
    other = case / "other_run"
    (other / "weights").mkdir(parents=True)
    for name in ("weights/last.pt", "results.csv", "hyp.yaml", "opt.yaml"):
        (other / name).write_bytes(b"precious " + name.encode())
    (other / "downloads").mkdir()
    (other / "downloads" / "x.pt").write_bytes(b.epoch0.read_bytes())
    return other / "downloads" / "x.pt"


def in_own_run(case: Path, b: Base, change: Callable[[dict], None]) -> Path:
    """A copy of the resumable run with its checkpoint changed by ``change``."""
    run = case / "run"
    (run / "weights").mkdir(parents=True)
    (run / "opt.yaml").write_bytes((b.run / "opt.yaml").read_bytes())
    return checkpoint_copy(run / "weights", b.epoch0, change, "last.pt")


def other_model(ckpt: dict) -> None:
    """train_model from a wider network: its tensors do not fit the model the config builds."""
    ckpt["train_model"] = {k: torch.cat([v, v]) if v.ndim else v for k, v in ckpt["train_model"].items()}


def bad_optimizer(ckpt: dict) -> None:
    ckpt["optimizer"]["param_groups"] = ckpt["optimizer"]["param_groups"][:1]


@pytest.mark.parametrize(("name", "prog", "setup", "culprit"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(base, tmp_path, monkeypatch, capsys, name, prog, setup, culprit):
    case = tmp_path / name
    argv = setup(case, base)
    monkeypatch.chdir(tmp_path)  # a command that falls back to ./runs would show up in the snapshot
    before, base_before = snapshot(tmp_path), snapshot(base.root)
    capsys.readouterr()
    code = run_main(prog, argv)
    err = capsys.readouterr().err
    check_one_error_line(code, err, prog, culprit)
    assert snapshot(tmp_path) == before, "files were created or changed"
    assert snapshot(base.root) == base_before, "the base run was changed"


def run_main(prog: str, argv: list[str]) -> int:
    try:
        return COMMANDS[prog](argv)
    except SystemExit as e:  # argparse's usage errors
        return int(e.code)


def check_one_error_line(code: int, err: str, prog: str, culprit: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], err  # argparse may keep its usage line above
    assert ": error: " in errors[0], err
    assert culprit in errors[0], f"{culprit!r} not named in: {errors[0]}"


# ---- the same through real processes --------------------------------------------------------

SUBPROCESS_CASES = ["train-device-banana", "model-alias-bomb", "detect-nan-weights", "resume-copied-elsewhere"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_subprocess(base, tmp_path, name):
    _, prog, setup, culprit = next(c for c in CASES if c[0] == name)
    case = tmp_path / name
    argv = setup(case, base)
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *SCRIPTS[prog], *argv], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=120)
    check_one_error_line(result.returncode, result.stderr, prog, culprit)
    assert snapshot(tmp_path) == before


def test_traceback_flag_shows_the_traceback(base, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "models", "--cfg", str(tmp_path / "none.yaml"), "--traceback"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ConfigError" in result.stderr


# ---- faults of the file system --------------------------------------------------------------

def refuse_writes_under(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only as far as the process can tell: creating anything below it
    raises EACCES (chmod would not do it: CI runs as root)."""
    real_mkdir, real_open = Path.mkdir, io.open

    def mkdir(self, *args, **kwargs):
        if Path(os.path.abspath(self)).is_relative_to(folder):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+") and isinstance(file, (str, os.PathLike)) and \
                Path(os.path.abspath(file)).is_relative_to(folder):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    def os_open(file, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and Path(os.path.abspath(file)).is_relative_to(folder):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_os_open(file, flags, *args, **kwargs)

    real_os_open = os.open
    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr("builtins.open", open_)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(os, "open", os_open)


READ_ONLY_CASES = [
    ("train.py", lambda c, b: b.train_args(c)),
    ("val.py", lambda c, b: b.val_args(c)),
    ("detect.py", lambda c, b: b.detect_args(c)),
    ("export.py", lambda c, b: ["--weights", str(export_copy(c, b)), "--include", "torchscript", "--img", "64"]),
]


def export_copy(case: Path, b: Base) -> Path:
    (case / "runs").mkdir(parents=True)
    (case / "runs" / "w.pt").write_bytes(b.last.read_bytes())  # export writes beside the checkpoint
    return case / "runs" / "w.pt"


@pytest.mark.parametrize(("prog", "setup"), READ_ONLY_CASES, ids=[c[0] for c in READ_ONLY_CASES])
def test_read_only_output_folder(base, tmp_path, monkeypatch, capsys, prog, setup):
    case = tmp_path / "case"
    argv = setup(case, base)
    (case / "runs").mkdir(parents=True, exist_ok=True)
    before = snapshot(tmp_path)
    refuse_writes_under(monkeypatch, case / "runs")
    capsys.readouterr()
    code = run_main(prog, argv)
    monkeypatch.undo()
    check_one_error_line(code, capsys.readouterr().err, prog, str(case / "runs"))
    assert snapshot(tmp_path) == before


class FullDisk(io.FileIO):
    """A file that takes 1000 bytes, then fails as a full disk does."""

    def write(self, b):
        if self.tell() + len(b) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(b)


def test_full_disk_during_training_keeps_the_previous_checkpoint(base, tmp_path, monkeypatch, capsys):
    """The first save of epoch 1 hits a full disk: exit 2 with 'no space left on', epoch 0's
    last.pt intact and loadable, no temporary file left."""
    args = base.train_args(tmp_path, "--epochs", "2", "mosaic=0", "mixup=0", "paste_in=0", "loss_ota=false")
    real_save = utils.checkpoint.save_checkpoint
    saves = []

    def save(ckpt, path):
        saves.append(path)
        if len(saves) > 2:  # epoch 0 wrote best.pt and last.pt
            monkeypatch.setattr(utils.checkpoint, "open", lambda p, mode: FullDisk(p, mode), raising=False)
        return real_save(ckpt, path)

    monkeypatch.setattr(utils.checkpoint, "save_checkpoint", save)
    for module in list(sys.modules.values()):
        if getattr(module, "save_checkpoint", None) is real_save and module is not utils.checkpoint:
            monkeypatch.setattr(module, "save_checkpoint", save)
    capsys.readouterr()
    code = run_main("train.py", args)
    check_one_error_line(code, capsys.readouterr().err, "train.py", "no space left on")
    weights = tmp_path / "runs" / "exp" / "weights"
    assert utils.checkpoint.load_checkpoint(weights / "last.pt")["epoch"] == 0
    assert not list(weights.glob(".*.tmp"))


# ---- the two failures that lost or corrupted data --------------------------------------------

def test_resume_of_a_copied_checkpoint_touches_nothing(base, tmp_path, capsys):
    """--resume other_run/downloads/x.pt used to write into other_run/ (the checkpoint's
    grandparent, whatever it was) and overwrote its last.pt, results.csv, hyp.yaml, opt.yaml."""
    x = copied_checkpoint(tmp_path, base)
    before = snapshot(tmp_path)
    code = run_main("train.py", ["--resume", str(x), "--device", "cpu"])
    err = capsys.readouterr().err
    check_one_error_line(code, err, "train.py", "--weights")
    assert snapshot(tmp_path) == before
    assert (tmp_path / "other_run" / "weights" / "last.pt").read_bytes() == b"precious weights/last.pt"


def test_diverged_training_never_saves_inf(base, tmp_path):
    """lr0=1e6 without warmup at batch 1: the fp32 weights stay finite but overflow fp16 when
    last.pt is stripped (it held hundreds of inf values that val.py and detect.py then used)."""
    args = base.train_args(tmp_path, "--batch-size", "1", "lr0=1000000.0", "warmup_epochs=0", "mosaic=0", "mixup=0",
                           "paste_in=0", "loss_ota=false")
    code = run_main("train.py", args)
    assert code in (0, 2)  # a divergence may stop the run; either way nothing non-finite is written
    written = list((tmp_path / "runs").rglob("*.pt"))
    assert written or code == 2
    if code == 0:  # its fitness stayed 0: best.pt is still written (the first saved epoch), as in YOLOv7
        assert (tmp_path / "runs" / "exp" / "weights" / "best.pt").is_file()
    for path in written:
        ckpt = torch.load(path, weights_only=True)
        for key in ("model", "train_model"):
            for name, tensor in ckpt.get(key, {}).items():
                assert torch.isfinite(tensor.float()).all(), f"{path.name} {key}.{name} is not finite"
