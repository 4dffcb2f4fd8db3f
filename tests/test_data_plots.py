"""utils/plots.py: boxes land where the targets say, grids and label statistics are written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.plots import class_colour, draw_boxes, plot_images, plot_labels

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "yolov7"


def test_draw_boxes_draws_the_class_colour_on_the_box_edge():
    img = np.zeros((100, 100, 3), np.uint8)
    out = draw_boxes(img, np.array([[20, 30, 70, 80]]), [2], line_width=1)
    assert (img == 0).all()  # the input is not modified
    assert tuple(out[55, 20]) == class_colour(2) and tuple(out[80, 45]) == class_colour(2)
    assert (out[55, 45] == 0).all()  # inside stays untouched


def test_plot_images_grid_and_normalised_targets(tmp_path):
    images = torch.zeros(3, 3, 64, 96, dtype=torch.uint8)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.5, 0.5], [2, 0, 0.25, 0.25, 0.25, 0.25]])
    grid = plot_images(images, targets, paths=["a.jpg", "b.jpg", "c.jpg"], names=["x", "y"],
                       fname=tmp_path / "batch.jpg")
    assert grid.shape == (2 * 64, 2 * 96, 3)  # 3 images -> 2 x 2 tiles
    assert cv2.imread(str(tmp_path / "batch.jpg")).shape == grid.shape
    assert tuple(grid[32, 24]) == class_colour(1)  # left edge of image 0's box: x = 0.25 * 96
    bottom = grid[64:128, 0:96]  # image 2 is the first tile of the second row
    assert tuple(bottom[20, 12]) == class_colour(0)  # left edge x = 0.125 * 96 = 12


def test_plot_images_pixel_predictions_with_scores_and_float_images():
    images = torch.zeros(1, 3, 64, 64)
    preds = np.array([[0, 3, 32, 32, 20, 20, 0.9], [0, 4, 10, 10, 8, 8, 0.1]])  # pixels, 7th column = score
    grid = plot_images(images, preds)
    assert tuple(grid[32, 22]) == class_colour(3)
    assert not (grid[4:17, 6] == class_colour(4)).all(-1).any()  # below conf_thres: not drawn
    assert plot_images(images, torch.zeros(0, 6)).shape == (64, 64, 3)


def test_plot_labels_writes_a_picture(tmp_path):
    labels = [np.array([[0, 0.5, 0.5, 0.2, 0.3], [1, 0.1, 0.9, 0.1, 0.1]], np.float32), np.zeros((0, 5), np.float32)]
    out = plot_labels(labels, ["a", "b"], tmp_path / "labels.jpg")
    assert out.is_file() and cv2.imread(str(out)).shape[0] > 500


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference YOLOv7 files not present")
def test_coco_yaml_names_match_yolov7():
    import yaml

    from data import load_data_config

    reference = yaml.safe_load((REFERENCE / "data" / "coco.yaml").read_text())["names"]
    assert load_data_config("coco").names == reference
