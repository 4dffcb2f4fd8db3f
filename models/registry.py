"""REGISTRY: the one mapping from model-YAML module names to block classes.

A value is either a :class:`~models.blocks.Block` subclass or ``(class, default_kwargs)`` for
a name that selects options of a shared class (``IDetect`` is ``Detect`` with implicit
knowledge). To add a block: subclass ``Block`` (``from_yaml`` + ``out_channels``) and add
one entry here; the parser needs no change. Names written ``nn.X`` in the official configs
are looked up without the ``nn.`` prefix.
"""

from __future__ import annotations

from typing import Any

from models.blocks import MP, SP, SPPCSPC, Block, Concat, Conv, DownC, ReOrg, Shortcut, Upsample
from models.csp import Bottleneck, BottleneckCSP, BottleneckCSPB
from models.elan import EELAN, ELAN, MPConv
from models.head import Detect
from models.paper_blocks import OSA, CSPStage, ELANk, ResBlock
from models.reparam import RepConv

Entry = type[Block] | tuple[type[Block], dict[str, Any]]

REGISTRY: dict[str, Entry] = {
    "Conv": Conv,
    "RepConv": RepConv,
    "Concat": Concat,
    "Shortcut": Shortcut,
    "MP": MP,
    "SP": SP,
    "ReOrg": ReOrg,
    "Upsample": Upsample,
    "DownC": DownC,
    "SPPCSPC": SPPCSPC,
    "ELAN": ELAN,
    "EELAN": EELAN,
    "MPConv": MPConv,
    "Bottleneck": Bottleneck,
    "BottleneckCSPA": (BottleneckCSP, {"fusion": "first"}),
    "BottleneckCSPB": BottleneckCSPB,
    "BottleneckCSPC": (BottleneckCSP, {"fusion": "both"}),
    "CSPFusionFirst": (BottleneckCSP, {"fusion": "first"}),
    "CSPFusionLast": (BottleneckCSP, {"fusion": "last"}),
    "ResBlock": ResBlock,  # paper_blocks: the gradient-path analysis configs (cfg/gradpath/)
    "OSA": OSA,
    "CSPStage": CSPStage,
    "ELANk": ELANk,
    "Detect": Detect,
    "IDetect": (Detect, {"implicit": True}),
    "IAuxDetect": (Detect, {"implicit": True, "aux": True}),
}


def lookup(name: str) -> tuple[type[Block], dict[str, Any]]:
    """(class, default kwargs) for a YAML module name; KeyError with the known names otherwise."""
    key = name[3:] if name.startswith("nn.") else name
    if key not in REGISTRY:
        raise KeyError(f"unknown module {name!r} (known: {', '.join(sorted(REGISTRY))})")
    entry = REGISTRY[key]
    return (entry[0], dict(entry[1])) if isinstance(entry, tuple) else (entry, {})
