"""YOLOv7's README command lines against this project's scripts: every line parses as written
(flags YOLOv7 has and this project does without say so in one stderr line), and the train,
test and detect lines run, adapted to a tiny model, data set and size."""

from __future__ import annotations

import os
import shlex

import pytest
from train_helpers import tiny_data

import detect
import export
import train
import val
from engine.detect.run import DetectOptions
from engine.export.options import ExportOptions
from engine.val.run import ValOptions
from utils import cli

# The command lines of YOLOv7's README as printed there (train_aux.py is this project's train.py:
# the auxiliary head is part of the model config).
README = [
    "python test.py --data data/coco.yaml --img 640 --batch 32 --conf 0.001 --iou 0.65 --device 0 "
    "--weights yolov7.pt --name yolov7_640_val",
    "python train.py --workers 8 --device 0 --batch-size 32 --data data/coco.yaml --img 640 640 "
    "--cfg cfg/training/yolov7.yaml --weights '' --name yolov7 --hyp data/hyp.scratch.p5.yaml",
    "python train_aux.py --workers 8 --device 0 --batch-size 16 --data data/coco.yaml --img 1280 1280 "
    "--cfg cfg/training/yolov7-w6.yaml --weights '' --name yolov7-w6 --hyp data/hyp.scratch.p6.yaml",
    "python -m torch.distributed.launch --nproc_per_node 4 --master_port 9527 train.py --workers 8 "
    "--device 0,1,2,3 --sync-bn --batch-size 128 --data data/coco.yaml --img 640 640 "
    "--cfg cfg/training/yolov7.yaml --weights '' --name yolov7 --hyp data/hyp.scratch.p5.yaml",
    "python -m torch.distributed.launch --nproc_per_node 8 --master_port 9527 train_aux.py --workers 8 "
    "--device 0,1,2,3,4,5,6,7 --sync-bn --batch-size 128 --data data/coco.yaml --img 1280 1280 "
    "--cfg cfg/training/yolov7-w6.yaml --weights '' --name yolov7-w6 --hyp data/hyp.scratch.p6.yaml",
    "python train.py --workers 8 --device 0 --batch-size 32 --data data/custom.yaml --img 640 640 "
    "--cfg cfg/training/yolov7-custom.yaml --weights 'yolov7_training.pt' --name yolov7-custom "
    "--hyp data/hyp.scratch.custom.yaml",
    "python train_aux.py --workers 8 --device 0 --batch-size 16 --data data/custom.yaml --img 1280 1280 "
    "--cfg cfg/training/yolov7-w6-custom.yaml --weights 'yolov7-w6_training.pt' --name yolov7-w6-custom "
    "--hyp data/hyp.scratch.custom.yaml",
    "python detect.py --weights yolov7.pt --conf 0.25 --img-size 640 --source yourvideo.mp4",
    "python detect.py --weights yolov7.pt --conf 0.25 --img-size 640 --source inference/images/horses.jpg",
    "python export.py --weights yolov7-tiny.pt --grid --end2end --simplify --topk-all 100 --iou-thres 0.65 "
    "--conf-thres 0.35 --img-size 640 640 --max-wh 640",
    "python export.py --weights ./yolov7-tiny.pt --grid --end2end --simplify --topk-all 100 --iou-thres 0.65 "
    "--conf-thres 0.35 --img-size 640 640",
    "python export.py --weights yolov7-tiny.pt --grid --include-nms",
]
SCRIPTS = {"test.py": "val", "train.py": "train", "train_aux.py": "train", "detect.py": "detect",
           "export.py": "export"}
LAUNCHER = ["-m", "torch.distributed.launch"]


def split(line: str) -> tuple[str, list[str]]:
    """(our script, its arguments) of a README line; torch.distributed.launch's own flags are its
    own, and it adds --local-rank=N to the script's (torch >= 2.0 spells it with a dash)."""
    words = shlex.split(line)[1:]
    launched = words[:2] == LAUNCHER
    if launched:
        words = words[2 + 4:]  # --nproc_per_node N --master_port P
    return SCRIPTS[words[0]], words[1:] + (["--local-rank=0"] if launched else [])


def parse(script: str, argv: list[str]):
    if script == "train":
        return train.parse_options(argv)
    module, options = {"val": (val, ValOptions), "detect": (detect, DetectOptions),
                       "export": (export, ExportOptions)}[script]
    return cli.namespace_to(options, module.build_parser().parse_args(argv))


@pytest.mark.parametrize("line", README, ids=lambda s: " ".join(s.split()[1:4]))
def test_every_readme_line_parses_as_written(line):
    script, argv = split(line)
    opt = parse(script, argv)
    weights = [opt.weights] if isinstance(opt.weights, str) else opt.weights  # val.py takes an ensemble
    assert weights[0] in ("", "yolov7.pt", "yolov7_training.pt", "yolov7-w6_training.pt", "yolov7-tiny.pt",
                           "./yolov7-tiny.pt")
    if "torch.distributed.launch" in line:
        assert opt.local_rank == 0 and opt.sync_bn
    if script == "export":
        assert opt.nms and opt.grid  # --end2end / --include-nms: NMS in the graph


def test_yolov7_flags_without_effect_say_what_replaces_them(capsys):
    opt = parse("train", ["--quad", "--v5-metric", "--save_period", "3", "--local_rank", "1"])
    assert (opt.quad, opt.v5_metric, opt.save_period, opt.local_rank) == (True, True, 3, 1)
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["--quad", "--v5-metric"]  # one line each; real flags say nothing
    assert "pycocotools" in err[1]
    parse("val", ["--save-hybrid", "--v5-metric", "--no-trace", "--task", "study"])
    assert len(capsys.readouterr().err.splitlines()) == 3
    assert parse("export", ["--weights", "a.pt", "--grid", "--simplify", "--max-wh", "640", "--topk-all", "7"]).max_det == 7
    assert len(capsys.readouterr().err.splitlines()) == 3
    assert parse("detect", ["--no-trace"]).no_trace and "torchscript" in capsys.readouterr().err
    parse("val", [])
    assert capsys.readouterr().err == ""  # nothing said when no such flag is given


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("yolov7_commands")
    return {"root": root, "data": tiny_data(root, n_train=8, n_val=4)}


def adapt(line: str, tiny: dict, **swap: str) -> list[str]:
    """A README line's arguments with COCO, the big model and the GPU swapped for the tiny ones."""
    root = tiny["root"]
    words = split(line)[1]
    swap = {"data/coco.yaml": str(tiny["data"]), "cfg/training/yolov7.yaml": str(root / "tiny_model.yaml"),
            "data/hyp.scratch.p5.yaml": "cfg/hyp/hyp.scratch.p5.yaml", "640": "64", "32": "4", "8": "0",
            "0": "cpu", **swap}
    return [swap.get(w, w) for w in words] + ["--project", str(root / "runs")]


@pytest.fixture(scope="module")
def trained(tiny) -> dict:
    """The README's single-GPU train line, run tiny, with YOLOv7's --save_period and --local_rank;
    returns its weights folder and LOCAL_RANK as the run left it."""
    before = os.environ.pop("LOCAL_RANK", None)
    argv = adapt(README[1], tiny) + ["--epochs", "1", "--noautoanchor", "--save_period", "1", "--local_rank", "0",
                                     "warmup_epochs=0", "mosaic=0", "mixup=0", "loss_ota=false"]
    try:
        assert train.main(argv) == 0
        local_rank = os.environ.get("LOCAL_RANK")
    finally:
        os.environ.pop("LOCAL_RANK", None)
        if before is not None:
            os.environ["LOCAL_RANK"] = before
    return {"weights": tiny["root"] / "runs" / "yolov7" / "weights", "LOCAL_RANK": local_rank}


def test_readme_train_and_test_lines_run(tiny, trained, capsys):
    assert trained["LOCAL_RANK"] == "0"  # what torch.distributed.launch's flag means
    weights = trained["weights"]
    assert (weights / "epoch_000.pt").is_file()  # --save_period 1: YOLOv7's file name
    argv = adapt(README[0], tiny, **{"yolov7.pt": str(weights / "best.pt")})
    assert val.main(argv + ["--json"]) == 0
    assert '"mAP_0.5:0.95"' in capsys.readouterr().out


def test_readme_detect_line_runs(tiny, trained, capsys):
    image = sorted((tiny["root"] / "shapes_tiny" / "images" / "val").iterdir())[0]
    best = str(trained["weights"] / "best.pt")
    argv = adapt(README[8], tiny, **{"yolov7.pt": best, "inference/images/horses.jpg": str(image)})
    assert detect.main(argv + ["--no-trace"]) == 0
    assert "1 images" in capsys.readouterr().out


def test_val_task_study_writes_one_row_per_size(tiny, trained, monkeypatch):
    monkeypatch.setattr("engine.val.run.STUDY_SIZES", (64, 96))
    assert val.main(["--weights", str(trained["weights"] / "best.pt"), "--data", str(tiny["data"]), "--task", "study",
                     "--device", "cpu", "--project", str(tiny["root"] / "study")]) == 0
    (path,) = (tiny["root"] / "study").glob("*/study_tiny_best.txt")
    rows = [line.split() for line in path.read_text().splitlines() if not line.startswith("#")]
    assert [float(r[0]) for r in rows] == [64, 96] and len(rows[0]) == 1 + 4 + 3
