"""Our loss and label assignment against the official YOLOv7 code (ComputeLoss, ComputeLossOTA,
ComputeLossAuxOTA), on values it computed (docs/parity.md: how the fixtures were made).

tests/fixtures/official_loss/<model>.pt holds plain tensors only: the raw training outputs of a
random-init official yolov7-tiny / yolov7 (256 px, 3 images) and yolov7-e6 (320 px, 2 images,
auxiliary head), rounded to fp16 (the official loss was computed on the rounded values), the
head's anchors (pixels) and strides, and per target set ("sparse": no anchor is a candidate of
two targets; "crowded": many are):

- ``ota_items``, ``ota_matched``: the official OTA loss (box, obj, cls, total) and its positives
  as rows (level, image, anchor, gj, gi, target index); ``ota_aux_matched``: the auxiliary
  head's positives (e6);
- ``dedup_items``, ``dedup_matched``, ``dedup_aux_matched``: the same official code with its
  candidate list cut to one column per anchor (first occurrence kept), the one deliberate
  difference of models/assign.py (see its docstring);
- ``plain_items``, ``plain_matched``: the official ComputeLoss (every candidate a positive).

The raw outputs of our converted models equal the official ones exactly (max abs diff 0), so
these compare the loss alone. The official items are (box, obj, cls, total).
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from models.loss import YoloLoss
from utils.config import Hyp, load

FIXTURES = Path(__file__).parent / "fixtures" / "official_loss"
ROOT = Path(__file__).resolve().parents[1]
HYP = {"yolov7-tiny": "hyp.scratch.tiny.yaml", "yolov7": "hyp.scratch.p5.yaml", "yolov7-e6": "hyp.scratch.p6.yaml"}
RTOL = 1e-4


AUX = ["yolov7-e6"]
P5 = [name for name in HYP if name not in AUX]


@cache
def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def _loss(name: str, ref: dict, **kwargs: object) -> YoloLoss:
    anchors = ref["anchors"]
    head = SimpleNamespace(nl=len(ref["stride"]), na=anchors.shape[1], nc=ref["nc"], anchors=anchors,
                           stride=ref["stride"])
    return YoloLoss(head, load(Hyp, ROOT / "cfg" / "hyp" / HYP[name]), train_size=ref["img"], **kwargs)


def _unmerged(loss: YoloLoss) -> YoloLoss:
    """The loss with the official auxiliary positives: not merged with the lead's."""
    loss.rule = dataclasses.replace(loss.rule, merge_aux=False)
    return loss


def _rows(c: object) -> Tensor:
    """Positives as rows (level, image, anchor, gj, gi, target), sorted."""
    return _sorted(torch.stack([c.level, c.image, c.anchor, c.gj, c.gi, c.target], 1))


def _sorted(rows: Tensor) -> Tensor:
    return torch.tensor(sorted(map(tuple, rows.tolist())), dtype=torch.long).reshape(-1, 6)


def _items(loss: YoloLoss, ref: dict, case: str) -> Tensor:
    raw = [r.float() for r in ref["raw"]]
    _, items = loss(raw, ref["cases"][case]["targets"], (ref["img"], ref["img"]))
    return torch.stack([items.box, items.obj, items.cls, items.total])


def _assign(loss: YoloLoss, ref: dict, case: str) -> tuple:
    raw = [r.float() for r in ref["raw"]]
    return loss.assign(raw, ref["cases"][case]["targets"], (ref["img"], ref["img"]))


def _is_aux(ref: dict) -> bool:
    return len(ref["raw"]) == 2 * len(ref["stride"])


@pytest.mark.parametrize("name", list(HYP))
def test_ota_equals_official_without_shared_candidates(name: str) -> None:
    """No anchor is a candidate of two targets: our OTA loss and positives are the official ones
    (with an auxiliary head: its positives not merged with the lead's, as the official code)."""
    ref = _fixture(name)
    loss = _loss(name, ref)
    if _is_aux(ref):
        loss = _unmerged(loss)
    official = ref["cases"]["sparse"]
    torch.testing.assert_close(_items(loss, ref, "sparse"), official["ota_items"], rtol=RTOL, atol=0)
    lead, aux = _assign(loss, ref, "sparse")
    assert torch.equal(_rows(lead), _sorted(official["ota_matched"]))
    if _is_aux(ref):
        assert torch.equal(_rows(aux), _sorted(official["ota_aux_matched"]))


@pytest.mark.parametrize("name", list(HYP))
def test_ota_equals_official_with_one_column_per_anchor(name: str) -> None:
    """Crowded targets: equal to the official code once its candidate list holds each anchor once,
    our one deliberate difference; the fixture shows the difference matters there."""
    ref = _fixture(name)
    loss = _loss(name, ref)
    if _is_aux(ref):
        loss = _unmerged(loss)
    official = ref["cases"]["crowded"]
    assert not torch.allclose(official["ota_items"], official["dedup_items"], rtol=RTOL, atol=0)
    torch.testing.assert_close(_items(loss, ref, "crowded"), official["dedup_items"], rtol=RTOL, atol=0)
    lead, aux = _assign(loss, ref, "crowded")
    assert torch.equal(_rows(lead), _sorted(official["dedup_matched"]))
    if _is_aux(ref):
        assert torch.equal(_rows(aux), _sorted(official["dedup_aux_matched"]))


@pytest.mark.parametrize("name", AUX)
@pytest.mark.parametrize("case", ["sparse", "crowded"])
def test_merged_aux_positives_are_official_lead_plus_aux(name: str, case: str) -> None:
    """Our default auxiliary positives: the official lead's, plus the official auxiliary ones at
    anchors the lead does not use (merge_positives; the official code does not merge)."""
    ref = _fixture(name)
    official = ref["cases"][case]
    lead_keys = {tuple(r[:5]) for r in official["dedup_matched"].tolist()}
    extra = [r for r in official["dedup_aux_matched"].tolist() if tuple(r[:5]) not in lead_keys]
    expected = _sorted(torch.cat([official["dedup_matched"], torch.tensor(extra, dtype=torch.long).reshape(-1, 6)]))
    _, aux = _assign(_loss(name, ref), ref, case)
    assert torch.equal(_rows(aux), expected)
    assert len(expected) > len(official["dedup_aux_matched"])  # the merge adds lead positives here


@pytest.mark.parametrize("name", P5)
@pytest.mark.parametrize("case", ["sparse", "crowded"])
def test_plain_assignment_equals_official_compute_loss(name: str, case: str) -> None:
    """The YOLOv5-rule assignment (every candidate a positive) and its loss: ComputeLoss's."""
    ref = _fixture(name)
    loss = _loss(name, ref, assigner="yolov5")
    official = ref["cases"][case]
    torch.testing.assert_close(_items(loss, ref, case), official["plain_items"], rtol=RTOL, atol=0)
    lead, _ = _assign(loss, ref, case)
    assert torch.equal(_rows(lead), _sorted(official["plain_matched"]))
