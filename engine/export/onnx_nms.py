"""NMS inside an ONNX graph: a module that turns decoded predictions into NMS inputs, and the
ONNX nodes (the standard NonMaxSuppression op, so onnxruntime runs it) appended after it.

The result matches utils.nms.non_max_suppression with multi_label=False: each box competes only
in its best class (score = obj * best class probability; obj alone for one-class models),
per-class IoU suppression, boxes kept when score > conf_thres. The graph output ``detections`` is float [K, 7] =
(batch index, x1, y1, x2, y2, score, class), boxes in input pixels; ``conf_thres`` and
``iou_thres`` are graph inputs with defaults, so a caller may override them per run.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from utils.boxes import cxcywh_to_xyxy


class NmsInputs(nn.Module):
    """Wraps an eval-mode model: [B, 3, H, W] -> (boxes [B, N, 4] xyxy pixels,
    scores [B, C, N] (C = nc, only the best class non-zero; C = 1 when class-agnostic),
    classes [B, N] float best-class index)."""

    def __init__(self, model: nn.Module, agnostic: bool = False) -> None:
        super().__init__()
        self.model = model
        self.agnostic = agnostic

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pred = self.model(x)[0]
        boxes = cxcywh_to_xyxy(pred[..., :4])
        if pred.shape[-1] == 6:  # one class: its class output is untrained, the score is obj (as utils.nms)
            score, cls = pred[..., 4], torch.zeros_like(pred[..., 4], dtype=torch.long)
        else:
            score, cls = (pred[..., 5:] * pred[..., 4:5]).max(-1)
        if self.agnostic:
            scores = score.unsqueeze(1)
        else:
            # Zero everywhere but the best class, so per-class NMS is single-label NMS.
            scores = torch.zeros_like(pred[..., 5:]).scatter(-1, cls.unsqueeze(-1), score.unsqueeze(-1))
            scores = scores.transpose(1, 2)
        return boxes, scores, cls.to(pred.dtype)


def append_nms(model: onnx.ModelProto, conf_thres: float, iou_thres: float, max_det: int) -> onnx.ModelProto:
    """Replace the (boxes, scores, classes) outputs of ``model`` with ``detections`` [K, 7].

    ``max_det`` bounds the boxes kept per image and class (ONNX's max_output_boxes_per_class).
    """
    graph = model.graph
    boxes, scores, classes = (o.name for o in graph.output)
    defaults = {
        "conf_thres": np.array([conf_thres], np.float32),
        "iou_thres": np.array([iou_thres], np.float32),
    }
    for name, value in defaults.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]))
    graph.initializer.extend([
        numpy_helper.from_array(np.array([max_det], np.int64), "nms_max_det"),
        numpy_helper.from_array(np.array([0, 2], np.int64), "nms_batch_box_cols"),
        numpy_helper.from_array(np.array([0], np.int64), "nms_col0"),
        numpy_helper.from_array(np.array([1], np.int64), "nms_axis1"),
    ])
    graph.node.extend([
        # selected [K, 3] = (batch, class, box) indices
        helper.make_node("NonMaxSuppression", [boxes, scores, "nms_max_det", "iou_thres", "conf_thres"],
                         ["nms_selected"], center_point_box=0),
        helper.make_node("Gather", ["nms_selected", "nms_batch_box_cols"], ["nms_batch_box"], axis=1),
        helper.make_node("GatherND", [boxes, "nms_batch_box"], ["nms_boxes"]),
        helper.make_node("GatherND", [scores, "nms_selected"], ["nms_scores_flat"]),
        helper.make_node("GatherND", [classes, "nms_batch_box"], ["nms_classes_flat"]),
        helper.make_node("Unsqueeze", ["nms_scores_flat", "nms_axis1"], ["nms_scores"]),
        helper.make_node("Unsqueeze", ["nms_classes_flat", "nms_axis1"], ["nms_classes"]),
        helper.make_node("Gather", ["nms_selected", "nms_col0"], ["nms_batch_index"], axis=1),
        helper.make_node("Cast", ["nms_batch_index"], ["nms_batch_float"], to=TensorProto.FLOAT),
        helper.make_node("Concat", ["nms_batch_float", "nms_boxes", "nms_scores", "nms_classes"],
                         ["detections"], axis=1),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["num_detections", 7]))
    onnx.checker.check_model(model)
    return model
