"""YoloLoss: gains, CIoU against torchvision, finiteness and gradients with 0 / 1 / many targets."""

import math
import re

import pytest
import torch
from test_overfit import one_thread, small_config  # noqa: F401 (one_thread is a fixture)
from torch import nn
from torchvision.ops import complete_box_iou, sigmoid_focal_loss

from engine.train.options import TrainOptions, load_hyp
from models.assign import ASSIGNERS, AssignRule
from models.loss import LossItems, YoloLoss, bce, level_balance, loss_gains
from models.yolo import Model
from utils.config import ConfigError, Hyp

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


class StandInHead(nn.Module):
    """The attributes of models.head.Detect that the loss reads (the docs/design.md contract)."""

    def __init__(self, nc: int = 3, anchors: list[list[float]] = ANCHORS, strides=(8, 16, 32)) -> None:
        super().__init__()
        self.nl, self.na, self.nc = len(anchors), len(anchors[0]) // 2, nc
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2))
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))


def raw_outputs(head: StandInHead, batch: int, size: int, aux: bool = False, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, head.na, size // int(s), size // int(s), 5 + head.nc) for s in head.stride.tolist()]
    shapes = shapes * (2 if aux else 1)
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes]


def random_targets(n: int, batch: int, nc: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 6, generator=g)
    t[:, 0] = torch.randint(0, max(1, batch - 1), (n,), generator=g)  # the last image stays empty
    t[:, 1] = torch.randint(0, nc, (n,), generator=g)
    t[:, 4:] = t[:, 4:] * 0.5 + 0.05
    return t


def test_loss_gains_follow_yolov7_scaling():
    hyp = Hyp(box=0.05, obj=0.7, cls=0.3)
    assert loss_gains(hyp, 3, 80, 640) == pytest.approx((0.05, 0.7, 0.3))
    # 4 levels, 20 classes, 1280 px: box * 3/4, obj * 4 * 3/4, cls * 20/80 * 3/4
    assert loss_gains(hyp, 4, 20, 1280) == pytest.approx((0.0375, 2.1, 0.05625))
    assert level_balance(3) == [4.0, 1.0, 0.4]
    assert level_balance(4) == [4.0, 1.0, 0.25, 0.06]


@pytest.mark.parametrize("assigner", ["yolov5", "ota"])
@pytest.mark.parametrize("aux", [False, True])
@pytest.mark.parametrize("n", [0, 1, 60])
def test_finite_and_gradients_reach_every_level(assigner, aux, n):
    head = StandInHead()
    raw = raw_outputs(head, batch=3, size=64, aux=aux)
    targets = random_targets(n, 3, head.nc) if n != 1 else torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4]])
    loss, items = YoloLoss(head, Hyp(), assigner=assigner)(raw, targets, (64, 64))
    assert loss.shape == () and torch.isfinite(loss) and torch.isfinite(torch.stack(items)).all()
    assert isinstance(items, LossItems) and all(t.shape == () and not t.requires_grad for t in items)
    assert loss.item() == pytest.approx(items.total.item() * 3, rel=1e-5)  # scaled by the batch size
    assert (items.box > 0) == (n > 0) and (items.cls > 0) == (n > 0)
    loss.backward()
    for x in raw:
        assert x.grad is not None and x.grad.abs().sum() > 0
    if n:  # positives get box gradients somewhere on the lead levels
        box_grads = sum(float(x.grad[..., :4].abs().sum()) for x in raw[:3])
        assert box_grads > 0


@pytest.mark.parametrize("n", [0, 1, 40])
def test_real_model_gradients_reach_every_head_conv(n, one_thread):  # noqa: F811 (the fixture)
    model = Model(small_config("IAuxDetect")).train()
    x = torch.rand(2, 3, 64, 64)
    targets = random_targets(n, 2, model.nc) if n != 1 else torch.tensor([[1, 0, 0.4, 0.6, 0.2, 0.3]])
    loss, items = YoloLoss(model.head, Hyp())(model(x), targets, (64, 64))
    assert torch.isfinite(loss) and torch.isfinite(torch.stack(items)).all()
    loss.backward()
    convs = list(model.head.m) + list(model.head.m2)
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_four_level_aux_head():
    anchors = ANCHORS + [[436, 615, 739, 380, 925, 792]]
    head = StandInHead(anchors=anchors, strides=(8, 16, 32, 64))
    raw = raw_outputs(head, batch=2, size=128, aux=True)
    loss, items = YoloLoss(head, Hyp())(raw, random_targets(30, 2, head.nc), (128, 128))
    assert len(raw) == 8 and torch.isfinite(loss) and all(t > 0 for t in items)
    loss.backward()
    assert all(x.grad.abs().sum() > 0 for x in raw)


def _single_positive_case(nc: int = 1):
    """One target in the top-left cell of level 0 whose size fits only anchor 0 of level 0."""
    head = StandInHead(nc=nc, anchors=[[12, 12, 200, 200], [400, 400, 600, 600]], strides=(8, 16))
    raw = [torch.zeros(1, 2, 64 // s, 64 // s, 5 + nc) for s in (8, 16)]
    raw[0][0, 0, 0, 0, :4] = torch.tensor([0.3, -0.2, 0.1, -0.4])
    targets = torch.tensor([[0, 0, 3.0 / 64, 3.0 / 64, 10.0 / 64, 14.0 / 64]])  # centre (3, 3) px, 10 x 14
    return head, raw, targets


def test_box_term_is_one_minus_torchvision_ciou():
    head, raw, targets = _single_positive_case()
    for assigner in ("yolov5", "ota"):
        _, items = YoloLoss(head, Hyp(box=1.0), assigner=assigner)(raw, targets, (64, 64))
        t = raw[0][0, 0, 0, 0, :4].sigmoid()
        cx, cy = (2 * t[0] - 0.5) * 8, (2 * t[1] - 0.5) * 8  # cell (0, 0), stride 8
        w, h = (2 * t[2]) ** 2 * 12, (2 * t[3]) ** 2 * 12
        pred = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
        true = torch.tensor([[3 - 5.0, 3 - 7.0, 3 + 5.0, 3 + 7.0]])
        # gains: box * 3 / nl with nl = 2 levels
        assert items.box.item() == pytest.approx(1.5 * (1 - complete_box_iou(pred, true).item()), rel=1e-5)


def test_ciou_golden_value():
    # pred [0, 0, 4, 2], true [1, 0, 5, 4]: intersection 3 x 2, union 8 + 16 - 6
    pred, true = torch.tensor([[0.0, 0, 4, 2]]), torch.tensor([[1.0, 0, 5, 4]])
    iou = 6 / 18
    rho2 = (3 - 2) ** 2 + (2 - 1) ** 2  # centres (2, 1) and (3, 2)
    c2 = 5**2 + 4**2  # enclosing box [0, 0, 5, 4]
    v = 4 / math.pi**2 * (math.atan(4 / 4) - math.atan(4 / 2)) ** 2
    alpha = v / (1 - iou + v)
    assert complete_box_iou(pred, true).item() == pytest.approx(iou - rho2 / c2 - alpha * v, abs=1e-6)


def test_objectness_target_is_detached_ciou():
    head, raw, targets = _single_positive_case()
    raw = [x.requires_grad_() for x in raw]
    loss, _ = YoloLoss(head, Hyp(), assigner="yolov5")(raw, targets, (64, 64))
    loss.backward()
    # d BCE / d logit = sigmoid(0) - target = 0.5 - CIoU at the positive; 0.5 - 0 elsewhere
    g_pos, g_neg = raw[0].grad[0, 0, 0, 0, 4], raw[0].grad[0, 1, 3, 3, 4]
    t = raw[0][0, 0, 0, 0, :4].detach().sigmoid()
    cx, cy, w, h = (2 * t[0] - 0.5) * 8, (2 * t[1] - 0.5) * 8, (2 * t[2]) ** 2 * 12, (2 * t[3]) ** 2 * 12
    ciou = complete_box_iou(
        torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])[None], torch.tensor([[-2.0, -4, 8, 10]])
    ).item()
    assert (g_pos / g_neg).item() == pytest.approx((0.5 - ciou) / 0.5, rel=1e-4)


def test_focal_bce_equals_torchvision():
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(50, generator=g), (torch.rand(50, generator=g) > 0.5).float()
    torch.testing.assert_close(bce(logits, target, 1.0, 1.5), sigmoid_focal_loss(logits, target, 0.25, 1.5))


def test_label_smoothing_targets():
    head, raw, targets = _single_positive_case(nc=2)
    raw[0][0, 0, 0, 0, 5:] = torch.tensor([4.0, -4.0])
    plain = YoloLoss(head, Hyp(cls=1.0), assigner="yolov5")(raw, targets, (64, 64))[1].cls
    smooth = YoloLoss(head, Hyp(cls=1.0, label_smoothing=0.2), assigner="yolov5")(raw, targets, (64, 64))[1].cls
    # per-class targets (0.9, 0.1) instead of (1, 0): the confident right answer now costs more
    logits = torch.tensor([4.0, -4.0])
    want = bce(logits, torch.tensor([0.9, 0.1])).mean() * 2 / 80 * 3 / 2
    assert smooth.item() == pytest.approx(want.item(), rel=1e-5) and smooth > plain


def _positive_set(c) -> set[tuple[int, int, int]]:
    return set(zip(c.level.tolist(), c.flat.tolist(), c.target.tolist(), strict=False))


def test_aux_positives_superset_of_lead():
    head = StandInHead()
    raw = raw_outputs(head, batch=2, size=64, aux=True, seed=5)
    targets = random_targets(12, 2, head.nc, seed=5)
    for assigner in ("yolov5", "ota"):
        lead, aux = YoloLoss(head, Hyp(), assigner=assigner).assign(raw, targets, (64, 64))
        assert _positive_set(lead) < _positive_set(aux)


def test_bad_inputs_are_errors():
    head = StandInHead()
    loss = YoloLoss(head, Hyp())
    raw = raw_outputs(head, 2, 64)
    with pytest.raises(ValueError, match="img_size"):
        loss(raw, torch.zeros(0, 6), (96, 64))
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        loss(raw, torch.zeros(3, 5), (64, 64))
    with pytest.raises(ValueError, match="image index"):
        loss(raw, torch.tensor([[2, 0, 0.5, 0.5, 0.1, 0.1]]), (64, 64))
    with pytest.raises(ValueError, match="class"):
        loss(raw, torch.tensor([[1, 3, 0.5, 0.5, 0.1, 0.1]]), (64, 64))
    with pytest.raises(ValueError, match="outputs"):
        loss(raw[:2], torch.zeros(0, 6), (64, 64))


@pytest.mark.parametrize("assigner", ["yolov5", "ota"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_collapsed_box_predictions_give_finite_loss(assigner, dtype):
    """Size logits so negative that (2 sigmoid)^2 underflows to 0 (fp16: below about -17) made
    CIoU's aspect term 0/0 = NaN; the loss and its gradients must stay finite."""
    head = StandInHead()
    raw = [x.detach().to(dtype) for x in raw_outputs(head, batch=2, size=64)]
    for x in raw:
        x[..., 2:4] = -200.0
        x.requires_grad_()
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.25, 0.3, 0.1, 0.2]])
    loss, items = YoloLoss(head, Hyp(), assigner=assigner)(raw, targets, (64, 64))
    assert torch.isfinite(loss) and torch.isfinite(torch.stack(items)).all() and items.box > 0
    loss.backward()
    assert all(torch.isfinite(x.grad).all() for x in raw)


def test_assignment_rule_by_name_and_a_registered_new_rule(monkeypatch):
    head = StandInHead()
    raw = raw_outputs(head, batch=2, size=64, aux=True, seed=3)
    targets = random_targets(8, 2, head.nc, seed=3)
    for name, loss_ota in (("ota", True), ("yolov5", False)):
        by_name = YoloLoss(head, Hyp(), assigner=name)(raw, targets, (64, 64))[1]
        # the hyp's assigner key, YOLOv7's loss_ota, or both agreeing select the rule
        for hyp in (Hyp(assigner=name), Hyp(loss_ota=loss_ota), Hyp(assigner=name, loss_ota=loss_ota)):
            loss = YoloLoss(head, hyp)
            assert loss.assigner == name and loss.rule is ASSIGNERS[name]
            assert torch.equal(torch.stack(loss(raw, targets, (64, 64))[1]), torch.stack(by_name))
    assert YoloLoss(head, Hyp()).assigner == "ota"  # neither key: YOLOv7's default
    # A new rule is one ASSIGNERS entry: here, only the centre-cell candidates are positives.
    seen = []

    def centre_only(candidates, inputs):
        seen.append(inputs.aux_model)
        return candidates

    monkeypatch.setitem(ASSIGNERS, "centre", AssignRule(centre_only, lead_reach=0.0, aux_reach=0.0))
    hyp = load_hyp(TrainOptions(hyp="cfg/hyp/hyp.scratch.p5.yaml", overrides=["assigner=centre"]))
    lead, aux = YoloLoss(head, hyp).assign(raw, targets, (64, 64))  # from the command line to the registry
    plain, _ = YoloLoss(head, hyp, assigner="yolov5").assign(raw, targets, (64, 64))
    assert seen == [True, True] and len(lead.flat) < len(plain.flat) and _positive_set(lead) == _positive_set(aux)
    with pytest.raises(ValueError, match="unknown assignment rule 'tal'.*centre"):
        YoloLoss(head, Hyp(), assigner="tal")


def test_the_hyp_file_names_the_rule(tmp_path):
    """An unknown rule is a ConfigError naming the file (or the command line), the key and the
    choices; YOLOv7's loss_ota still works, and given with assigner it must agree."""
    path = tmp_path / "hyp.yaml"
    path.write_text("assigner: tal\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: key 'assigner': unknown assignment rule 'tal' "
                                                    "(known: ota, yolov5)")):
        load_hyp(TrainOptions(hyp=str(path)))
    path.write_text("loss_ota: 0\n")
    assert load_hyp(TrainOptions(hyp=str(path))).assignment_rule == "yolov5"
    # a command-line override in either spelling replaces the file's rule
    assert load_hyp(TrainOptions(hyp=str(path), overrides=["assigner=ota"])).assignment_rule == "ota"
    assert load_hyp(TrainOptions(hyp=str(path), overrides=["loss_ota=1"])).assignment_rule == "ota"
    with pytest.raises(ConfigError, match="command line: key 'assigner': unknown assignment rule 'tal'"):
        load_hyp(TrainOptions(hyp=str(path), overrides=["assigner=tal"]))
    path.write_text("assigner: yolov5\nloss_ota: 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: keys 'assigner' (yolov5) and 'loss_ota' (true")):
        load_hyp(TrainOptions(hyp=str(path)))
