"""Gradient-path analysis: hand-computed path lengths on tiny hand-built graphs."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from models.gradpath import (
    INPUT,
    analyse,
    analyse_model,
    format_table,
    main,
    save_plot,
    summarise,
    summary_line,
    trace_graph,
    write_csv,
)
from models.paper_blocks import ResBlock, stop_gradient

GRADPATH_CFG = Path(__file__).resolve().parents[1] / "cfg" / "gradpath"


def conv(c1: int = 4, c2: int = 4, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c1, c2, k, padding=k // 2)


def run(model: nn.Module, c: int = 4) -> tuple[dict[str, tuple], dict]:
    """Analyse ``model`` on a [2, c, 8, 8] input; rows keyed by layer name."""
    graph = trace_graph(model, torch.rand(2, c, 8, 8))
    rows = analyse(graph)
    table = {
        r.name: (r.depth, r.shortest, r.longest, r.aggregated, r.timestamps, r.sources, r.paths)
        for r in rows
    }
    return table, summarise(rows, graph)


class Residual(nn.Module):
    """stem -> [c1 -> c2] + identity -> head; ``stop`` cuts the gradient of one branch's output
    with ``cut`` (``stop_gradient`` keeps the forward edge, ``detach`` removes it)."""

    def __init__(self, stop: str | None = None, cut: Callable = stop_gradient) -> None:
        super().__init__()
        self.stem, self.c1, self.c2, self.head = conv(), conv(), conv(), conv(k=1)
        self.stop, self.cut = stop, cut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.c2(torch.relu(self.c1(x)))
        if self.stop == "identity":
            x = self.cut(x)
        if self.stop == "computational":
            y = self.cut(y)
        return self.head(x + y)


class OSA(nn.Module):
    """VoVNet one-shot aggregation: three 3x3 convs, concat all with the input, 1x1 transition."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = conv(), conv(), conv()
        self.t = conv(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.c1(x)
        y2 = self.c2(y1)
        y3 = self.c3(y2)
        return self.t(torch.cat([x, y1, y2, y3], 1))


class ELAN(nn.Module):
    """ELAN with k modules of m 3x3 convs: concat[short, main, X_1..X_k] -> 1x1 transition."""

    def __init__(self, k: int = 2, m: int = 2) -> None:
        super().__init__()
        self.cv1, self.cv2 = conv(k=1), conv(k=1)
        self.modules_ = nn.ModuleList(nn.Sequential(*(conv() for _ in range(m))) for _ in range(k))
        self.t = conv(4 * (k + 2), 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.cv1(x), self.cv2(x)]
        for block in self.modules_:
            outs.append(block(outs[-1]))
        return self.t(torch.cat(outs, 1))


def test_chain() -> None:
    model = nn.Sequential(conv(3, 4), nn.BatchNorm2d(4), nn.SiLU(), conv(), nn.MaxPool2d(2), conv())
    table, summary = run(model, c=3)
    # depth, shortest, longest, aggregated, timestamps, sources, paths
    assert table == {
        "0": (1, 3, 3, 1, 1, 1, 1),
        "3": (2, 2, 2, 1, 1, 1, 1),
        "5": (3, 1, 1, 1, 1, 1, 1),
    }
    assert summary == {"layers": 3, "depth": 3, "max_shortest_path": 3, "mean_shortest_path": 2.0,
                       "max_longest_path": 3, "no_gradient": 0}


def test_residual_block() -> None:
    table, summary = run(Residual())
    assert table == {
        "stem": (1, 2, 4, 1, 2, 2, 2),  # via identity: head, stem; via branch: head, c2, c1, stem
        "c1": (2, 3, 3, 1, 1, 1, 1),
        "c2": (3, 2, 2, 1, 1, 1, 1),
        "head": (4, 1, 1, 2, 1, 1, 1),  # aggregates stem and c2 through the add
    }
    assert summary["depth"] == 4 and summary["max_shortest_path"] == 3


def test_osa_block() -> None:
    table, _ = run(nn.Sequential(conv(), OSA()))
    assert table == {
        "0": (1, 2, 5, 1, 4, 2, 4),
        "1.c1": (2, 2, 4, 1, 3, 2, 3),
        "1.c2": (3, 2, 3, 1, 2, 2, 2),
        "1.c3": (4, 2, 2, 1, 1, 1, 1),
        "1.t": (5, 1, 1, 4, 1, 1, 1),
    }


def test_elan_block_k2_m2() -> None:
    table, summary = run(nn.Sequential(conv(), ELAN(k=2, m=2)))
    assert table == {
        "0": (1, 3, 7, 1, 3, 2, 4),  # {3 via cv1, 3/5/7 via cv2}
        "1.cv1": (2, 2, 2, 1, 1, 1, 1),
        "1.cv2": (2, 2, 6, 1, 3, 2, 3),
        "1.modules_.0.0": (3, 3, 5, 1, 2, 1, 2),
        "1.modules_.0.1": (4, 2, 4, 1, 2, 2, 2),
        "1.modules_.1.0": (5, 3, 3, 1, 1, 1, 1),
        "1.modules_.1.1": (6, 2, 2, 1, 1, 1, 1),
        "1.t": (7, 1, 1, 4, 1, 1, 1),
    }
    assert summary["depth"] == 7 and summary["max_shortest_path"] == 3
    assert summary["max_longest_path"] == 7


def test_stacking_trends() -> None:
    """The paper's hypothesis: OSA stacks add one per block; residual and ELAN-k stay flat."""
    def stat(model: nn.Module, key: str) -> int:
        return run(model)[1][key]

    osa = [stat(nn.Sequential(conv(), *(OSA() for _ in range(n))), "max_shortest_path")
           for n in (1, 2, 3)]
    assert osa == [2, 3, 4]
    res = [stat(nn.Sequential(conv(), *(ResidualOnly() for _ in range(n)), conv(k=1)),
                "max_shortest_path") for n in (1, 2, 4)]
    assert res == [3, 3, 3]
    elan = [stat(nn.Sequential(conv(), ELAN(k=k)), "max_shortest_path") for k in (1, 2, 4)]
    assert elan == [3, 3, 3]


class ResidualOnly(nn.Module):
    """x + c2(c1(x)), no stem or head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = conv(), conv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(self.c1(x))


def test_path_counts_are_exact_big_ints() -> None:
    """y_k = y_{k-1} + c_k(y_{k-1}): the stem reaches the loss through every subset of c_k."""
    n = 80
    model = nn.Sequential(*(Tiny() for _ in range(n)))
    graph = trace_graph(nn.Sequential(nn.Conv2d(1, 1, 1), model, nn.Conv2d(1, 1, 1)),
                        torch.rand(2, 1, 2, 2))
    rows = analyse(graph)
    assert rows[0].paths == 2 ** n
    assert rows[0].timestamps == n + 1 and rows[0].shortest == 2 and rows[0].longest == n + 2
    assert rows[-1].aggregated == n + 1


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c(x)


def test_stop_gradient_removes_gradient_edges_only() -> None:
    table, _ = run(Residual(stop="identity"))
    assert table["stem"][1:3] == (4, 4)  # only the long way is left
    assert table["head"][0] == 4 and table["head"][3] == 2  # forward edges still counted
    table, summary = run(Residual(stop="computational"))
    assert table["stem"][1:3] == (2, 2)
    assert table["c1"][1] is None and table["c2"][1] is None and summary["no_gradient"] == 2
    assert table["head"][0] == 4 and summary["depth"] == 4
    # detach() leaves no autograd edge at all: the analysis cannot see the forward edge either
    table, summary = run(Residual(stop="computational", cut=torch.Tensor.detach))
    assert table["head"][0] == 2 and table["head"][3] == 1 and summary["no_gradient"] == 2


def test_linear_nested_outputs_and_model_untouched() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(conv(3, 4), nn.BatchNorm2d(4))
            self.fc = nn.Linear(4, 2)
            self.aux = conv(k=1)

        def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
            y = self.body(x)
            return {"out": [self.fc(y.mean((2, 3))), self.aux(y)]}

    model = TwoHeads().eval()
    before = model.body[1].running_mean.clone()
    graph = trace_graph(model, torch.rand(2, 3, 8, 8))
    assert graph.names == ["body.0", "fc", "aux"]
    assert graph.preds[0] == {INPUT} and graph.to_loss == {1, 2}
    assert graph.kinds[1] == "Linear" and graph.kinds[0] == "Conv2d 3x3/1 g1"
    assert analyse(graph)[0].sources == 2
    assert not model.training and torch.equal(model.body[1].running_mean, before)


def test_table_csv_and_plot(tmp_path) -> None:
    graph, rows, summary = analyse_model(Residual(stop="computational"), img=8, ch=4)
    table = format_table(rows).splitlines()
    assert table[0].split() == ["idx", "layer", "kind", "depth", "agg", "short", "long", "stamps",
                                "srcs", "paths"]
    assert table[2].split()[:2] == ["1", "c1"] and table[2].split()[-5:-3] == ["-", "-"]
    assert "2 layers get no gradient" in summary_line(summary)
    write_csv(rows, tmp_path / "rows.csv")
    with open(tmp_path / "rows.csv") as f:
        read = list(csv.DictReader(f))
    assert [r["name"] for r in read] == graph.names and read[0]["shortest"] == "2"
    save_plot(rows, tmp_path / "paths.png", title="residual")
    assert (tmp_path / "paths.png").stat().st_size > 1000


def _stop_grad_run(name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training-mode output and parameter gradients of cfg/gradpath/``name``-d1.yaml (stem,
    one ResBlock, Detect), all three variants with the same weights."""
    from models.yolo import Model

    torch.manual_seed(0)
    reference = Model(GRADPATH_CFG / "res-d1.yaml")
    model = Model(GRADPATH_CFG / f"{name}-d1.yaml")
    model.load_state_dict(reference.state_dict())
    x, w = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 16, 16, 6)
    out = model.train()(x)[0]
    (out * w).sum().backward()  # linear in the output: the stem's gradient is a sum over paths
    return out.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_stop_gradient_from_yaml_splits_the_gradient_between_branches() -> None:
    out_none, g_none = _stop_grad_run("res")
    out_id, g_id = _stop_grad_run("res_stop_identity")
    out_comp, g_comp = _stop_grad_run("res_stop_computational")
    assert torch.equal(out_none, out_id) and torch.equal(out_none, out_comp)  # forward unchanged
    stem = "model.0.conv.weight"  # the layer before the blocks
    # identity stopped: the stem gets only the gradient through F; computational: only the identity.
    scale = g_none[stem].abs().max().item()
    assert torch.allclose(g_none[stem], g_id[stem] + g_comp[stem], rtol=1e-4, atol=1e-5 * scale)
    assert not torch.allclose(g_id[stem], g_none[stem], atol=1e-2 * scale)
    assert not torch.allclose(g_comp[stem], g_none[stem], atol=1e-2 * scale)
    for name in ("model.1.cv1.conv.weight", "model.1.cv2.conv.weight"):  # F's own weights still learn
        assert torch.allclose(g_id[name], g_none[name]) and torch.allclose(g_comp[name], g_none[name])
    with pytest.raises(ValueError, match="stop_grad"):
        ResBlock(8, stop_grad="both")


def _max_shortest(name: str, scale: str) -> int:
    from models.yolo import Model

    return analyse_model(Model(GRADPATH_CFG / f"{name}.yaml", scale=scale), img=32)[2]["max_shortest_path"]


def test_paper_configs_reproduce_the_trends() -> None:
    """cfg/gradpath: stem + stack + Detect. Hand-derived: residual 3 (block cv1 -> cv2 -> head);
    OSA N + 2 (one transition per block); ELAN m + 2 for any k; CSP with S stages: 2S + 3
    (transitions on both sides), 2S + 2 (fusion first), S + 3 (fusion last); identity
    stopped: 2N + 2 (every block crossed the long way)."""
    scales = ("d1", "d4")
    assert [_max_shortest("res", d) for d in scales] == [3, 3]
    assert [_max_shortest("osa", d) for d in scales] == [3, 6]
    assert [_max_shortest("elan", d) for d in scales] == [4, 4]
    assert [_max_shortest("res_stop_identity", d) for d in scales] == [4, 10]
    assert [_max_shortest("res_stop_computational", d) for d in scales] == [3, 3]
    assert [_max_shortest(f"csp_{f}", "d4") for f in ("both", "first", "last")] == [11, 10, 7]


def test_command_json(capsys: pytest.CaptureFixture) -> None:
    main(["--cfg", str(GRADPATH_CFG / "osa-d2.yaml"), "--img", "32", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["max_shortest_path"] == 4 and result["depth"] == 14
    assert len(result["rows"]) == result["layers"] == 14
    assert result["rows"][-1]["shortest"] == 1 and result["rows"][-2]["aggregated"] == 6


SHARED = Path(os.environ.get("ELAN_SHARED", Path(__file__).resolve().parents[2] / "shared"))
OFFICIAL_TINY = SHARED / "reference" / "yolov7" / "cfg" / "training" / "yolov7-tiny.yaml"


@pytest.mark.skipif(not OFFICIAL_TINY.is_file(), reason="official YOLOv7 reference configs absent")
def test_compact_and_official_configs_have_the_same_gradient_paths() -> None:
    """Our one-row-per-ELAN yolov7-tiny and the official unrolled file: same layer graph."""
    from models.yolo import Model

    def stats(cfg: Path) -> tuple[list[tuple], dict, int]:
        model = Model(cfg)
        _, rows, summary = analyse_model(model, img=64)
        per_layer = sorted((r.depth, r.aggregated, r.shortest, r.longest, r.timestamps, r.sources,
                            r.paths) for r in rows)
        return per_layer, summary, sum(isinstance(m, nn.Conv2d) for m in model.modules())

    ours, official = stats(GRADPATH_CFG.parent / "yolov7-tiny.yaml"), stats(OFFICIAL_TINY)
    assert ours == official
    assert ours[1]["layers"] == ours[2] and ours[1]["no_gradient"] == 0  # every conv is reached


def test_value_dependent_forward_is_traced_on_real_tensors() -> None:
    """Python that reads tensor values cannot run on the meta device: the trace falls back."""
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = conv(3, 4), conv()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            return self.b(y) if bool(y.abs().sum() >= 0) else y

    graph = trace_graph(Gate(), torch.rand(2, 3, 8, 8))
    assert graph.names == ["a", "b"] and graph.preds == [{INPUT}, {0}] and graph.to_loss == {1}
