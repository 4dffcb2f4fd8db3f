"""Pascal VOC sources (data/voc.py), data.convert round trips, difficult boxes in evaluation."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from data import build_dataloader, load_data_config
from data.convert import main as convert_main
from data.scan import load_or_scan
from engine.val.evaluator import dataset_ground_truth
from utils.coco_eval import DatasetDetections, coco_evaluate
from utils.config import ConfigError

NAMES = ["cat", "dog"]


def _object(name, box, difficult=0, truncated=0):
    coords = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
    return (f"<object><name>{name}</name><truncated>{truncated}</truncated>"
            f"<difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>")


def _write(root, stem, objects, size=(100, 80), xml=None):
    """Image ``stem`` (w, h = size) and its annotation (``xml`` replaces the generated text)."""
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.full((size[1], size[0], 3), 90, np.uint8))
    text = xml or (f"<annotation><filename>{stem}.jpg</filename><size><width>{size[0]}</width>"
                   f"<height>{size[1]}</height><depth>3</depth></size>{''.join(objects)}</annotation>")
    (root / "Annotations" / f"{stem}.xml").write_text(text)


@pytest.fixture()
def voc(tmp_path, monkeypatch):
    """A VOC root: a (mixed objects), b (malformed XML), c (no objects), d (val, one difficult box)."""
    monkeypatch.setenv("ELAN_YOLO_DATASETS", str(tmp_path / "datasets"))  # VOC label caches go there
    root = tmp_path / "VOC"
    _write(root, "a", [
        _object("cat", (11, 21, 50, 60)),  # 1-based: 0-based (10, 20, 50, 60)
        _object("dog", (1, 1, 30, 30), difficult=1),
        _object("cat", (61, 11, 102, 80), truncated=1),  # overflows by 2 px: clipped to 100
        _object("zebra", (5, 5, 20, 20)),  # not in names
        _object("cat", (40, 10, 40, 30)),  # xmin == xmax
        _object("dog", (10, 10, 300, 40)),  # far outside: clipped with a note
    ])
    _write(root, "b", [], xml="<annotation><object><name>cat</name>")
    _write(root, "c", [])
    _write(root, "d", [_object("cat", (21, 21, 60, 60)), _object("dog", (61, 11, 90, 70), difficult=1)])
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("d\n")
    return root


def test_voc_boxes_difficult_truncated_and_messages(voc):
    result, _ = load_or_scan([voc / "ImageSets" / "Main" / "train.txt"], 2, None, NAMES)
    assert [p.rsplit("/", 1)[-1] for p in result.files] == ["a.jpg", "c.jpg"]  # b: malformed, skipped
    assert result.counts == {"found": 1, "missing": 0, "empty": 1, "corrupt": 1}
    a = result.labels[0]
    np.testing.assert_allclose(a, [[0, 0.3, 0.5, 0.4, 0.5],  # (10, 20, 50, 60) in 100 x 80
                                   [0, 0.8, 0.5625, 0.4, 0.875],  # (60, 10, 100, 80): truncated kept, clipped
                                   [1, 0.545, 0.30625, 0.91, 0.3875]], atol=1e-6)  # (9, 9, 100, 40)
    np.testing.assert_allclose(result.crowd[0], [[1, 0.15, 0.1875, 0.3, 0.375]], atol=1e-6)  # difficult
    a_xml = voc / "Annotations" / "a.xml"
    messages = "\n".join(result.messages)
    assert f"{a_xml}: object 4 (zebra): unknown class 'zebra'" in messages
    assert f"{a_xml}: object 5 (cat): xmin 40 >= xmax 40" in messages
    assert f"{a_xml}: object 6 (dog): box overflows the 100x80 image by 200 px, clipped" in messages
    assert "object 3" not in messages  # 2 px overflow: clipped silently
    assert f"{voc / 'Annotations' / 'b.xml'}:1: malformed XML" in messages
    assert len(result.messages) == 4


def test_voc_yaml_root_split_names_from_xml_and_errors(voc, tmp_path, caplog):
    cfg_path = tmp_path / "voc.yaml"
    cfg_path.write_text("path: VOC\ntrain: .\nval: ImageSets/Main/val.txt\n")
    with caplog.at_level(logging.INFO):
        cfg = load_data_config(cfg_path)
    assert cfg.names == ["cat", "dog", "zebra"] and cfg.nc == 3  # sorted, from the XML files
    assert "3 classes from the VOC annotations, sorted: ['cat', 'dog', 'zebra']" in caplog.text
    assert cfg.train == [voc / "ImageSets" / "Main" / "train.txt"]
    _, dataset = build_dataloader(cfg.train, cfg.nc, img_size=64, names=cfg.names)
    assert sorted(dataset.labels[0][:, 0].tolist()) == [0, 0, 1, 2]  # zebra is a class now
    assert [p.name for p in (tmp_path / "datasets" / "label-cache").iterdir()][0].startswith("VOC-train-")
    assert not list(voc.rglob("*.cache.*"))  # nothing written into the (often shared) VOC folder
    cfg_path.write_text("path: VOC\ntrain: .\ntest: .\nnames: [cat, dog]\n")
    with pytest.raises(ConfigError, match=r"ImageSets/Main/test.txt: VOC split list not found \(lists there: "
                                          r"train.txt, val.txt\)"):
        load_data_config(cfg_path)
    with pytest.raises(ConfigError, match="a VOC source needs the data set's class names"):
        load_or_scan([voc], 2, None)


def test_voc_cache_follows_the_xml_and_the_names(voc, tmp_path):
    source, cache = [voc / "ImageSets" / "Main" / "val.txt"], tmp_path / "val.cache.npz"
    assert load_or_scan(source, 2, cache, NAMES)[1] is False
    assert load_or_scan(source, 2, cache, NAMES)[1] is True
    assert load_or_scan(source, 2, cache, ["dog", "cat"])[1] is False  # names change the class ids
    _write(voc, "d", [_object("cat", (21, 21, 60, 60))])
    result, cached = load_or_scan(source, 2, cache, ["dog", "cat"])
    assert not cached and len(result.crowd[0]) == 0


def test_voc_to_yolo_and_coco_load_the_same_labels(voc, tmp_path, capsys):
    (tmp_path / "voc.yaml").write_text("path: VOC\ntrain: .\nval: .\nnames: [cat, dog]\n")
    original = {s: load_or_scan([voc / "ImageSets" / "Main" / f"{s}.txt"], 2, None, NAMES)[0] for s in ("train", "val")}
    for to in ("yolo", "coco"):
        out = tmp_path / to
        assert convert_main(["--to", to, "--data", str(tmp_path / "voc.yaml"), "--out", str(out)]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["splits"]["train"]["images"] == 2 and summary["splits"]["val"]["boxes"] == 1
        cfg = load_data_config(out / "data.yaml")
        assert cfg.names == NAMES
        for split, before in original.items():
            after, _ = load_or_scan(cfg.split(split), cfg.nc, None, cfg.names)
            assert [p.rsplit("/", 1)[-1] for p in after.files] == [p.rsplit("/", 1)[-1] for p in before.files]
            assert after.shapes == before.shapes
            for x, y in zip(after.labels, before.labels, strict=True):
                np.testing.assert_allclose(x, y, atol=1e-5)  # YOLO txt keeps 6 decimals
            crowd = before.crowd if to == "coco" else [np.zeros((0, 5))] * len(before.crowd)  # YOLO txt: left out
            for x, y in zip(after.crowd, crowd, strict=True):
                np.testing.assert_allclose(x.reshape(-1, 5), y, atol=1e-5)
    assert summary["splits"]["val"]["crowd"] == 1


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert convert_main(["--to", "yolo", "--data", str(tmp_path / "none.yaml"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("python -m data.convert: error: ")


def _ap50(dataset, boxes_scores):
    """COCO AP@.5 of image 0 of ``dataset`` given detections [(x, y, w, h, score)] of class 0."""
    gt = dataset_ground_truth(dataset, [0], [0], torch.device("cpu"))
    dt = torch.tensor(boxes_scores, dtype=torch.float64).reshape(-1, 5)
    n = len(dt)
    result = coco_evaluate(gt, DatasetDetections(torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long),
                                          dt[:, :4], dt[:, 4]), 2)
    return float(result.stats[1])


def test_evaluation_ignores_difficult_boxes_like_crowd_ones(voc):
    """Image d: a cat (20, 20, 60, 60) and a difficult dog (60, 10, 90, 70), evaluated as class 0."""
    _, dataset = build_dataloader([voc / "ImageSets" / "Main" / "val.txt"], 2, img_size=64, rect=True, names=NAMES,
                                  single_cls=True)
    assert len(dataset.labels[0]) == 1 and len(dataset.crowd[0]) == 1
    on_cat, on_dog = [20, 20, 40, 40], [60, 10, 30, 60]
    # a missed difficult box costs no recall, a detection on it is no false positive (it outranks the cat here)
    assert _ap50(dataset, [on_cat + [0.8]]) == pytest.approx(1.0)
    assert _ap50(dataset, [on_dog + [0.9], on_cat + [0.8]]) == pytest.approx(1.0)
    dataset.crowd[0] = dataset.crowd[0][:0]  # without the ignore region the detection on the dog is a false positive
    assert _ap50(dataset, [on_dog + [0.9], on_cat + [0.8]]) == pytest.approx(0.5, abs=0.01)
