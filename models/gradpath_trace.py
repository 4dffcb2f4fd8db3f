"""The layer graph of any model, read from autograd: the input of models/gradpath.py's analysis.

The network is read as a graph of *computational layers* (every call of an ``nn.Conv*`` or
``nn.Linear`` module) joined by *non-computational edges*. The graph is read from the autograd
graph of one training-mode forward pass, so it needs no per-block code, works for any forward
(data-dependent Python included) and sees exactly the edges a gradient can cross. A
``detach()`` hides its edge entirely; ``models.paper_blocks.stop_gradient(x)`` cuts the
gradient but keeps the forward edge (for depth and aggregation counts).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.paper_blocks import StopGradient

COMPUTATIONAL: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
INPUT = -1  # stands for the network input in a layer's predecessor set


@dataclass(frozen=True)
class LayerGraph:
    """Computational layers in forward (hence topological) order.

    ``preds[i]``: indices of the layers (or ``INPUT``) whose outputs reach layer ``i``'s input
    through non-computational edges only; every index is smaller than ``i``.
    ``grad_preds[i]``: the subset of ``preds[i]`` joined to layer ``i`` by an edge that carries
    gradient (no ``stop_gradient`` on it).
    ``to_loss``: layers whose outputs reach a model output through gradient-carrying
    non-computational edges.
    """

    names: list[str]
    kinds: list[str]
    preds: list[frozenset[int]]
    grad_preds: list[frozenset[int]]
    to_loss: frozenset[int]


def _kind(module: nn.Module) -> str:
    """Short description such as ``Conv2d 3x3/2 g1`` or ``Linear``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        k = "x".join(str(v) for v in module.kernel_size)
        s = module.stride[0]
        return f"{type(module).__name__} {k}/{s} g{module.groups}"
    return type(module).__name__


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    """All tensors in a nested list / tuple / dict model output."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _is_stop(node: Any) -> bool:
    return getattr(node, "_forward_cls", None) is StopGradient


def _frontier(root: Any, stop: dict[Any, int], memo: dict[Any, frozenset[int]],
              through_stops: bool) -> frozenset[int]:
    """Layers (values of ``stop``) reached from autograd node ``root`` without crossing one;
    ``stop_gradient`` nodes are crossed only when ``through_stops``.

    Iterative post-order walk: autograd graphs of big models are deeper than Python's
    recursion limit. ``memo`` is shared across calls so every node is expanded once.
    """
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in memo:
            continue
        if node in stop:
            memo[node] = frozenset((stop[node],))
            continue
        if not through_stops and _is_stop(node):
            memo[node] = frozenset()
            continue
        children = [c for c, _ in node.next_functions if c is not None]
        if expanded:
            memo[node] = frozenset().union(*(memo[c] for c in children))
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in memo)
    return memo[root]


def trace_graph(
    model: nn.Module,
    x: torch.Tensor,
    layer_types: tuple[type[nn.Module], ...] = COMPUTATIONAL,
    meta: bool = True,
) -> LayerGraph:
    """Run one training-mode forward of a copy of ``model`` on ``x`` and read its layer graph.

    Args:
        model: any module; it is deep-copied so its BatchNorm statistics and mode are untouched.
        x: example input, e.g. float [B, 3, H, W] (only its shape matters with ``meta``).
        layer_types: module types that count as computational layers.
        meta: run on the meta device (shapes only, no arithmetic: fast for big models); if the
            forward fails there (it reads tensor values, or an op has no meta kernel), the
            trace is rerun on ``x``'s device.
    """
    if meta:
        try:
            return _trace(model, x, layer_types, torch.device("meta"))
        except (NotImplementedError, RuntimeError):
            pass
    return _trace(model, x, layer_types, x.device)


def _trace(model: nn.Module, x: torch.Tensor, layer_types: tuple[type[nn.Module], ...],
           device: torch.device) -> LayerGraph:
    """``trace_graph`` on one device."""
    model = copy.deepcopy(model).train().to(device)
    for p in model.parameters():
        p.requires_grad_(True)  # frozen layers would otherwise hide their gradient paths
    calls: list[tuple[str, str, list[Any], Any]] = []  # name, kind, input nodes, output node
    counts: dict[str, int] = {}

    def record(name: str, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        counts[name] = counts.get(name, 0) + 1
        label = name if counts[name] == 1 else f"{name}#{counts[name]}"
        inputs = [a.grad_fn for a in _tensors(args) if a.grad_fn is not None]
        calls.append((label, _kind(module), inputs, output.grad_fn))

    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=name: record(name, mod, args, out))
        for name, m in model.named_modules()
        if isinstance(m, layer_types)
    ]
    leaf = x.detach().to(device).requires_grad_(True)
    inp = leaf.clone()  # a non-leaf node every path to the input goes through
    try:
        with torch.enable_grad():
            out = model(inp)
    finally:
        for h in hooks:
            h.remove()
    stop = {node: i for i, (_, _, _, node) in enumerate(calls)}
    stop[inp.grad_fn] = INPUT
    fwd_memo: dict[Any, frozenset[int]] = {}
    grad_memo: dict[Any, frozenset[int]] = {}

    def reach(nodes: list[Any], through_stops: bool) -> frozenset[int]:
        memo = fwd_memo if through_stops else grad_memo
        return frozenset().union(*(_frontier(n, stop, memo, through_stops) for n in nodes))

    preds = [reach(ins, True) for _, _, ins, _ in calls]
    grad_preds = [reach(ins, False) for _, _, ins, _ in calls]
    outs = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
    to_loss = reach(outs, False) - {INPUT}
    return LayerGraph([c[0] for c in calls], [c[1] for c in calls], preds, grad_preds, to_loss)
