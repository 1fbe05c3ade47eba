"""The cost targets a selection can be asked to meet (``--target-NAME RATIO``).

A registry, so a new target is an entry, not a branch: each names the
:class:`~deploykit.graph.costs.Costs` field it bounds. Torch-free, so the command
line can build its ``--target-*`` flags without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.registry import Registry


@dataclass(frozen=True)
class TargetKind:
    """A cost that ``--target-NAME RATIO`` bounds: ``cost`` is the Costs field, ``what`` names it in help."""

    cost: str
    what: str


TARGETS: Registry[TargetKind] = Registry("target")
TARGETS.register("macs", TargetKind("macs", "multiply-accumulates"))
TARGETS.register("params", TargetKind("params", "parameters"))
TARGETS.register("memory", TargetKind("activation_bytes", "activation memory (bytes every op writes, batch 1)"))
TARGETS.register("latency", TargetKind("latency_ms", "latency predicted by the per-layer latency table (--lut, else "
                                                     "measured on ONNX Runtime CPU and cached on first use)"))

# The latency target's name (``--target-latency``), and the Costs field it bounds (the latency re-aiming acts on it).
LATENCY_TARGET = "latency"
LATENCY_COST = TARGETS.get(LATENCY_TARGET).cost
