"""A small real Model learns 4 synthetic images through YoloLoss with the training assignments
(OTA, and OTA with an auxiliary head).

If this fails the assignment or the loss terms are wrong; do not loosen it. (The plain
YOLOv5-rule loss, used for validation, shares every term; it learns these images too but its
loss falls only ~5x in 300 steps, as every candidate anchor, up to 4x off in size, must fit the box.)
"""

import pytest
import torch
from torchvision.ops import box_convert, box_iou

from models.loss import YoloLoss
from models.yolo import Model
from utils.config import Hyp
from utils.nms import non_max_suppression

SIZE = 128
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.9]])


def small_config(head: str) -> dict:
    """A ~0.2M-parameter ELAN detector with P3-P5 outputs (head ``Detect`` or ``IAuxDetect``)."""
    inputs = [3, 5, 7] * (2 if head == "IAuxDetect" else 1)
    return {
        "nc": 2,
        "activation": "LeakyReLU(0.1)",
        "anchors": ANCHORS,
        "backbone": [
            [-1, 1, "Conv", [16, 3, 2]],
            [-1, 1, "Conv", [32, 3, 2]],
            [-1, 1, "Conv", [32, 3, 2]],
            [-1, 1, "ELAN", [48, 16, 16, 2, 1]],  # 3: P3 (stride 8)
            [-1, 1, "Conv", [64, 3, 2]],
            [-1, 1, "ELAN", [64, 32, 32, 2, 1]],  # 5: P4
            [-1, 1, "Conv", [96, 3, 2]],
            [-1, 1, "ELAN", [96, 48, 48, 2, 1]],  # 7: P5
        ],
        "head": [[inputs, 1, head, ["nc", "anchors"]]],
    }


def scene(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[3, SIZE, SIZE] image with 3 flat rectangles on noise; labels [3, 5] (cls, cx, cy, w, h) normalised."""
    g = torch.Generator().manual_seed(seed)
    img = 0.5 + 0.05 * torch.randn(3, SIZE, SIZE, generator=g)
    labels = []
    for k in range(3):
        w, h = torch.randint(16, 60, (2,), generator=g).tolist()
        x0 = int(torch.randint(0, SIZE - w, (1,), generator=g))
        y0 = int(torch.randint(0, SIZE - h, (1,), generator=g))
        img[:, y0 : y0 + h, x0 : x0 + w] = COLOURS[k % 2].view(3, 1, 1)
        labels.append([k % 2, (x0 + w / 2) / SIZE, (y0 + h / 2) / SIZE, w / SIZE, h / SIZE])
    return img.clamp(0, 1), torch.tensor(labels)


@pytest.fixture
def one_thread():
    """Tiny tensors: on a shared CPU, intra-op threads cost more in waiting than they gain."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["Detect", "IAuxDetect"])
def test_small_model_learns_four_images(head, one_thread):
    torch.manual_seed(0)
    images, labels = zip(*(scene(s) for s in range(4)), strict=False)
    x = torch.stack(images)
    targets = torch.cat([torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(labels)])
    model = Model(small_config(head))
    loss_fn = YoloLoss(model.head, Hyp(), train_size=SIZE, assigner="ota")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(300):
        loss, _ = loss_fn(model(x), targets, (SIZE, SIZE))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < losses[0] / 10

    model.eval()
    with torch.no_grad():
        pred, _ = model(x)
    for i, (t, det) in enumerate(zip(labels, non_max_suppression(pred, conf_thres=0.3, iou_thres=0.5), strict=False)):
        boxes, cls = det[:, :4], det[:, 5].long()
        true = box_convert(t[:, 1:] * SIZE, "cxcywh", "xyxy")
        iou = box_iou(true, boxes) * (t[:, :1].long() == cls[None])  # same class only
        assert len(boxes) and (iou.max(1).values > 0.5).all(), f"image {i}: {iou}"
