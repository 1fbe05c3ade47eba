"""Every group checks itself: pruning it must equal masking it.

A group deploykit can follow loses channels exactly as if those channels were zeroed
where they enter the next layers. :func:`probe` removes channels from every prunable
group of a copy of the model (in float64), runs it against the unpruned copy with the
same channels zeroed (:func:`masked_reference`), and when the two differ, or the pruned
copy fails to run, bisects the groups to find those at fault. Each such group is left
whole, with the reason: ``not followed: <where it broke>``.

Zeroing is not removal where a layer normalizes across channels: a LayerNorm or a
one-group GroupNorm computes its statistics over all channels, so the reference runs those
layers on the kept channels only (an exact reference). A GroupNorm with several groups
regroups channels when some go: its groups are left whole (:func:`norm_reason`).
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.config import one_line
from deploykit.graph.copies import shared_copy
from deploykit.graph.groups import Group, ModelGraph
from deploykit.graph.pruners import ChannelScatter

# Relative difference (to the largest output magnitude) allowed: float32 summation order only
# (a construct followed wrongly differs by 1e-3 and more: GhostNet's tied halves gave 1.5e-3).
TOLERANCE = 1e-4


@dataclass
class Verdict:
    """What the check found.

    Attributes:
        failed: group id → ``not followed: ...`` for groups left whole.
        exact_norms: layers whose reference normalized over the kept channels only.
        trials: pruned copies built and compared.
        seconds: time spent.
    """

    failed: dict[str, str] = field(default_factory=dict)
    exact_norms: list[str] = field(default_factory=list)
    trials: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON form (report.json's ``verification``)."""
        return {"not_followed": dict(self.failed), "exact_norm_reference": list(self.exact_norms),
                "trials": self.trials, "seconds": round(self.seconds, 2)}


def norm_reason(mod: nn.Module) -> str | None:
    """Why a normalization layer's channels cannot be removed one by one, or None."""
    if isinstance(mod, nn.GroupNorm) and mod.num_groups > 1:
        return (f"GroupNorm with {mod.num_groups} groups normalizes channels together: removing some "
                "regroups the rest")
    return None


def _flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flat(v)]
    return []


def _exact_norm(mod: nn.Module, drop: list[int]) -> Callable | None:
    """A forward for the reference's ``mod`` that normalizes over the kept channels only."""
    if isinstance(mod, nn.GroupNorm) and mod.num_groups == 1:
        def gn(x: torch.Tensor) -> torch.Tensor:
            keep = [c for c in range(x.shape[1]) if c not in set(drop)]
            y = torch.zeros_like(x)
            w = mod.weight[keep] if mod.weight is not None else None
            b = mod.bias[keep] if mod.bias is not None else None
            y[:, keep] = F.group_norm(x[:, keep], 1, w, b, mod.eps)
            return y
        return gn
    if isinstance(mod, nn.LayerNorm) and len(mod.normalized_shape) == 1:
        width = mod.normalized_shape[0]

        def ln(x: torch.Tensor) -> torch.Tensor:
            # timm's LayerNorm2d normalizes dim 1 of NCHW; nn.LayerNorm the last dim
            dim = x.ndim - 1 if x.shape[-1] == width and "2d" not in type(mod).__name__.lower() else 1
            xt = x.movedim(dim, -1)
            keep = [c for c in range(width) if c not in set(drop)]
            y = torch.zeros_like(xt)
            w = mod.weight[keep] if mod.weight is not None else None
            b = mod.bias[keep] if mod.bias is not None else None
            y[..., keep] = F.layer_norm(xt[..., keep], (len(keep),), w, b, mod.eps)
            return y.movedim(-1, dim)
        return ln
    return None


def masked_reference(model: nn.Module, graph: ModelGraph, removed: dict[str, set[int]],
                     exact_norms: list[str] | None = None, ref: nn.Module | None = None) -> nn.Module:
    """A copy of the unpruned ``model`` with the ``removed`` channels (original numbering) zeroed
    at every input they enter, and normalizations over channels run on the kept ones only.

    ``ref``: an unpruned copy of ``model`` (same module paths) to install this on instead of a new
    copy; :func:`unmask` takes it off again.
    """
    ref = copy.deepcopy(model) if ref is None else ref
    names = {m: n for n, m in model.named_modules()}
    ref_modules = dict(ref.named_modules())
    for mod, sites in graph.input_sites().items():
        zero = [pos for gid, idxs, roots in sites for pos, r in zip(idxs, roots) if r in removed.get(gid, ())]
        if not zero:
            continue

        def hook(m: nn.Module, args: tuple, zero: torch.Tensor = torch.tensor(zero)) -> tuple:
            x = args[0].clone()
            x.index_fill_(-1 if isinstance(m, nn.Linear) else 1, zero, 0.0)
            return (x, *args[1:])

        handle = ref_modules[names[mod]].register_forward_pre_hook(hook)
        _MASKS.setdefault(ref, []).append(handle)
    for g in graph.prunable():
        drop_roots = removed.get(g.id, ())
        if not drop_roots:
            continue
        for it in graph.tp_items(g):
            if it.module is None or not isinstance(it.module, (nn.LayerNorm, nn.GroupNorm)) or not it.out:
                continue
            drop = [p for p, r in zip(it.idxs, it.root_idxs) if r in drop_roots]
            fwd = _exact_norm(ref_modules[names[it.module]], drop) if drop else None
            if fwd is not None:
                ref_modules[names[it.module]].forward = fwd
                _MASKS.setdefault(ref, []).append(ref_modules[names[it.module]])
                if exact_norms is not None and names[it.module] not in exact_norms:
                    exact_norms.append(names[it.module])
    return ref


_MASKS: dict[nn.Module, list] = {}


def unmask(ref: nn.Module) -> None:
    """Take off what :func:`masked_reference` installed on ``ref``."""
    for h in _MASKS.pop(ref, []):
        if isinstance(h, nn.Module):
            h.__dict__.pop("forward", None)
        else:
            h.remove()


def _crash_site(e: BaseException, names: dict[nn.Module, str]) -> str:
    """The innermost module whose forward raised ``e``, and the error, as one phrase."""
    where = ""
    for frame, _ in traceback.walk_tb(e.__traceback__):
        obj = frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and obj in names:
            where = names[obj]
    msg = one_line(str(e), 120)
    return f"{where or '<model>'} fails after pruning ({type(e).__name__}: {msg})"


def _divergence(pruned: nn.Module, ref: nn.Module, x: torch.Tensor) -> str:
    """The first module (in execution order) whose output differs between the two models."""
    outs: dict[str, list] = {"p": [], "r": []}
    hooks = []
    for tag, model in (("p", pruned), ("r", ref)):
        for name, m in model.named_modules():
            if name and not isinstance(m, ChannelScatter):
                hooks.append(m.register_forward_hook(lambda m, a, o, n=name, t=tag: outs[t].append((n, _flat(o)))))
    try:
        with torch.no_grad():
            pruned(x)
            ref(x)
    finally:
        for h in hooks:
            h.remove()
    ref_out = dict(outs["r"])
    for name, got in outs["p"]:
        want = ref_out.get(name)
        if want is None or len(want) != len(got) or any(a.shape != b.shape for a, b in zip(got, want)):
            continue
        if any(_rel(a, b) > TOLERANCE for a, b in zip(got, want)):
            return name
    return "<model output>"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if not (a.is_floating_point() and b.is_floating_point()):
        return 0.0 if torch.equal(a, b) else 1.0
    return float((a - b).abs().max() / (b.abs().max() + 1e-12)) if a.numel() else 0.0


def check_input(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """The input the checks run on: ``example`` shrunk to about a quarter of its height and width
    (multiples of 32, at least 32), or ``example`` itself where ``model`` cannot run at that size.

    The checks compare channels, not pixels: a smaller image goes through the same channel coupling
    at a fraction of the convolutions (ResNet-50 at 64x64: a twelfth of 224x224). A model that
    refuses it (a flatten into a fixed-size linear layer, an input-size assertion) is checked at
    its own size.
    """
    x = example[:1].detach().float()
    if x.dim() != 4:
        return x
    size = [d if d <= 64 else max(32, math.ceil(d / 4 / 32) * 32) for d in x.shape[-2:]]
    if size == list(x.shape[-2:]):
        return x
    small = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    try:
        with torch.no_grad():
            model(small)
    except Exception:  # noqa: BLE001 - whatever fails at the small size runs at the full one
        return x
    return small


class _Checker:
    """Builds pruned copies of one model and compares each with its masked reference."""

    def __init__(self, model: nn.Module, example: torch.Tensor, ignore: Sequence[str], verdict: Verdict,
                 owned: bool = False) -> None:
        # float32: float64 convolutions have no fast CPU kernels (10x slower), and float32's
        # summation-order noise is far below what a wrongly followed construct changes.
        self.model = (model if owned else copy.deepcopy(model)).eval().float()
        self.x = check_input(self.model, example)
        self.ignore = list(ignore)
        self.verdict = verdict
        self.site: dict[str, str] = {}  # reason -> module path where it broke

    def trial(self, removal: dict[str, set[int]]) -> str | None:
        """None when pruning ``removal`` equals masking it, else what broke."""
        self.verdict.trials += 1
        twin = shared_copy(self.model)  # pruning replaces its tensors; the hooks below leave the weights alone
        graph = ModelGraph(twin, self.x, ignore=self.ignore)
        removal = {gid: r for gid, r in removal.items() if r}
        # The reference is the model itself, masked by hooks that every path below removes again: one copy
        # per trial (the twin it prunes), not two (a VGG-11 is 0.5 GB).
        ref = masked_reference(twin, graph, removal, self.verdict.exact_norms, ref=self.model)
        names = {m: n for n, m in twin.named_modules()}
        try:
            with torch.no_grad():
                want = _flat(ref(self.x))
            for gid, chans in removal.items():
                graph.remove(gid, chans)
            with torch.no_grad():
                got = _flat(twin(self.x))
        except Exception as e:  # noqa: BLE001 - whatever breaks is the finding
            unmask(ref)
            why = f"not followed: {_crash_site(e, names)}"
            self.site[why] = why.removeprefix("not followed: ").split(" ", 1)[0]
            return why
        if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
            unmask(ref)
            return "not followed: the pruned model's outputs change shape"
        worst = max((_rel(a, b) for a, b in zip(got, want)), default=0.0)
        if worst > TOLERANCE:
            where = _divergence(twin, ref, self.x)
            unmask(ref)
            why = f"not followed: the pruned model differs from the masked one from {where} on (rel {worst:.1e})"
            self.site[why] = where
            return why
        unmask(ref)
        return None

    def find(self, removal: dict[str, set[int]], known: str | None = None,
             layers: dict[str, list[str]] | None = None) -> dict[str, str]:
        """The groups of ``removal`` at fault, each with its reason.

        The module where a trial broke points at its suspects (groups with a layer there):
        they are tried alone first; bisection finds the rest.
        """
        why = known if known is not None else self.trial(removal)
        if why is None:
            return {}
        site = self.site.get(why, "")
        if layers is not None and site and site != "<model>":
            near = {g for g in removal if any(n == site or n.startswith(site + ".") for n in layers.get(g, []))}
            if near and len(near) < len(removal):
                found = self.find({g: removal[g] for g in sorted(near)})
                if found:
                    rest = {g: r for g, r in removal.items() if g not in found}
                    return {**found, **(self.find(rest, layers=layers) if rest else {})}
        gids = sorted(removal)
        if len(gids) == 1:
            return {gids[0]: why}
        half = len(gids) // 2
        a = self.find({g: removal[g] for g in gids[:half]}, layers=layers)
        b = self.find({g: removal[g] for g in gids[half:]}, layers=layers)
        if not a and not b:  # only together: leave them all whole
            return {g: why for g in gids}
        return {**a, **b}


# Node types and element-wise ops whose channel mapping deploykit follows by construction (tested
# family by family): groups through nothing else are suspected last when a probe fails.
_PLAIN_TYPES = {"CONV", "BN", "LINEAR", "PRELU", "DEPTHWISE_CONV", "CONCAT", "OUTPUT"}
_PLAIN_OPS = {"Add", "Sub", "Mul", "Div", "Relu", "Silu", "Sigmoid", "Hardswish", "Hardsigmoid", "Gelu", "Tanh",
              "LeakyRelu", "Elu", "Hardtanh", "Clamp", "MaxPool2DWithIndices", "AvgPool2D", "AdaptiveAvgPool2D",
              "UpsampleNearest2D", "UpsampleBilinear2D", "Clone", "Neg", "Mish", "Softplus", "Mean", "Max",
              "MaxPool2D", "Relu6", "NativeBatchNorm", "Barrier", "AccumulateGrad"}


def suspects(graph: ModelGraph, group: Group) -> bool:
    """Whether ``group`` goes through an op other than convs, norms, cat and element-wise ops
    (a split, slice, reshape, attention, channel norm): where a probe's failure is looked for first."""
    for it in group.items:
        node = it.node
        kind = getattr(getattr(node, "type", None), "name", "")
        if kind in _PLAIN_TYPES:
            continue
        gf = getattr(node, "grad_fn", None)
        op = type(gf).__name__.removesuffix("Backward").rstrip("0123456789").removesuffix("Backward") if gf else ""
        if kind == "ELEMENTWISE" and op in _PLAIN_OPS:
            continue
        return True
    return False


def probe_removal(graph: ModelGraph, seed: int = 0) -> dict[str, set[int]]:
    """Half of every prunable group's atoms (at least one), chosen at random: what :func:`probe` removes."""
    rnd = random.Random(seed)
    removal = {}
    for g in graph.prunable():
        atoms = list(g.atoms)
        k = max(1, len(atoms) // 2)
        removal[g.id] = {c for a in rnd.sample(atoms, k) for c in a}
    return removal


def probe(model: nn.Module, example: torch.Tensor, graph: ModelGraph, ignore: Sequence[str] = (),
          seed: int = 0, owned: bool = False) -> Verdict:
    """Check every prunable group of ``graph`` on a copy of ``model``; leave the failing ones whole.

    Marks each failing group of ``graph`` unprunable with its reason (``not followed: ...``);
    ``model`` itself is not touched. With ``owned`` (a float copy in eval mode that no one runs
    meanwhile) the checker masks ``model`` itself as the reference instead of copying it first,
    and leaves it as it was.
    """
    start = time.perf_counter()
    verdict = Verdict()
    for g in graph.prunable():
        why = next((norm_reason(it.module) for it in g.items if it.module is not None and norm_reason(it.module)), None)
        if why is not None:
            graph.leave_whole(g.id, why)
    checker = _Checker(model, example, ignore, verdict, owned)
    removal = probe_removal(graph, seed)
    if removal:
        layers = {g.id: g.layers for g in graph.prunable()}
        why = checker.trial(removal)
        if why is not None:
            # Suspects first (few: splits, slices, reshapes), then whatever still fails.
            risky = {g.id for g in graph.prunable() if suspects(graph, g)}
            found = checker.find({g: removal[g] for g in sorted(risky)}, layers=layers) if risky else {}
            rest = {g: r for g, r in removal.items() if g not in found}
            if rest:
                found.update(checker.find(rest, known=why if not found else None, layers=layers))
            verdict.failed = found
        for gid, why in verdict.failed.items():
            graph.leave_whole(gid, why)
    verdict.seconds = time.perf_counter() - start
    return verdict


def check(model: nn.Module, example: torch.Tensor, ignore: Sequence[str], removal: dict[str, set[int]],
          owned: bool = False) -> Verdict:
    """Check one removal (original channel indices per group) of the unpruned ``model``: the groups at fault.

    With ``owned`` the checker uses ``model`` itself (a private copy the caller will not use again) instead of
    copying it first.
    """
    start = time.perf_counter()
    verdict = Verdict()
    checker = _Checker(model, example, ignore, verdict, owned)
    verdict.failed = checker.find({g: set(r) for g, r in removal.items() if r})
    verdict.seconds = time.perf_counter() - start
    return verdict


if __name__ == "__main__":  # pragma: no cover - python -m deploykit.graph.verify SPEC [SHAPE]
    from deploykit.zoo import build_model, parse_shape

    built = build_model(sys.argv[1], input_shape=parse_shape(sys.argv[2]) if len(sys.argv) > 2 else None)
    g = ModelGraph(built.traced, built.example_input())
    v = probe(built.traced, built.example_input(), g)
    print(v.to_dict())
