"""Label assignment: hand-computed candidates and OTA choices, batching and chunking."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from models.assign import (
    Candidates,
    batched_box_iou,
    class_cost_terms,
    find_candidates,
    ota_assign,
    unique_anchors,
)

STRIDES = (8, 16, 32)
ANCHORS_PX = torch.tensor(
    [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
    dtype=torch.float32,
)
IMG = 128
GRIDS = [(IMG // s, IMG // s) for s in STRIDES]


def grid_anchors() -> torch.Tensor:
    return ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(-1, 1, 1)


def as_set(c: Candidates) -> set[tuple[int, ...]]:
    return set(zip(*(f.tolist() for f in (c.target, c.image, c.level, c.anchor, c.gj, c.gi)), strict=False))


def test_candidates_hand_computed():
    # box 32 x 25.6 px centred at (38.4, 76.8) px of a 128 x 128 image, in image 1 of the batch
    targets = torch.tensor([[1, 0, 0.3, 0.6, 0.25, 0.2]])
    got = find_candidates(targets, grid_anchors(), GRIDS, 2, anchor_t=4.0, reach=0.5)
    # level 0 (16 x 16): centre (4.8, 9.6) -> cell (gi 4, gj 9); x frac 0.8 -> right neighbour,
    # y frac 0.6 -> lower neighbour; size (4, 3.2) cells fits all three anchors (max ratio 3.2).
    level0 = {(0, a, gj, gi) for a in range(3) for gj, gi in [(9, 4), (9, 5), (10, 4)]}
    # level 1 (8 x 8): centre (2.4, 4.8) -> cell (2, 4); left and lower neighbours; size (2, 1.6)
    # fits anchors 0 and 1, not anchor 2 (59 x 119 px: h ratio 7.4375 / 1.6 = 4.65 > 4).
    level1 = {(1, a, gj, gi) for a in range(2) for gj, gi in [(4, 2), (4, 1), (5, 2)]}
    # level 2 (4 x 4): centre (1.2, 2.4) -> cell (1, 2); left and upper neighbours; only anchor 0
    # (116 x 90 px: ratio 3.625) fits.
    level2 = {(2, 0, gj, gi) for gj, gi in [(2, 1), (2, 0), (1, 1)]}
    assert as_set(got) == {(0, 1, *k) for k in level0 | level1 | level2}
    assert got.level.tolist() == sorted(got.level.tolist())
    for level, (h, w) in enumerate(GRIDS):  # flat index into [B, na, H, W]
        m = got.level == level
        assert torch.equal(got.flat[m], ((got.image[m] * 3 + got.anchor[m]) * h + got.gj[m]) * w + got.gi[m])


def test_candidates_four_neighbours():
    targets = torch.tensor([[0, 0, 0.3, 0.6, 0.25, 0.2]])
    got = find_candidates(targets, grid_anchors(), GRIDS, 1, anchor_t=4.0, reach=1.0)
    level2 = {(gj, gi) for _, _, lv, _, gj, gi in as_set(got) if lv == 2}
    # centre (1.2, 2.4) in cell (1, 2): all four neighbours exist on the 4 x 4 grid
    assert level2 == {(2, 1), (2, 0), (1, 1), (2, 2), (3, 1)}


def test_candidates_border_and_empty():
    # centre in the top-left cell of every level: no left or upper neighbour
    targets = torch.tensor([[0, 0, 0.01, 0.01, 0.1, 0.1]])
    got = find_candidates(targets, grid_anchors(), GRIDS, 1, anchor_t=4.0, reach=1.0)
    assert (got.gi >= 0).all() and (got.gj >= 0).all()
    assert {(gj, gi) for gj, gi in zip(got.gj.tolist(), got.gi.tolist(), strict=False)} == {(0, 0), (0, 1), (1, 0)}
    empty = find_candidates(torch.zeros(0, 6), grid_anchors(), GRIDS, 2, anchor_t=4.0)
    assert all(len(f) == 0 for f in empty)


def test_four_neighbours_superset_of_two():
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(200, 6, generator=g)
    targets[:, 0] = torch.randint(0, 4, (200,), generator=g)
    targets[:, 4:] = targets[:, 4:] * 0.6 + 0.01
    two = find_candidates(targets, grid_anchors(), GRIDS, 4, anchor_t=4.0, reach=0.5)
    four = find_candidates(targets, grid_anchors(), GRIDS, 4, anchor_t=4.0, reach=1.0)
    assert as_set(two) < as_set(four)


def _hand_case(n: int) -> Candidates:
    """n candidate anchors of image 0, level 0, told apart by gi = flat = 0..n-1."""
    z = torch.zeros(n, dtype=torch.long)
    return Candidates(z, z, z, z, z, torch.arange(n), torch.arange(n))


def test_ota_hand_computed():
    # A = [0, 0, 10, 10], B = [2, 0, 12, 10]; four candidate predictions, IoUs with (A, B):
    # c0 [0,0,10,10] (1, .667); c1 [2,0,12,10] (.667, 1); c2 [1.5,0,11.5,10] (.739, .905);
    # c3 [0,0,10,8] (.8, .552). Top-10 IoU sums 3.21 and 3.12 -> dynamic k = 3 for both.
    # A's 3 cheapest: c0, c3, c2; B's: c1, c2, c0. Claimed twice: c0 goes to A (IoU 1 > .667),
    # c2 to B (.905 > .739). Equal class logits make the class cost the same for every pair.
    preds = torch.tensor([[0, 0, 10, 10], [2, 0, 12, 10], [1.5, 0, 11.5, 10], [0, 0, 10, 8.0]])
    anchors = _hand_case(len(preds))
    targets = torch.tensor([[0, 0, 10, 10], [2, 0, 12, 10.0]])
    cls, obj = torch.zeros(4, 1), torch.zeros(4)
    got = ota_assign(anchors, targets, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), preds, cls, obj, 1)
    assert dict(zip(got.gi.tolist(), got.target.tolist(), strict=False)) == {0: 0, 1: 1, 2: 1, 3: 0}
    # A alone: k = int(1 + .8 + .739 + .667) = 3 -> c0, c3, c2 but not c1
    got = ota_assign(anchors, targets[:1], torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), preds, cls, obj, 1)
    assert sorted(got.gi.tolist()) == [0, 2, 3]
    # a poorly matched target: IoUs (.16, .074, .094, .2) sum to .53 -> k = max(1, 0) = 1: c3
    far = torch.tensor([[0, 0, 4, 4.0]])
    got = ota_assign(anchors, far, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), preds, cls, obj, 1)
    assert got.gi.tolist() == [3]


def test_ota_contested_anchor_goes_to_cheapest_target_overall():
    # A = [0,0,10,9], B = [0,0,10,9.5], C = [0,0,10,10]; c0 = [0,0,10,10], c1 = [0,0,10,9.9].
    # IoUs (c0, c1): A (.9, .909), B (.95, .960), C (1, .99): every k = 1. A and B claim c1,
    # C claims c0. c1 is contested, and the target with the lowest cost for it is C (IoU .99),
    # which did not claim it: YOLOv7 (and YOLOX) give it to C all the same.
    preds = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 9.9]])
    targets = torch.tensor([[0, 0, 10, 9], [0, 0, 10, 9.5], [0, 0, 10, 10]])
    z = torch.zeros(3, dtype=torch.long)
    got = ota_assign(_hand_case(2), targets, z, z, preds, torch.zeros(2, 1), torch.zeros(2), 1)
    assert dict(zip(got.gi.tolist(), got.target.tolist(), strict=False)) == {0: 2, 1: 2}


def test_ota_class_cost_can_win():
    # c0 overlaps A a bit less than c1 but predicts A's class; with k = 1 the class cost decides
    preds = torch.tensor([[0, 0, 10, 9.5], [0, 0, 10, 10.0]])
    anchors = _hand_case(len(preds))
    cls = torch.tensor([[6.0, -6.0], [-6.0, 6.0]])
    obj = torch.full((2,), 6.0)
    t = torch.tensor([[0, 0, 10, 10.0]])
    z = torch.zeros(1, dtype=torch.long)
    assert ota_assign(anchors, t, z, z, preds, cls, obj, 1).gi.tolist() == [0]
    assert ota_assign(anchors, t, z + 1, z, preds, cls, obj, 1).gi.tolist() == [1]


def test_class_cost_equals_bce_over_one_hot():
    g = torch.Generator().manual_seed(1)
    cls, obj = torch.randn(7, 5, generator=g) * 3, torch.randn(7, generator=g) * 3
    s, logit = class_cost_terms(cls, obj)
    y = (cls.sigmoid() * obj.sigmoid()[:, None]).sqrt()
    for c in range(5):
        one_hot = F.one_hot(torch.full((7,), c), 5).float()
        want = F.binary_cross_entropy(y, one_hot, reduction="none").sum(1)
        torch.testing.assert_close(s - logit[:, c], want, rtol=1e-4, atol=1e-4)


def test_batched_box_iou_matches_torchvision():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 5, 4, generator=g) * 50
    b = torch.rand(3, 6, 4, generator=g) * 50
    a[..., 2:] += a[..., :2]
    b[..., 2:] += b[..., :2]
    got = batched_box_iou(a, b)
    for i in range(3):
        torch.testing.assert_close(got[i], box_iou(a[i], b[i]))


def _random_problem(seed: int, batch: int, per_image: int):
    g = torch.Generator().manual_seed(seed)
    n = batch * per_image
    targets = torch.rand(n, 6, generator=g)
    targets[:, 0] = torch.arange(n) % batch
    targets[:, 1] = torch.randint(0, 3, (n,), generator=g)
    targets[:, 4:] = targets[:, 4:] * 0.4 + 0.02
    cands = unique_anchors(find_candidates(targets, grid_anchors(), GRIDS, batch, 4.0))
    u = len(cands.flat)
    xy = torch.stack([cands.gi, cands.gj], 1).float() + torch.rand(u, 2, generator=g)
    stride = torch.tensor(STRIDES, dtype=torch.float32)[cands.level, None]
    wh = grid_anchors()[cands.level, cands.anchor] * (torch.rand(u, 2, generator=g) + 0.5)
    preds = torch.cat([xy - wh / 2, xy + wh / 2], 1) * stride
    cls, obj = torch.randn(u, 3, generator=g), torch.randn(u, generator=g)
    boxes = targets[:, 2:6] * IMG
    boxes = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    return targets, cands, boxes, preds, cls, obj


def _keys(c: Candidates) -> set[tuple[int, int, int]]:
    return set(zip(c.level.tolist(), c.flat.tolist(), c.target.tolist(), strict=False))


def test_ota_batch_equals_per_image_and_chunking():
    batch = 3
    targets, cands, boxes, preds, cls, obj = _random_problem(3, batch, 8)
    img, tcls = targets[:, 0].long(), targets[:, 1].long()
    whole = ota_assign(cands, boxes, tcls, img, preds, cls, obj, batch)
    assert len(whole.flat) == len(set(zip(whole.level.tolist(), whole.flat.tolist(), strict=False)))  # one target per anchor
    assert (whole.image == img[whole.target]).all()
    per_image = set()
    for b in range(batch):
        keep = cands.image == b
        sub = Candidates(*(f[keep] for f in cands))
        got = ota_assign(sub, boxes, tcls, img, preds[keep], cls[keep], obj[keep], batch)
        per_image |= _keys(got)
    assert _keys(whole) == per_image
    chunked = ota_assign(cands, boxes, tcls, img, preds, cls, obj, batch, max_cells=50)
    assert _keys(chunked) == _keys(whole)


def reference_ota(cands, boxes, tcls, img, preds, cls, obj, topq=10) -> dict[tuple[int, int], int]:
    """The OTA rule stated plainly, one image and one target at a time: (level, flat) -> target."""
    out = {}
    for b in img.unique().tolist():
        t_idx, c_idx = (img == b).nonzero().flatten(), (cands.image == b).nonzero().flatten()
        if not len(c_idx):
            continue
        iou = box_iou(boxes[t_idx], preds[c_idx])
        y = (cls[c_idx].sigmoid() * obj[c_idx, None].sigmoid()).sqrt()
        one_hot = F.one_hot(tcls[t_idx], cls.shape[1]).float()
        shape = (len(t_idx), len(c_idx), cls.shape[1])
        cls_cost = F.binary_cross_entropy(y[None].expand(shape), one_hot[:, None].expand(shape), reduction="none")
        cost = cls_cost.sum(-1) - 3 * torch.log(iou + 1e-8)
        match = torch.zeros_like(cost, dtype=torch.bool)
        for r in range(len(t_idx)):
            k = max(1, int(iou[r].topk(min(topq, len(c_idx))).values.sum()))
            match[r, cost[r].argsort()[:k]] = True
        for c in range(len(c_idx)):
            if match[:, c].sum() > 1:
                match[:, c] = False
                match[cost[:, c].argmin(), c] = True
        for r, c in match.nonzero().tolist():
            out[(int(cands.level[c_idx[c]]), int(cands.flat[c_idx[c]]))] = int(t_idx[r])
    return out


@pytest.mark.parametrize("seed,per_image,topq", [(5, 6, 10), (6, 25, 10), (7, 12, 20)])
def test_ota_equals_plain_reference(seed, per_image, topq):
    targets, cands, boxes, preds, cls, obj = _random_problem(seed, 3, per_image)
    img, tcls = targets[:, 0].long(), targets[:, 1].long()
    got = ota_assign(cands, boxes, tcls, img, preds, cls, obj, 3, topq, max_cells=4000)
    assert dict(zip(zip(got.level.tolist(), got.flat.tolist(), strict=False), got.target.tolist(), strict=False)) == reference_ota(
        cands, boxes, tcls, img, preds, cls, obj, topq
    )


def test_ota_no_targets_or_candidates():
    targets, cands, boxes, preds, cls, obj = _random_problem(4, 2, 0)
    got = ota_assign(cands, boxes, targets[:, 1].long(), targets[:, 0].long(), preds, cls, obj, 2)
    assert len(got.flat) == 0


def test_chunks_cover_the_block_within_the_bound():
    from models.assign import _chunks

    for batch, rows, cols, cap in [(16, 300, 5000, 1 << 21), (16, 10, 300, 1 << 21), (2, 1000, 50000, 1 << 20)]:
        covered = set()
        for img, row in _chunks(batch, rows, cols, cap):
            images, targets = range(batch)[img], range(rows)[row]
            assert len(images) * len(targets) * cols <= max(cap, cols)
            covered |= {(i, r) for i in images for r in targets}
        assert covered == {(i, r) for i in range(batch) for r in range(rows)}
