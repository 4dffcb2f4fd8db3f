"""Gradient-path analysis of any model: ``python -m models.gradpath --cfg FILE``.

The network is read as a graph of *computational layers* (every call of an ``nn.Conv*`` or
``nn.Linear`` module) joined by *non-computational edges* (concat, add, multiplication by an
implicit vector, identity, pooling, upsampling, activation, BatchNorm, reshapes ...). The loss
sits at the model outputs (the training-mode head outputs). Gradients flow from the loss back
along the reversed edges.

The graph is read from the autograd graph of one training-mode forward pass
(models/gradpath_trace.py, ``trace_graph``); this module computes the statistics below on it
(``analyse``, ``summarise``) and is the command line. A ``detach()`` hides its edge from the
analysis entirely; use ``models.paper_blocks.stop_gradient(x)`` instead to cut the gradient but
keep the forward edge (for depth and aggregation counts).

Definitions (``L`` is the loss, a gradient path of layer ``v`` is a sequence of computational
layers ``L -> s_1 -> ... -> s_j -> v`` where each layer's output reaches the next one's input
through non-computational edges only; its *length* counts the layers on it including ``v``
itself, so a head convolution has length 1 and a chain of ``n`` layers gives ``n, ..., 1``):

- ``depth``: the most computational layers on a path from the network input to ``v``,
  counting ``v`` (first layer: 1). The network depth is the largest depth among layers that
  feed the loss.
- ``shortest`` / ``longest``: the shortest / longest gradient path length of ``v`` (None when
  no gradient reaches ``v``).
- ``aggregated``: the number of distinct features combined (through concat / add / ...) at
  ``v``'s input: distinct computational-layer outputs, the network input counting as one.
- ``timestamps``: the number of distinct gradient path lengths reaching ``v`` (the paper's
  gradient timestamps: gradients that crossed different numbers of layers).
- ``sources``: the number of distinct immediate gradient sources of ``v``: the computational
  layers that consume ``v``'s output directly, plus one if the output reaches the loss
  directly (the paper's / PRN's gradient source: which path a gradient came through).
- ``paths``: the number of distinct gradient paths (sequences of layers) from ``L`` to ``v``.

The analysis is layer-level: PRN's partial (per-channel) residuals appear as ordinary adds.
Path counts and path-length sets are computed by dynamic programming over the DAG (Python ints,
path-length sets as bit masks), never by enumerating paths.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.gradpath_trace import COMPUTATIONAL, INPUT, LayerGraph, trace_graph
from utils import cli
from utils.cli import MAX_IMG_SIZE, MIN_IMG_SIZE, option
from utils.errors import command_main

__all__ = [  # the tracing names too: callers import the whole analysis from here
    "COMPUTATIONAL", "INPUT", "GradpathOptions", "LayerGraph", "LayerStats", "analyse", "analyse_model",
    "format_table", "main", "save_plot", "summarise", "summary_line", "trace_graph", "write_csv",
]


@dataclass(frozen=True)
class LayerStats:
    """Gradient-path statistics of one computational layer (see the module docstring)."""

    index: int
    name: str
    kind: str
    depth: int
    aggregated: int
    shortest: int | None
    longest: int | None
    timestamps: int
    sources: int
    paths: int


def analyse(graph: LayerGraph) -> list[LayerStats]:
    """Per-layer statistics of ``graph`` by dynamic programming over its DAG.

    Path-length sets are bit masks (bit ``j`` set: some gradient path has length ``j``), so
    a layer's set is the union of its successors' sets shifted by one.
    """
    n = len(graph.names)
    succ: list[list[int]] = [[] for _ in range(n)]
    depth = [0] * n
    for i, ps in enumerate(graph.preds):
        depth[i] = 1 + max((depth[p] for p in ps if p != INPUT), default=0)
        for p in graph.grad_preds[i]:
            if p != INPUT:
                succ[p].append(i)
    mask = [0] * n
    paths = [0] * n
    for i in reversed(range(n)):
        at_loss = i in graph.to_loss
        mask[i] = (0b10 if at_loss else 0)
        for s in succ[i]:
            mask[i] |= mask[s] << 1
        paths[i] = int(at_loss) + sum(paths[s] for s in succ[i])
    rows = []
    for i in range(n):
        m = mask[i]
        rows.append(LayerStats(
            index=i,
            name=graph.names[i],
            kind=graph.kinds[i],
            depth=depth[i],
            aggregated=len(graph.preds[i]),
            shortest=(m & -m).bit_length() - 1 if m else None,
            longest=m.bit_length() - 1 if m else None,
            timestamps=m.bit_count(),
            sources=len(succ[i]) + int(i in graph.to_loss),
            paths=paths[i],
        ))
    return rows


def summarise(rows: list[LayerStats], graph: LayerGraph) -> dict[str, Any]:
    """Network-level numbers: depth, max / mean shortest path, max longest path.

    Means and maxima run over the layers a gradient reaches; ``no_gradient`` counts the rest.
    """
    reached = [r for r in rows if r.shortest is not None]
    shortest = [r.shortest for r in reached]
    return {
        "layers": len(rows),
        "depth": max((rows[i].depth for i in graph.to_loss), default=0),
        "max_shortest_path": max(shortest, default=0),
        "mean_shortest_path": round(sum(shortest) / len(shortest), 3) if shortest else 0.0,
        "max_longest_path": max((r.longest for r in reached), default=0),
        "no_gradient": len(rows) - len(reached),
    }


def analyse_model(model: nn.Module, img: int = 256, batch: int = 2,
                  ch: int = 3) -> tuple[LayerGraph, list[LayerStats], dict[str, Any]]:
    """Trace ``model`` on a [batch, ch, img, img] input; return graph, rows and summary.

    B = 2 keeps training-mode BatchNorm valid if the forward has to run on real numbers.
    """
    graph = trace_graph(model, torch.rand(batch, ch, img, img))
    rows = analyse(graph)
    return graph, rows, summarise(rows, graph)


def _fmt(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3e}" if value >= 10**9 else str(value)  # path counts can have 100 digits


def format_table(rows: list[LayerStats]) -> str:
    """Fixed-width text table, one line per computational layer."""
    header = ("idx", "layer", "kind", "depth", "agg", "short", "long", "stamps", "srcs", "paths")
    lines = [
        (str(r.index), r.name, r.kind, str(r.depth), str(r.aggregated), _fmt(r.shortest),
         _fmt(r.longest), str(r.timestamps), str(r.sources), _fmt(r.paths))
        for r in rows
    ]
    widths = [max(len(row[j]) for row in [header, *lines]) for j in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if j in (1, 2) else cell.rjust(w) for j, (cell, w) in
                  enumerate(zip(row, widths, strict=True)))
        for row in [header, *lines]
    )


def summary_line(summary: dict[str, Any]) -> str:
    """One line such as ``layers 105, depth 53, shortest path max 19 / mean 9.1, longest 53``."""
    line = (f"layers {summary['layers']}, depth {summary['depth']}, shortest gradient path "
            f"max {summary['max_shortest_path']} / mean {summary['mean_shortest_path']}, "
            f"longest gradient path max {summary['max_longest_path']}")
    if summary["no_gradient"]:
        line += f", {summary['no_gradient']} layers get no gradient"
    return line


def write_csv(rows: list[LayerStats], path: str | Path) -> None:
    """One CSV row per layer with every ``LayerStats`` field (empty when no gradient)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(LayerStats)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def save_plot(rows: list[LayerStats], path: str | Path, title: str = "") -> None:
    """Line plot of depth and shortest / longest gradient path by layer index."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no global backend switch
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [r.index for r in rows]
    nan = float("nan")
    ax.plot(x, [r.depth for r in rows], label="depth from input", color="0.6")
    ax.plot(x, [nan if r.longest is None else r.longest for r in rows], label="longest gradient path")
    ax.plot(x, [nan if r.shortest is None else r.shortest for r in rows], label="shortest gradient path")
    ax.set_xlabel("computational layer (forward order)")
    ax.set_ylabel("computational layers")
    ax.set_title(title)
    ax.legend()
    fig.savefig(path, dpi=120)


@dataclass
class GradpathOptions:
    """The flags of ``python -m models.gradpath``."""

    cfg: str = option("", "model YAML", required=True)
    img: int = option(256, "input size (multiple of the max stride)", at_least=MIN_IMG_SIZE, at_most=MAX_IMG_SIZE)
    scale: str | None = option(None, "entry of the config's scales table (e.g. d4)")
    csv: str | None = option(None, "write per-layer rows to this CSV file")
    plot: str | None = option(None, "save a path-length plot (PNG)")
    json: bool = option(False, "print one JSON object as the last line")


@command_main("python -m models.gradpath")
def main(argv: list[str] | None = None) -> int:
    """Command line: table and summary of a model config's gradient paths."""
    parser = cli.build_parser(GradpathOptions, __doc__.split("\n")[0], prog="python -m models.gradpath")
    opt = cli.namespace_to(GradpathOptions, parser.parse_args(argv))

    from models.yolo import Model  # the command needs the builder; the analysis does not

    _, rows, summary = analyse_model(Model(opt.cfg, scale=opt.scale), opt.img)
    if opt.csv:
        write_csv(rows, opt.csv)
    if opt.plot:
        save_plot(rows, opt.plot, title=f"{Path(opt.cfg).name}: {summary_line(summary)}")
    if opt.json:
        print(json.dumps({"cfg": str(opt.cfg), "scale": opt.scale, **summary, "rows": [asdict(r) for r in rows]}))
    else:
        print(format_table(rows))
        print(summary_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
