"""The training recipe when the command line leaves it open: hyp file, optimizer, close-mosaic.

``--hyp`` unset (``''``), ``--optimizer auto`` and ``--close-mosaic -1`` (the defaults) take the
recipe chosen here from the data set and the run's length; a flag given explicitly wins. The
choice is logged at start-up and stored resolved in opt.yaml and the checkpoints (so a resumed run
keeps it):

- the built-in shapes set: ``hyp.shapes.yaml``, SGD, no close-mosaic (tuned on it; unchanged);
- a short run (at most ``SHORT_RUN_ITERATIONS`` training iterations, ultralytics' bound for its
  own AdamW choice): ``hyp.small.yaml``, AdamW, mosaic off for the last ``SMALL_CLOSE_MOSAIC``
  epochs. SGD at lr 0.01 takes ~100 optimizer steps of a 300-iteration run (nominal batch 64, a
  third of them in warmup) and learns little in them; AdamW adapts per weight, and the file's
  nominal batch of 16 (``nbs``) makes every batch an optimizer step (docs/benchmarks.md, "Real
  photos: raccoon", for the measurements);
- a short run fine-tuning from ``--weights``: the short-run recipe with ``FINETUNE_OVERRIDES``
  (half its learning rate, one warmup epoch): the transferred weights are already useful, so the
  first steps should not move them as far as fresh ones; YOLOv5's hyp.finetune.yaml ran at a third
  of its scratch lr0 with a 2-epoch warmup, ultralytics keeps its lr0; this sits between. Written
  as key=value overrides before the user's own (which win), so opt.yaml shows them;
- otherwise: ``hyp.shapes.yaml`` with SGD, the default before recipes were chosen.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from data import DataConfig
from data.config import DATA_DIR
from data.scan import count_images
from engine.train.options import AUTO_CLOSE_MOSAIC, AUTO_OPTIMIZER, TrainOptions

LOG = logging.getLogger(__name__)
SHORT_RUN_ITERATIONS = 10_000
SMALL_CLOSE_MOSAIC = 10
SHAPES_YAML = DATA_DIR / "shapes.yaml"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a run trains with when the flags leave it open, and why (for the start-up line)."""

    hyp: str
    optimizer: str
    close_mosaic: int
    why: str
    overrides: tuple[str, ...] = ()  # key=value applied to the hyp file (before the user's)


SHAPES = Recipe("cfg/hyp/hyp.shapes.yaml", "SGD", 0, "the built-in shapes set")
SMALL = Recipe("cfg/hyp/hyp.small.yaml", "AdamW", SMALL_CLOSE_MOSAIC, "a short run")
LONG = Recipe("cfg/hyp/hyp.shapes.yaml", "SGD", 0, "a long run")
FINETUNE_OVERRIDES = ("lr0=0.001", "warmup_epochs=1.0")
FINETUNE = dataclasses.replace(SMALL, why="a short fine-tuning run from --weights", overrides=FINETUNE_OVERRIDES)


def choose_recipe(*, shapes: bool, train_images: int, epochs: int, batch_size: int, finetune: bool = False
                  ) -> Recipe:
    """The recipe of a run on ``train_images`` images for ``epochs`` epochs at ``batch_size``;
    ``finetune``: it starts from --weights."""
    if shapes:
        return SHAPES
    iterations = epochs * math.ceil(train_images / batch_size)
    recipe = (FINETUNE if finetune else SMALL) if iterations <= SHORT_RUN_ITERATIONS else LONG
    sign = ">" if recipe is LONG else "<="
    why = f"{recipe.why}: {train_images} images, {iterations} iterations {sign} {SHORT_RUN_ITERATIONS}"
    return dataclasses.replace(recipe, why=why)


def apply_recipe(opt: TrainOptions, data: DataConfig) -> TrainOptions:
    """``opt`` with the recipe filled in where its flags are at their 'choose for me' value; logs
    what was chosen. Options that are all explicit come back unchanged, without counting images."""
    if opt.hyp and opt.optimizer != AUTO_OPTIMIZER and opt.close_mosaic != AUTO_CLOSE_MOSAIC:
        return opt
    shapes = Path(data.source) == SHAPES_YAML
    images = 0 if shapes else count_images(data.split("train"))
    recipe = choose_recipe(shapes=shapes, train_images=images, epochs=opt.epochs, batch_size=opt.batch_size,
                           finetune=bool(opt.weights))
    chosen = {"hyp": recipe.hyp, "optimizer": recipe.optimizer, "close_mosaic": recipe.close_mosaic}
    auto = {"hyp": not opt.hyp, "optimizer": opt.optimizer == AUTO_OPTIMIZER,
            "close_mosaic": opt.close_mosaic == AUTO_CLOSE_MOSAIC}
    opt = dataclasses.replace(opt, **{k: v for k, v in chosen.items() if auto[k]})
    if auto["hyp"] and recipe.overrides:  # the user's own key=value come after, so they win
        opt = dataclasses.replace(opt, overrides=[*recipe.overrides, *opt.overrides])
    with_overrides = f" with {' '.join(recipe.overrides)}" if auto["hyp"] and recipe.overrides else ""
    LOG.info("recipe: %s%s, %s, close-mosaic %d (%s; %s from the flags)", Path(opt.hyp).name, with_overrides,
             opt.optimizer, opt.close_mosaic, recipe.why, ", ".join(k for k, a in auto.items() if not a) or "nothing")
    return opt
