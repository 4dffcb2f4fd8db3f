"""The YAML-built detector (``Model``): forward, ``fuse()``, ``info()``, and the key map between
our compact configs and the official unrolled ones. Contract in docs/design.md.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.blocks import Block
from models.head import Detect
from models.parse import check_sections, load_model_config, parse_model, row_location
from utils.config import ConfigError


class Model(nn.Module):
    """Detector built from a model config (path, name in cfg/, or dict).

    Input: float [B, ch, H, W] in 0..1, H and W multiples of ``stride.max()``.
    Train mode: list of raw [B, na, H_l, W_l, 5 + nc] (lead levels, then auxiliary ones).
    Eval mode: (decoded [B, N, 5 + nc] with (cx, cy, w, h) in input pixels, lead raw list).
    ``yaml`` is the config dict (with the chosen scale), suitable for checkpoints.
    """

    def __init__(self, cfg: str | Path | dict, ch: int = 3, nc: int | None = None,
                 scale: str | None = None) -> None:
        super().__init__()
        config = load_model_config(cfg, scale)
        if nc is not None:
            config.data["nc"] = nc
            check_sections(config.data, config.source)
        self.yaml = config.data
        self._config = config
        parsed = parse_model(config, ch)
        if not isinstance(parsed.layers[-1], Detect):
            raise ConfigError(f"{row_location(config, len(parsed.layers) - 1)}: the last row must be a "
                              "detection head (Detect, IDetect or IAuxDetect)")
        self.model = parsed.layers
        self.froms = parsed.froms
        self.save = parsed.save
        self.dropped: set[int] = set()
        self.names = [str(i) for i in range(self.head.nc)]
        self._init_norms()
        self._init_stride(ch)
        self.head.initialize_biases()

    @property
    def head(self) -> Detect:
        return self.model[-1]

    @property
    def stride(self) -> torch.Tensor:
        """Float tensor [nl]: stride of each lead level, e.g. [8, 16, 32]."""
        return self.head.stride

    @property
    def nc(self) -> int:
        return self.head.nc

    def _init_norms(self) -> None:
        # YOLOv7's BatchNorm settings (eps 1e-3, momentum 0.03) for all norms of the model.
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03

    @torch.no_grad()
    def _init_stride(self, ch: int, size: int = 128) -> None:
        """Strides from a dry forward (eval mode: running statistics stay untouched); anchors
        reordered to match them."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            feats = self._body(torch.zeros(1, ch, size, size, device=device), check=True)
        finally:
            self.train(was_training)
        head = self.head
        strides = [size / feats[i].shape[-2] for i in range(len(feats))]
        if head.aux and strides[head.nl:] != strides[:head.nl]:
            raise ConfigError(f"{row_location(self._config, len(self.model) - 1)}: auxiliary inputs have "
                              f"strides {strides[head.nl:]}, lead inputs {strides[:head.nl]}")
        head.stride.copy_(torch.tensor(strides[:head.nl]))
        area = head.anchor_areas
        if (area[-1] > area[0]) != (strides[head.nl - 1] > strides[0]):
            head.anchors.copy_(head.anchors.flip(0))
            head.anchor_areas = area[::-1]

    def _inputs(self, f: int | list[int], x: torch.Tensor, outs: list) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(f, list):
            return [x if j == -1 else outs[j] for j in f]
        return x if f == -1 else outs[f]

    def _body(self, x: torch.Tensor, check: bool = False) -> list[torch.Tensor]:
        """Run every layer but the head; returns the head's inputs. ``check`` names the failing row."""
        outs: list[torch.Tensor | None] = []
        for i, (layer, f) in enumerate(zip(self.model[:-1], self.froms[:-1], strict=True)):
            if i in self.dropped:
                outs.append(None)
                continue
            inputs = self._inputs(f, x, outs)
            if check:
                try:
                    x = layer(inputs)
                except RuntimeError as e:
                    raise ConfigError(f"{row_location(self._config, i)}: {e}") from None
            else:
                x = layer(inputs)
            outs.append(x if i in self.save else None)
        f = self.froms[-1]
        return self._inputs(f if isinstance(f, list) else [f], x, outs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        return self.head(self._body(x))

    @torch.no_grad()
    def fuse(self) -> Model:
        """Deployment form: BN folded into convs, RepConv merged, implicit layers folded into the
        head convs, auxiliary heads and the layers only they use dropped. Returns self."""
        head = self.head
        if head.aux:
            lead = self.froms[-1][: head.nl]
            last = len(self.model) - 2  # the row a head input of -1 means
            self.dropped = set(range(last + 1)) - self._needed([last if j == -1 else j for j in lead])
            for i in self.dropped:
                self.model[i] = nn.Identity()
            self.froms[-1] = lead
        # Every Block's fuse() (a no-op unless the block overrides it), children before parents
        # so that a block can build on its already-fused sub-blocks. Listed first: fuse() may
        # replace submodules.
        for m in [m for m in _post_order(self) if isinstance(m, Block)]:
            m.fuse()
        return self

    def _needed(self, wanted: list[int]) -> set[int]:
        """Rows whose outputs the rows ``wanted`` (absolute indices) depend on, themselves included."""
        needed: set[int] = set()
        stack = list(wanted)
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            f = self.froms[i]
            for j in f if isinstance(f, list) else [f]:
                if i > 0:
                    stack.append(i - 1 if j == -1 else j)
        return needed

    def info(self, img_size: int | tuple[int, int] = 640) -> dict:
        """Summary: ``layers`` (config rows), ``conv_layers`` (Conv2d modules), ``params``,
        ``gflops`` (2 x MACs at ``img_size``, counted by torch.utils.flop_counter)."""
        return {
            "layers": len(self.model) - len(self.dropped),
            "conv_layers": sum(isinstance(m, nn.Conv2d) for m in self.modules()),
            "params": sum(p.numel() for p in self.parameters()),
            "gflops": count_flops(self, img_size) / 1e9,
        }


def count_flops(model: nn.Module, img_size: int | tuple[int, int] = 640, ch: int = 3) -> int:
    """FLOPs (2 x MACs, FlopCounterMode's convention) of one eval-mode forward of a
    [1, ch, H, W] image. Runs on a meta-device copy, so no real computation happens."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, ch, h, w, device="meta"))
    return counter.get_total_flops()


def _post_order(module: nn.Module) -> list[nn.Module]:
    """The submodules of ``module`` (itself excluded), each after all of its own submodules."""
    out: list[nn.Module] = []
    for child in module.children():
        out += _post_order(child)
        out.append(child)
    return list({id(m): m for m in out}.values())  # a module shared by two parents once


def unrolled_key_map(model: Model) -> dict[str, str]:
    """State-dict key of ``model`` -> key of the same tensor in the model built from the
    official unrolled config. Each block lists the official rows it stands for
    (``Block.unrolled_rows``): row r of block ``model.i`` with prefix p maps
    ``model.i.p.rest`` to ``model.{first_row + r}.rest``."""
    mapping: dict[str, str] = {}
    row = 0
    for i, layer in enumerate(model.model):
        rows = layer.unrolled_rows() if hasattr(layer, "unrolled_rows") else [""]
        keys = [k for k in layer.state_dict()]
        for key in keys:
            for r, prefix in enumerate(rows):
                if prefix == "" or (prefix is not None and key.startswith(prefix + ".")):
                    rest = key if prefix == "" else key[len(prefix) + 1:]
                    mapping[f"model.{i}.{key}"] = f"model.{row + r}.{rest}"
                    break
            else:
                raise KeyError(f"layer {i}: no official row holds {key!r}")
        row += len(rows)
    return mapping
