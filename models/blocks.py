"""Basic building blocks of the YOLOv7 / YOLOR-CSP detectors.

Every block that a model YAML can name derives from :class:`Block`: its classmethod
``from_yaml(ctx, *args, **kwargs)`` builds it from one config row, and the built module's
``out_channels`` tells the parser how many channels it produces, so adding a block never needs
a parser change. All feature maps are [B, C, H, W]. The re-parameterisable RepConv and
YOLOR's implicit layers are in models/reparam.py.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "SiLU": nn.SiLU,
    "LeakyReLU": nn.LeakyReLU,
    "ReLU": nn.ReLU,
    "Identity": nn.Identity,
    "Hardswish": nn.Hardswish,
    "Mish": nn.Mish,
    "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh,
    "GELU": nn.GELU,
}
_ACT_CALL = re.compile(r"^(?:nn\.)?(\w+)\s*(?:\((.*)\))?$")

ActSpec = bool | str | nn.Module | None


def make_act(spec: ActSpec) -> nn.Module:
    """Activation module from a config value.

    ``True`` gives SiLU (YOLOv7's default), ``False``/``None`` identity, a module is used as is,
    and a string such as ``"nn.LeakyReLU(0.1)"``, ``"LeakyReLU(0.1)"`` or ``"ReLU"`` is parsed
    (name from a fixed list, arguments as Python literals; never ``eval``).
    """
    if spec is True:
        return nn.SiLU()
    if spec is False or spec is None:
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        match = _ACT_CALL.match(spec.strip())
        if match is None or match.group(1) not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {spec!r} (known: {', '.join(_ACTIVATIONS)})")
        text = match.group(2) or ""
        try:
            args = ast.literal_eval(f"({text},)") if text.strip() else ()
        except (ValueError, SyntaxError):
            raise ValueError(f"activation {spec!r}: arguments must be literals") from None
        return _ACTIVATIONS[match.group(1)](*args)
    raise ValueError(f"activation must be true/false or a name like 'LeakyReLU(0.1)', got {spec!r}")


def autopad(k: int, p: int | None = None) -> int:
    """'Same' padding for an odd kernel ``k`` unless ``p`` is given."""
    return k // 2 if p is None else p


@dataclass(frozen=True)
class RowContext:
    """What a block needs to know to build itself from a config row.

    ``ch`` holds the channels of each input (one per ``from`` entry), ``n`` the repeat count
    after ``depth_multiple``, ``width`` scales a channel count by ``width_multiple`` (rounded to
    a multiple of 8), ``act`` the model's default activation, ``nc``/``anchors`` the config's.
    """

    ch: list[int]
    n: int = 1
    width: Callable[[int], int] = field(default=lambda c: c)
    act: ActSpec = True
    nc: int = 80
    anchors: list | None = None

    @property
    def c1(self) -> int:
        """Channels of the (first) input."""
        return self.ch[0]


class Block(nn.Module):
    """Base of every module a config row can name.

    Subclasses set ``self.out_channels`` and implement ``from_yaml``. ``takes_depth`` says
    whether the block uses the row's ``number`` itself (CSP stages); otherwise the parser
    repeats the block ``number`` times. ``unrolled_rows()`` lists, for each row of the
    equivalent official unrolled config, the submodule prefix holding that row's weights
    (``""``: the block itself; ``None``: a row without weights such as Concat).

    ``fuse()`` is the deployment hook: ``Model.fuse`` calls it on every Block of the model,
    innermost first (a block's sub-blocks are fused before the block itself), under
    ``torch.no_grad``; BatchNorm folds use the running (eval-mode) statistics. The default does nothing; a re-parameterisable block overrides it
    to rewrite itself into its inference form with the same outputs.
    """

    out_channels: int
    takes_depth = False

    @classmethod
    def from_yaml(cls, ctx: RowContext, *args, **kwargs) -> Block:
        raise NotImplementedError

    def unrolled_rows(self) -> list[str | None]:
        return [""]

    def fuse(self) -> None:
        """Rewrite into the inference form (same outputs); nothing to do by default."""


class Conv(Block):
    """Conv2d (no bias) + BatchNorm + activation: YOLOv7's CBS. Fused: Conv2d with bias."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: ActSpec = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2)
        self.act = make_act(act)
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                  g: int = 1, act: ActSpec = None) -> Conv:
        return cls(ctx.c1, ctx.width(c2), k, s, p, g, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (eval-mode statistics); the activation then
        runs in place (inference only)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()
        inplace_act(self.act)


def inplace_act(act: nn.Module) -> None:
    """Let a fused block's activation overwrite its convolution's own fresh output instead of
    allocating one more feature map per layer (~10% of yolov7-tiny's eager CPU time at 640).
    Only for the fused, inference form: no autograd runs through it."""
    if hasattr(act, "inplace"):
        act.inplace = True


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) [C] so that bn(x) == x * scale + shift in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias computing bn(conv(x)) (BN in eval mode)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True).to(conv.weight)
    scale, shift = bn_scale_shift(bn)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused


class Concat(Block):
    """Concatenate the inputs along ``dimension`` (channels)."""

    def __init__(self, channels: list[int], dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension
        self.out_channels = sum(channels)

    @classmethod
    def from_yaml(cls, ctx: RowContext, dimension: int = 1) -> Concat:
        return cls(ctx.ch, dimension)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)

    def unrolled_rows(self) -> list[str | None]:
        return [None]


class Shortcut(Block):
    """Sum of the inputs (E-ELAN merge, residual joins); all inputs have the same shape."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        if len(channels) < 2 or len(set(channels)) != 1:
            raise ValueError(f"Shortcut needs two or more inputs with equal channels, got {channels}")
        self.out_channels = channels[0]

    @classmethod
    def from_yaml(cls, ctx: RowContext, dimension: int = 0) -> Shortcut:
        # ``dimension`` is accepted for compatibility with the official configs; it is unused.
        return cls(ctx.ch)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        out = x[0]
        for y in x[1:]:
            out = out + y
        return out

    def unrolled_rows(self) -> list[str | None]:
        return [None]


class MP(Block):
    """Max pooling with kernel = stride = ``k`` (halves H and W for k=2)."""

    def __init__(self, channels: int, k: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)
        self.out_channels = channels

    @classmethod
    def from_yaml(cls, ctx: RowContext, k: int = 2) -> MP:
        return cls(ctx.c1, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)

    def unrolled_rows(self) -> list[str | None]:
        return [None]


class SP(MP):
    """Max pooling with stride ``s`` and 'same' padding (the SPP branches of yolov7-tiny).

    At stride 1 the k x k window runs as a k x 1 then a 1 x k pooling: the maximum over a
    rectangle is the maximum of its column maxima, and both pad with -inf, so the result is
    identical while each pixel costs 2k comparisons instead of k^2 (the 5 / 9 / 13 pools were a
    quarter of yolov7-tiny's CPU time at 640).
    """

    def __init__(self, channels: int, k: int = 3, s: int = 1) -> None:
        Block.__init__(self)
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)
        self.out_channels = channels

    @classmethod
    def from_yaml(cls, ctx: RowContext, k: int = 3, s: int = 1) -> SP:
        return cls(ctx.c1, k, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, p = self.m.kernel_size, self.m.padding
        if self.m.stride != 1 or not isinstance(k, int):
            return self.m(x)
        x = nn.functional.max_pool2d(x, (k, 1), 1, (p, 0))
        return nn.functional.max_pool2d(x, (1, k), 1, (0, p))


class ReOrg(Block):
    """Space-to-depth: [B, C, H, W] -> [B, 4C, H/2, W/2] (the P6 models' stem)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_channels = 4 * channels

    @classmethod
    def from_yaml(cls, ctx: RowContext) -> ReOrg:
        return cls(ctx.c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)

    def unrolled_rows(self) -> list[str | None]:
        return [None]


class Upsample(Block):
    """nn.Upsample as a config row: ``[size, scale_factor, mode]``."""

    def __init__(self, channels: int, size: int | None = None, scale_factor: float | None = 2.0,
                 mode: str = "nearest") -> None:
        super().__init__()
        self.m = nn.Upsample(size=size, scale_factor=scale_factor, mode=mode)
        self.out_channels = channels

    @classmethod
    def from_yaml(cls, ctx: RowContext, size: int | None = None, scale_factor: float | None = 2.0,
                  mode: str = "nearest") -> Upsample:
        return cls(ctx.c1, size, scale_factor, mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)

    def unrolled_rows(self) -> list[str | None]:
        return [None]


class DownC(Block):
    """Downsampling of the E6/D6/E6E models: concat[3x3/s conv(1x1 conv(x)), 1x1 conv(maxpool(x))],
    each branch c2/2 channels."""

    def __init__(self, c1: int, c2: int, k: int = 2, act: ActSpec = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c1, 1, 1, act=act)
        self.cv2 = Conv(c1, c2 // 2, 3, k, act=act)
        self.cv3 = Conv(c1, c2 // 2, 1, 1, act=act)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, n: int = 1, k: int = 2, act: ActSpec = None) -> DownC:
        # ``n`` is in the official signature but unused there too.
        return cls(ctx.c1, ctx.width(c2), k, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), 1)


class SPPCSPC(Block):
    """CSP spatial pyramid pooling: a 5/9/13 max-pool pyramid on one half, a 1x1 conv on the
    other, joined by a 1x1 transition. Attribute names as in the official code."""

    def __init__(self, c1: int, c2: int, e: float = 0.5, k: tuple[int, ...] = (5, 9, 13),
                 act: ActSpec = True) -> None:
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, 1, act=act)
        self.cv3 = Conv(c_, c_, 3, 1, act=act)
        self.cv4 = Conv(c_, c_, 1, 1, act=act)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.cv5 = Conv(4 * c_, c_, 1, 1, act=act)
        self.cv6 = Conv(c_, c_, 3, 1, act=act)
        self.cv7 = Conv(2 * c_, c2, 1, 1, act=act)
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, e: float = 0.5, act: ActSpec = None) -> SPPCSPC:
        return cls(ctx.c1, ctx.width(c2), e, act=ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), 1))
