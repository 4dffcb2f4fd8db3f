"""ELAN family blocks (Wang, Liao and Yeh, gradient path analysis; docs/gradpath.md): ELAN / ELAN-H, E-ELAN and the MP transition.

Each block is ONE config row that replaces a chain of rows in the official unrolled YOLOv7
configs. Submodules are registered in the order of those rows, and ``unrolled_rows()`` names
the submodule behind each official row, so weights map one to one (see ``models.yolo.unrolled_key_map``).
"""

from __future__ import annotations

import torch
from torch import nn

from models.blocks import ActSpec, Block, Conv, RowContext

AGGREGATE = ("modules", "all")


class ELAN(Block):
    """Efficient layer aggregation block.

    short = 1x1(x), main = 1x1(x) (``c_branch`` channels each); ``k`` computational modules of
    ``m`` stacked 3x3 convs (``c_block`` channels) chained from ``main``; the outputs are
    concatenated in the official order [X_k, ..., X_1, main, short] and, when ``c2`` is given,
    fused by a 1x1 transition to ``c2`` channels.

    ``aggregate="modules"`` concatenates each module's output (YOLOv7 backbone ELAN: k=2, m=2;
    head ELAN-H: k=4, m=1); ``"all"`` concatenates every 3x3 conv's output.
    Input [B, c1, H, W] -> [B, c2 or 2*c_branch + n_agg*c_block, H, W].
    """

    def __init__(self, c1: int, c2: int | None, c_branch: int, c_block: int, k: int = 2, m: int = 2,
                 aggregate: str = "modules", act: ActSpec = True) -> None:
        super().__init__()
        if k < 1 or m < 1:
            raise ValueError(f"ELAN needs k >= 1 modules of m >= 1 convs, got k={k}, m={m}")
        if aggregate not in AGGREGATE:
            raise ValueError(f"ELAN aggregate must be one of {AGGREGATE}, got {aggregate!r}")
        self.short = Conv(c1, c_branch, 1, 1, act=act)
        self.main = Conv(c1, c_branch, 1, 1, act=act)
        self.blocks = nn.ModuleList(
            nn.Sequential(*(Conv(c_branch if i == 0 and j == 0 else c_block, c_block, 3, 1, act=act)
                            for j in range(m)))
            for i in range(k)
        )
        self.aggregate = aggregate
        n_agg = k if aggregate == "modules" else k * m
        c_cat = 2 * c_branch + n_agg * c_block
        self.transition = Conv(c_cat, c2, 1, 1, act=act) if c2 else None
        self.out_channels = c2 if c2 else c_cat

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int | None, c_branch: int, c_block: int, k: int = 2,
                  m: int = 2, aggregate: str = "modules", act: ActSpec = None) -> ELAN:
        return cls(ctx.c1, ctx.width(c2) if c2 else None, ctx.width(c_branch), ctx.width(c_block), k, m,
                   aggregate, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.short(x)]
        y = self.main(x)
        outs.append(y)
        for module in self.blocks:
            if self.aggregate == "modules":
                y = module(y)
                outs.append(y)
            else:
                for conv in module:
                    y = conv(y)
                    outs.append(y)
        y = torch.cat(outs[::-1], 1)
        return self.transition(y) if self.transition is not None else y

    def unrolled_rows(self) -> list[str | None]:
        rows: list[str | None] = ["short", "main"]
        rows += [f"blocks.{i}.{j}" for i, module in enumerate(self.blocks) for j in range(len(module))]
        rows.append(None)  # the Concat row
        if self.transition is not None:
            rows.append("transition")
        return rows


class EELAN(Block):
    """Extended ELAN (YOLOv7-E6E): expand, shuffle, merge.

    Expand: ``groups`` ELAN computations on the same input (a cardinality-``groups`` group conv
    over the duplicated input); shuffle: each group's own concatenation; merge: the groups'
    transition outputs are summed. The official E6E config writes this as two unrolled ELAN
    chains joined by a Shortcut row. Input [B, c1, H, W] -> [B, c2, H, W].
    """

    def __init__(self, c1: int, c2: int, c_branch: int, c_block: int, k: int = 2, m: int = 2,
                 groups: int = 2, aggregate: str = "modules", act: ActSpec = True) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"E-ELAN needs groups >= 1, got {groups}")
        self.branches = nn.ModuleList(
            ELAN(c1, c2, c_branch, c_block, k, m, aggregate, act) for _ in range(groups)
        )
        self.out_channels = c2

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, c_branch: int, c_block: int, k: int = 2, m: int = 2,
                  groups: int = 2, aggregate: str = "modules", act: ActSpec = None) -> EELAN:
        return cls(ctx.c1, ctx.width(c2), ctx.width(c_branch), ctx.width(c_block), k, m, groups,
                   aggregate, ctx.act if act is None else act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out

    def unrolled_rows(self) -> list[str | None]:
        rows: list[str | None] = []
        for g, branch in enumerate(self.branches):
            rows += [None if r is None else f"branches.{g}.{r}" for r in branch.unrolled_rows()]
        return rows + [None]  # the Shortcut row


class MPConv(Block):
    """YOLOv7's MP transition: concat[3x3/2 conv(1x1 conv(x)), 1x1 conv(maxpool(x)), *extra].

    ``c2`` is the channels of the two downsampled branches together (c2/2 each); further inputs
    (the ``from`` list after the first) are appended unchanged, as the head's PAN joins do.
    Input x [B, c1, H, W] (+ extra [B, ci, H/2, W/2]) -> [B, c2 + sum(ci), H/2, W/2].
    """

    def __init__(self, c1: int, c2: int, extra: tuple[int, ...] = (), act: ActSpec = True) -> None:
        super().__init__()
        self.mp = nn.MaxPool2d(kernel_size=2, stride=2)
        self.cv1 = Conv(c1, c2 // 2, 1, 1, act=act)
        self.cv2 = Conv(c1, c2 // 2, 1, 1, act=act)
        self.cv3 = Conv(c2 // 2, c2 // 2, 3, 2, act=act)
        self.out_channels = c2 // 2 * 2 + sum(extra)

    @classmethod
    def from_yaml(cls, ctx: RowContext, c2: int, act: ActSpec = None) -> MPConv:
        return cls(ctx.c1, ctx.width(c2), tuple(ctx.ch[1:]), ctx.act if act is None else act)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        x, extra = (x[0], x[1:]) if isinstance(x, list) else (x, [])
        return torch.cat([self.cv3(self.cv2(x)), self.cv1(self.mp(x)), *extra], 1)

    def unrolled_rows(self) -> list[str | None]:
        return [None, "cv1", "cv2", "cv3", None]  # MP, Conv, Conv, Conv, Concat
