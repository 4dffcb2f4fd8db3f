"""utils/coco_eval.py against pycocotools' COCOeval on seeded generated cases."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.coco_eval import (
    STAT_NAMES,
    DatasetDetections,
    GroundTruth,
    coco_evaluate,
    pair_iou,
)

IMG = 640.0


def _box(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random xywh boxes [n, 4], sizes log-uniform from 1 px to the whole image."""
    wh = np.exp(rng.uniform(0.0, np.log(IMG), (n, 2)))
    xy = rng.uniform(0, 1, (n, 2)) * (IMG - wh)
    return np.concatenate([xy, wh], 1)


def _jitter(rng: np.random.Generator, boxes: np.ndarray, scale: float) -> np.ndarray:
    """Perturb xywh boxes [n, 4] by ``scale`` of their size, so IoUs spread over 0.3..1."""
    out = boxes.copy()
    out[:, :2] += rng.normal(0, scale, (len(boxes), 2)) * boxes[:, 2:]
    out[:, 2:] *= np.exp(rng.normal(0, scale, (len(boxes), 2)))
    return out


def make_case(seed: int) -> tuple[dict, list[dict]]:
    """A COCO gt dict and a detection list with the awkward cases pycocotools handles.

    Tied (quantised) scores, duplicate detections and duplicate gts, crowd regions, images
    without gt, classes without detections or without gt, >100 detections per image and class,
    tiny and huge boxes, areas on the small/medium/large bounds and areas unlike w*h.
    """
    rng = np.random.default_rng(seed)
    n_img, n_cat = int(rng.integers(1, 12)), int(rng.integers(1, 6))
    cat_ids = sorted(rng.choice(np.arange(1, 100), n_cat, replace=False).tolist())
    img_ids = sorted(rng.choice(np.arange(1, 10_000), n_img, replace=False).tolist())
    images = [{"id": i, "width": IMG, "height": IMG} for i in img_ids]
    anns, dets = [], []
    no_det_cat = cat_ids[0] if rng.random() < 0.3 else None
    no_gt_cat = cat_ids[-1] if n_cat > 1 and rng.random() < 0.3 else None
    for img in img_ids:
        if rng.random() < 0.15:  # image without ground truth (its detections are all false)
            gts = np.zeros((0, 4))
        else:
            gts = _box(rng, int(rng.integers(0, 15)))
            if len(gts) and rng.random() < 0.3:  # duplicate gts: IoU ties between gts
                gts = np.concatenate([gts, gts[: int(rng.integers(1, len(gts) + 1))]])
        g_cat = rng.choice(cat_ids, len(gts))
        if no_gt_cat is not None:
            g_cat[g_cat == no_gt_cat] = cat_ids[0]
        for box, c in zip(gts, g_cat, strict=True):
            crowd = int(rng.random() < 0.1)
            area = float(box[2] * box[3])
            u = rng.random()
            if u < 0.2:
                area *= rng.uniform(0.4, 1.0)  # a segment area smaller than the box
            elif u < 0.3:
                area = float(rng.choice([32.0**2, 96.0**2]))  # exactly on an area bound
            anns.append({"image_id": img, "category_id": int(c), "bbox": box.tolist(), "area": area, "iscrowd": crowd})
        # Detections: jittered gts (true and near-miss positives), random boxes, exact duplicates.
        parts = [_jitter(rng, gts, rng.uniform(0.02, 0.3)), _box(rng, int(rng.integers(0, 20)))]
        d_box = np.concatenate(parts) if len(parts[0]) + len(parts[1]) else np.zeros((0, 4))
        d_cat = np.concatenate([g_cat, rng.choice(cat_ids, len(parts[1]))]).astype(int)
        if len(d_box) and rng.random() < 0.3:
            dup = rng.integers(0, len(d_box), int(rng.integers(1, 6)))
            d_box, d_cat = np.concatenate([d_box, d_box[dup]]), np.concatenate([d_cat, d_cat[dup]])
        if rng.random() < 0.15:  # > 100 detections of one class in one image
            many = _box(rng, 130)
            d_box, d_cat = np.concatenate([d_box, many]), np.concatenate([d_cat, np.full(130, cat_ids[-1])])
        scores = rng.random(len(d_box))
        if rng.random() < 0.5:
            scores = np.round(scores, 1)  # many ties
        for box, c, s in zip(d_box, d_cat, scores, strict=True):
            if c == no_det_cat:
                continue
            dets.append({"image_id": img, "category_id": int(c), "bbox": box.tolist(), "score": float(s)})
    if rng.random() < 0.3:  # a crowd region holding many detections
        img, c = img_ids[0], cat_ids[0]
        anns.append({"image_id": img, "category_id": c, "bbox": [0.0, 0.0, 300.0, 300.0], "area": 9e4, "iscrowd": 1})
        for box in _box(rng, 20) * 0.4:
            dets.append({"image_id": img, "category_id": c, "bbox": box.tolist(), "score": float(rng.random())})
    if not dets:  # pycocotools' loadRes cannot take an empty list
        dets.append({"image_id": img_ids[0], "category_id": cat_ids[0], "bbox": _box(rng, 1)[0].tolist(), "score": 0.5})
    rng.shuffle(anns)  # gt order matters for IoU ties; test arbitrary orders
    for i, a in enumerate(anns):
        a["id"] = i + 1
    order = rng.permutation(len(dets))
    dets = [dets[i] for i in order]
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cat_ids]}
    return gt, dets


def pycoco(gt: dict, dets: list[dict]) -> COCOeval:
    """pycocotools' evaluation of the case, printing silenced."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def ours(gt: dict, dets: list[dict]):
    """Our evaluation of the case, via the tensors a caller would build."""
    cat_ids = sorted(c["id"] for c in gt["categories"])
    index = {c: i for i, c in enumerate(cat_ids)}
    a = gt["annotations"]
    g = GroundTruth(
        torch.tensor([x["image_id"] for x in a], dtype=torch.long),
        torch.tensor([index[x["category_id"]] for x in a], dtype=torch.long),
        torch.tensor([x["bbox"] for x in a], dtype=torch.float64).view(-1, 4),
        torch.tensor([x["area"] for x in a], dtype=torch.float64),
        torch.tensor([bool(x["iscrowd"]) for x in a]),
    )
    d = DatasetDetections(
        torch.tensor([x["image_id"] for x in dets], dtype=torch.long),
        torch.tensor([index[x["category_id"]] for x in dets], dtype=torch.long),
        torch.tensor([x["bbox"] for x in dets], dtype=torch.float64).view(-1, 4),
        torch.tensor([x["score"] for x in dets], dtype=torch.float64),
    )
    return coco_evaluate(g, d, len(cat_ids))


@pytest.mark.parametrize("seed", range(40))
def test_equals_pycocotools(seed: int) -> None:
    gt, dets = make_case(seed)
    ref = pycoco(gt, dets)
    res = ours(gt, dets)
    np.testing.assert_allclose(res.stats.numpy(), ref.stats, atol=1e-4, err_msg=str(STAT_NAMES))
    # Stronger: every precision / recall entry, not only the averages.
    np.testing.assert_allclose(res.precision.numpy(), ref.eval["precision"], atol=1e-9)
    np.testing.assert_allclose(res.recall.numpy(), ref.eval["recall"], atol=1e-9)


def test_hand_computed() -> None:
    """Two gts of one class; detections: a perfect hit (0.9), a miss (0.8), a 0.6-IoU hit (0.7)."""
    g = GroundTruth(
        torch.tensor([1, 1]),
        torch.tensor([0, 0]),
        torch.tensor([[0.0, 0.0, 100.0, 100.0], [200.0, 200.0, 100.0, 100.0]], dtype=torch.float64),
        torch.tensor([1e4, 1e4], dtype=torch.float64),
        torch.tensor([False, False]),
    )
    # 100x100 gt vs a 100x60 box inside it: IoU 0.6.
    d = DatasetDetections(
        torch.tensor([1, 1, 1]),
        torch.tensor([0, 0, 0]),
        torch.tensor([[0.0, 0.0, 100.0, 100.0], [500, 500, 50, 50], [200, 200, 100, 60]], dtype=torch.float64),
        torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64),
    )
    res = coco_evaluate(g, d, 1)
    # IoU 0.5: precision envelope 1 up to recall .5, then 2/3 up to recall 1.
    p50 = res.precision[0, :, 0, 0, 2]
    assert torch.allclose(p50[:51], torch.ones(51, dtype=torch.float64))
    assert torch.allclose(p50[51:], torch.full((50,), 2 / 3, dtype=torch.float64))
    assert res.as_dict()["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # Above IoU 0.6 only the perfect hit counts: recall .5 at every threshold from 0.65.
    assert res.recall[3:, 0, 0, 2].tolist() == [0.5] * 7
    assert res.as_dict()["AR1"] == pytest.approx(0.5)
    # The 0.6 IoU hit counts at thresholds .5, .55, .6; from .65 on AP is 51/101 (recall .5).
    stats = res.as_dict()
    assert stats["AP"] == pytest.approx((3 * stats["AP50"] + 7 * 51 / 101) / 10)
    # All gts are 1e4 px^2 > 96^2: large. The unmatched miss (2500 px^2) and the unmatched
    # 100x60 box are then outside the range and ignored, so precision stays 1.
    assert stats["APs"] == -1 and stats["APm"] == -1
    assert stats["APl"] == pytest.approx((3 + 7 * 51 / 101) / 10)
    ap50, ap = res.per_class_ap()
    assert ap50.item() == pytest.approx(res.as_dict()["AP50"])
    assert ap.item() == pytest.approx(res.as_dict()["AP"])


def test_crowd_iou_is_over_detection_area() -> None:
    d = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2, dtype=torch.float64)
    g = torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 2, dtype=torch.float64)
    iou = pair_iou(d, g, torch.tensor([False, True]))
    assert iou.tolist() == pytest.approx([0.01, 1.0])


def test_no_detections() -> None:
    g = GroundTruth(
        torch.tensor([3]), torch.tensor([0]), torch.tensor([[0.0, 0, 10, 10]], dtype=torch.float64),
        torch.tensor([100.0], dtype=torch.float64), torch.tensor([False]),
    )
    empty = torch.zeros(0, dtype=torch.long)
    d = DatasetDetections(empty, empty, torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64))
    stats = coco_evaluate(g, d, 2).as_dict()
    # Class 0 has a gt and nothing found: 0; class 1 has no gt: left out; no medium/large gt: -1.
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0 and stats["APs"] == 0.0
    assert stats["APm"] == -1.0 and stats["ARl"] == -1.0


def test_no_ground_truth() -> None:
    """Detections but no gt at all: every setting undefined, all 12 numbers -1 (as pycocotools)."""
    empty = torch.zeros(0, dtype=torch.long)
    g = GroundTruth(empty, empty, torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
                    torch.zeros(0, dtype=torch.bool))
    d = DatasetDetections(torch.tensor([1]), torch.tensor([0]), torch.tensor([[0.0, 0, 10, 10]], dtype=torch.float64),
                   torch.tensor([0.5], dtype=torch.float64))
    assert coco_evaluate(g, d, 1).stats.tolist() == [-1.0] * 12
