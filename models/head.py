"""The detection head: one class for YOLOv7's Detect, IDetect (implicit knowledge) and
IAuxDetect (implicit knowledge + auxiliary heads of the P6 models). The decode is written once.

Raw output per level: [B, na, H, W, 5 + nc] = (tx, ty, tw, th, obj, cls...) logits.
Decoded (YOLOv7): xy = (2 sigmoid(t_xy) - 0.5 + grid) * stride, wh = (2 sigmoid(t_wh))^2 * anchor,
obj and class scores after sigmoid; boxes are (cx, cy, w, h) in input pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.blocks import Block, RowContext
from models.reparam import ImplicitA, ImplicitM


class Detect(Block):
    """Anchor-based detection head over ``nl`` levels.

    ``anchors``: per level a flat list (w0, h0, w1, h1, ...) in input pixels; ``ch``: input
    channels, ``nl`` lead inputs then (with ``aux``) ``nl`` auxiliary inputs. ``implicit``
    wraps each lead conv as ImplicitM * conv(x + ImplicitA). Buffers: ``anchors`` [nl, na, 2]
    (pixels, stride order) and ``stride`` [nl], filled in by the model at build time.
    """

    def __init__(self, nc: int, anchors: list[list[float]], ch: list[int], implicit: bool = False,
                 aux: bool = False) -> None:
        super().__init__()
        nl = len(anchors)
        if nl == 0 or any(len(a) != len(anchors[0]) or len(a) % 2 for a in anchors):
            raise ValueError(f"anchors must be nl lists of the same even length, got {anchors}")
        if len(ch) != nl * (2 if aux else 1):
            raise ValueError(f"head has {len(ch)} inputs but {nl} anchor levels (aux={aux})")
        self.nc, self.nl, self.na, self.no = nc, nl, len(anchors[0]) // 2, nc + 5
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(nl, -1, 2))
        # mean anchor area per level, kept as numbers so the build also works on the meta device
        self.anchor_areas = [sum(a[j] * a[j + 1] for j in range(0, len(a), 2)) / self.na for a in anchors]
        self.register_buffer("stride", torch.zeros(nl))
        out = self.na * self.no
        self.m = nn.ModuleList(nn.Conv2d(c, out, 1) for c in ch[:nl])
        self.m2 = nn.ModuleList(nn.Conv2d(c, out, 1) for c in ch[nl:]) if aux else None
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch[:nl]) if implicit else None
        self.im = nn.ModuleList(ImplicitM(out) for _ in ch[:nl]) if implicit else None
        self.out_channels = out

    @classmethod
    def from_yaml(cls, ctx: RowContext, nc: int, anchors: list[list[float]], implicit: bool = False,
                  aux: bool = False) -> Detect:
        if not isinstance(anchors, list) or not all(isinstance(a, list) for a in anchors):
            raise ValueError(f"anchors must be a list of per-level lists, got {anchors!r}")
        return cls(nc, anchors, ctx.ch, implicit, aux)

    @property
    def aux(self) -> bool:
        """Whether the auxiliary heads exist (training of the P6 models; dropped by fuse())."""
        return self.m2 is not None

    def _level(self, x: torch.Tensor, conv: nn.Conv2d, i: int, implicit: bool) -> torch.Tensor:
        """[B, C, H, W] -> raw [B, na, H, W, no]."""
        if implicit and self.ia is not None:
            x = self.im[i](conv(self.ia[i](x)))
        else:
            x = conv(x)
        b, _, h, w = x.shape
        return x.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Train: list of raw [B, na, H_l, W_l, no] (lead levels, then aux levels when present).
        Eval: (decoded [B, N, no], lead raw list)."""
        raw = [self._level(xs[i], self.m[i], i, True) for i in range(self.nl)]
        if self.training:
            if self.m2 is not None:
                raw += [self._level(xs[self.nl + i], self.m2[i], i, False) for i in range(self.nl)]
            return raw
        return torch.cat([self.decode(r, i) for i, r in enumerate(raw)], 1), raw

    def decode(self, raw: torch.Tensor, level: int) -> torch.Tensor:
        """Raw [B, na, H, W, no] of ``level`` -> [B, na*H*W, no]: (cx, cy, w, h) pixels, obj, cls probs."""
        _, na, h, w, _ = raw.shape
        ys, xs = torch.meshgrid(torch.arange(h, device=raw.device), torch.arange(w, device=raw.device),
                                indexing="ij")
        grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2).to(raw.dtype)
        y = raw.sigmoid()
        xy = (y[..., :2] * 2 - 0.5 + grid) * self.stride[level].to(raw.dtype)
        wh = (y[..., 2:4] * 2) ** 2 * self.anchors[level].view(1, na, 1, 1, 2).to(raw.dtype)
        return torch.cat((xy, wh, y[..., 4:]), -1).view(raw.shape[0], -1, self.no)

    @torch.no_grad()
    def initialize_biases(self, class_freq: torch.Tensor | None = None) -> None:
        """YOLO bias init: objectness for ~8 objects per 640x640 image, class prior 0.6 / nc.

        Needs ``stride`` set. ``class_freq`` [nc] (optional) sets class priors from label counts.
        """
        convs = list(self.m) + (list(self.m2) if self.m2 is not None else [])
        for i, conv in enumerate(convs):
            s = self.stride[i % self.nl]  # a tensor op, not float(): the build also runs on meta
            b = conv.bias.view(self.na, -1)
            b[:, 4] += torch.log(8 / (640 / s) ** 2)
            if class_freq is None:
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99))
            else:
                b[:, 5:] += torch.log(class_freq / class_freq.sum())

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold ImplicitA/ImplicitM into the lead convs and drop the auxiliary convs."""
        if self.ia is not None:
            for conv, ia, im in zip(self.m, self.ia, self.im, strict=True):
                # conv(x + a) = conv(x) + W a; then * m scales each output channel.
                conv.bias += (conv.weight.flatten(1) @ ia.implicit.flatten()).view_as(conv.bias)
                scale = im.implicit.flatten()
                conv.bias *= scale
                conv.weight *= scale.view(-1, 1, 1, 1)
            self.ia = self.im = None
        self.m2 = None
