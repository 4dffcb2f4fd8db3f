"""Fine-tuning from a checkpoint of another class count (--weights): what is transferred, what is
re-initialised, the fine-tuning recipe, and one real training step."""

from __future__ import annotations

import logging

import pytest
import torch
from official_fixtures import randomize
from train_helpers import TINY_MODEL, tiny_data, tiny_options

from data import load_data_config
from engine.train.loop import fit
from engine.train.recipe import FINETUNE_OVERRIDES, apply_recipe
from engine.train.setup import setup
from models.checkpoint_io import transfer_weights
from models.yolo import Model
from utils.checkpoint import CHECKPOINT_VERSION, save_checkpoint
from utils.distributed import DistInfo

HEAD = f"model.{len(TINY_MODEL['backbone'])}."  # the head row of the tiny model


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 3-class tiny model (every tensor random and distinct) and its checkpoint file."""
    root = tmp_path_factory.mktemp("finetune")
    model = randomize(Model(TINY_MODEL, nc=3))
    path = save_checkpoint({"model": model.state_dict(), "model_cfg": model.yaml, "names": ["a", "b", "c"], "nc": 3,
                            "epoch": -1, "version": CHECKPOINT_VERSION}, root / "three.pt")
    return {"root": root, "model": model, "path": path, "data": tiny_data(root, n_train=4, n_val=2)}


def test_head_keeps_box_and_objectness_rows_and_reinitialises_class_rows(source):
    theirs = source["model"].state_dict()
    target = Model(TINY_MODEL, nc=1)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    done = transfer_weights(target, theirs)
    mine = target.state_dict()
    class_dependent = [k for k in mine if mine[k].shape != theirs[k].shape]
    assert sorted(done.rows_only) == sorted(class_dependent) and len(class_dependent) == 6  # 2 levels x (w, b, im)
    assert done.fresh == [] and len(done.copied) == done.total - 6
    assert all(torch.equal(mine[k], theirs[k]) for k in done.copied)
    na = target.head.na
    for key in class_dependent:  # [na * (5 + nc), ...] along one dimension: the conv's 0, ImplicitM's 1
        dim = 1 if key.startswith(f"{HEAD}im.") else 0
        new, old, init = (t.movedim(dim, 0).unflatten(0, (na, -1)) for t in (mine[key], theirs[key], fresh[key]))
        assert torch.equal(new[:, :5], old[:, :5]), key  # x, y, w, h, obj of every anchor
        assert torch.equal(new[:, 5:], init[:, 5:]), key  # the one class: as initialised
    line = done.summary("three.pt")
    assert line.startswith(f"transferred {done.total - 6}/{done.total} tensors from three.pt; re-initialised for the "
                           f"new class count, box and objectness rows transferred: {HEAD}m.0.weight")


def test_other_anchors_or_other_layers_are_left_as_initialised():
    theirs = randomize(Model(dict(TINY_MODEL, anchors=[[10, 13, 16, 30], [30, 61, 62, 45]]), nc=3)).state_dict()
    target = Model(TINY_MODEL, nc=1)
    done = transfer_weights(target, theirs)
    assert done.rows_only == [] and f"{HEAD}m.0.weight" in done.fresh and f"{HEAD}anchors" in done.fresh
    assert "kept as initialised" in done.summary("x.pt")


def test_the_recipe_fine_tunes_when_weights_are_given(source, caplog):
    opt = tiny_options(source["root"], weights=str(source["path"]), hyp="", optimizer="auto", close_mosaic=-1,
                       epochs=30)
    with caplog.at_level(logging.INFO):
        tuned = apply_recipe(opt, _data_config(source))
    assert (tuned.hyp, tuned.optimizer, tuned.close_mosaic) == ("cfg/hyp/hyp.small.yaml", "AdamW", 10)
    assert tuned.overrides == [*FINETUNE_OVERRIDES, *opt.overrides]  # the user's come last and win
    assert ("recipe: hyp.small.yaml with lr0=0.001 warmup_epochs=1.0, AdamW, close-mosaic 10 (a short fine-tuning "
            "run from --weights: 4 images, 30 iterations <= 10000") in caplog.text
    scratch = apply_recipe(tiny_options(source["root"], hyp="", optimizer="auto", close_mosaic=-1, epochs=30),
                           _data_config(source))
    assert scratch.overrides == opt.overrides  # without --weights: no fine-tuning values


def _data_config(source):
    return load_data_config(str(source["data"]))


def test_three_class_checkpoint_fine_tuned_on_one_class_trains_a_step(source, caplog):
    opt = tiny_options(source["root"], weights=str(source["path"]), cfg="", single_cls=True, epochs=1, batch_size=4,
                       hyp="", optimizer="auto", close_mosaic=-1, name="one_step")
    with caplog.at_level(logging.INFO):
        run = setup(opt, DistInfo(), torch.device("cpu"))
    theirs = source["model"].state_dict()
    mine = run.model.state_dict()
    body = [k for k in mine if not k.startswith(HEAD)]
    assert body and all(torch.equal(mine[k], theirs[k]) for k in body)  # before the step: the source's
    assert run.nc == 1 and run.hyp.lr0 == 0.001 and run.hyp.warmup_epochs == 0  # tiny_options' warmup_epochs=0 wins
    total = len(mine)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("transferred ")]
    assert len(said) == 1 and said[0].startswith(f"transferred {total - 6}/{total} tensors from {source['path']}; "
                                                 "re-initialised for the new class count")
    fit(run)
    after = run.model.state_dict()
    assert any(not torch.equal(after[k], theirs[k]) for k in body if after[k].is_floating_point())  # it stepped
