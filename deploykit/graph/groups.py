"""Coupled channel groups, built on Torch-Pruning's DependencyGraph.

A :class:`Group` is the set of channels that must be removed together: every
layer writing into one residual stream, a depthwise conv and its producer, the
consumers whose input channels shrink with them. :class:`ModelGraph` keeps, for
every group, the original indices of the channels still present (``kept``), so
a selection made at any point is recorded in the original numbering.

Within a group some channels can only go together (an *atom*): the channels of
one group of a grouped convolution. Selection removes whole atoms.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from deploykit.errors import UnsupportedModelError
from deploykit.graph import pruners, splits, tracing
from deploykit.graph.grouping import Budget, BudgetExceeded, Unfollowable, pruning_group

# Ops the dependency graph treats as element-wise although they change the
# channel count: a group through them would be pruned inconsistently.
CHANNEL_CHANGING_OPS = {"ConstantPadNdBackward0": "channel zero-padding (F.pad on the channel dim)"}


@dataclass
class Item:
    """One member of a group: a node whose output (``out``) or input (``in``) channels shrink.

    ``idxs[i]`` is the position in that node's tensor of the group's channel ``root_idxs[i]``.
    """

    node: object
    name: str
    module: nn.Module | None
    out: bool
    idxs: list[int]
    root_idxs: list[int]


@dataclass
class Group:
    """Coupled channels that are removed together.

    Attributes:
        id: the root layer's module path (the earliest layer, in definition order,
            whose output channels define the group).
        channels: the group's current channel count.
        kept: original indices of the channels still present.
        atoms: original indices that can only be removed together (singletons by default).
        segments: the group's channels at trace time, split by the layers they reach; more
            than one where a split, a chunk or a partial-channel op sends pieces of the group to
            different layers, each piece a layer's width of its own.
        prunable: whether deploykit will remove channels from it.
        reason: why not, when not prunable.
    """

    id: str
    root: nn.Module
    channels: int
    kept: list[int]
    items: list[Item] = field(repr=False)
    atoms: list[list[int]] = field(default_factory=list, repr=False)
    ties: list[tuple[int, int]] = field(default_factory=list, repr=False)
    segments: list[list[int]] = field(default_factory=list, repr=False)
    prunable: bool = True
    reason: str | None = None

    @property
    def layers(self) -> list[str]:
        """Named member layers, in graph order, without repeats."""
        return list(dict.fromkeys(i.name for i in self.items if i.module is not None))

    @property
    def consumers(self) -> list[str]:
        """Named layers whose input channels shrink with the group."""
        return list(dict.fromkeys(i.name for i in self.items if i.module is not None and not i.out))

    @property
    def atom_size(self) -> int:
        """Channels per atom (1 unless grouped convolutions constrain the group)."""
        return max((len(a) for a in self.atoms), default=1)

    def to_dict(self) -> dict:
        """The JSON form used by ``inspect``."""
        return {
            "id": self.id,
            "layers": self.layers,
            "consumers": self.consumers,
            "channels": self.channels,
            "atom": self.atom_size,
            "prunable": self.prunable,
            "reason": self.reason,
        }


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class ModelGraph:
    """The model's coupled channel groups, and physical removal of their channels.

    Args:
        model: the model (pruned in place by :meth:`remove`). Grouped convolutions with
            as many inputs as outputs are re-classed in place to be pruned by whole groups.
        example_input: a batch-1 input used to trace the graph.
        ignore: module paths left untouched (a path covers its submodules); they are
            opaque to the trace, so whatever they contain cannot break it.

    Raises:
        UnsupportedModelError: an op the graph cannot follow, named with its module path.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = ()) -> None:
        self.model = model
        self.example_input = example_input
        self.ignore = list(ignore)
        names = {n for n, _ in model.named_modules()}
        for p in self.ignore:
            if p not in names:
                raise UnsupportedModelError(f"--ignore {p!r} names no module of the model")
        pruners.mark_group_convs(model)
        self.budget = Budget()
        self.dg, self.owner = self._build()
        self._walked: dict[str, tp.Group] = {}  # group id -> tp_group() at the widths _walked_at
        self._walked_at = splits.param_shapes(self.dg)
        self.limit = self._widest()
        self._check_custom_ops()
        self.groups: list[Group] = self._collect_groups()
        self.full_widths = [g.channels for g in self.groups]
        self._by_id = {g.id: g for g in self.groups}

    def _build(self) -> tuple[tp.DependencyGraph, dict[object, str]]:
        was_training = self.model.training
        owner: dict[object, str] = {}
        try:
            # Tracing follows autograd, so it must work even when called under no_grad.
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                torch.enable_grad(),
                tracing.barriers(self.model, self.ignore),
                tracing.attribution(self.model) as owner,
            ):
                warnings.simplefilter("ignore")
                dg = tp.DependencyGraph().build_dependency(
                    self.model, self.example_input, customized_pruners=pruners.customized_pruners(), verbose=False
                )
                splits.prepare(dg, owner, self.model)
        except Exception as e:  # noqa: BLE001 - the graph library's errors become one user-facing line
            raise self._trace_error(e, owner) from None
        finally:
            self.model.train(was_training)
        return dg, owner

    def _widest(self) -> int:
        """The widest channel dimension of any tensor the trace saw (bounds channel positions)."""
        widest = max((int(getattr(m, "out_channels", 0) or getattr(m, "out_features", 0) or 0)
                      for m in self.model.modules()), default=1)
        for node in self.dg.module2node.values():
            meta = getattr(getattr(node, "grad_fn", None), "_input_metadata", None)
            if meta:
                shape = tuple(meta[0].shape)
                widest = max(widest, max(shape[1:], default=1))
        return widest

    def op_name(self, node) -> str:
        """``ViewBackward0 in stages.1.attn``: a graph node as a person reads it."""
        if isinstance(getattr(node, "module", None), nn.Module) and node.module in self.dg._module2name:
            return f"{type(node.module).__name__} {self.dg._module2name[node.module]}"
        gf = getattr(node, "grad_fn", None)
        op = gf.name() if gf is not None and hasattr(gf, "name") else type(getattr(node, "module", None)).__name__
        op = op.removesuffix("Backward0").removesuffix("Backward1").lstrip("_").removesuffix("Op")
        return f"{op} in {self.owner.get(gf) or '<model>'}"

    def _trace_error(self, e: Exception, owner: dict[object, str]) -> UnsupportedModelError:
        """Name the op and module where the graph library failed, from the traceback."""
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        tb, where = e.__traceback__, None
        while tb is not None:
            node = tb.tb_frame.f_locals.get("node")
            gf = getattr(node, "grad_fn", None)
            if gf is not None and gf in owner:
                where = (gf.name() if hasattr(gf, "name") else type(gf).__name__, owner[gf])
            tb = tb.tb_next
        if where is None:
            return UnsupportedModelError(
                f"cannot build the channel dependency graph ({type(e).__name__}: {msg}); "
                "exclude the offending submodule with --ignore MODULE"
            )
        op, path = where
        hint = f"--ignore {path}" if path else "--ignore MODULE (the op is in the model's own forward)"
        return UnsupportedModelError(
            f"the channel graph cannot follow op {op} in module '{path or '<model>'}' ({type(e).__name__}: {msg}); "
            f"leave it out with {hint}"
        )

    def _check_custom_ops(self) -> None:
        for node in self.dg.module2node.values():
            gf = getattr(node, "grad_fn", None)
            name = tracing.custom_function_name(gf)
            if name is None:
                continue
            path = self.owner.get(gf, "")
            hint = f"--ignore {path}" if path else "--ignore MODULE on the module that calls it"
            raise UnsupportedModelError(
                f"unsupported op {name} (a custom autograd function) in module '{path or '<model>'}': "
                f"the channel graph cannot follow it; leave it out with {hint}"
            )

    def name_of(self, node) -> str:
        """Module path of a graph node (``<op>`` names for functional ops)."""
        name = self.dg._module2name.get(node.module)
        return name if name is not None else f"<{type(node.module).__name__}:{getattr(node.module, 'id', '')}>"

    def tp_group(self, group: Group) -> tp.Group:
        """The Torch-Pruning group over all current channels (index maps refreshed); do not modify it.

        Groups are walked once per set of widths: a removal anywhere invalidates them all (it shifts the
        positions of a concat's other inputs). Each walk of ResNet-50 took 3-5 ms, and a check of a plan
        walked every group three times (input sites, norm layers, importance) before this cache.
        """
        shapes = splits.param_shapes(self.dg)
        if shapes != self._walked_at:
            self._walked.clear()
            self._walked_at = shapes
        tpg = self._walked.get(group.id)
        if tpg is None:
            pruner = self.dg.get_pruner_of_module(group.root)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tpg = pruning_group(self.dg, group.root, pruner.prune_out_channels, list(range(group.channels)))[0]
            self._walked[group.id] = tpg
        return tpg

    def _items(self, tpg: tp.Group) -> list[Item]:
        items = []
        for it in tpg:
            dep = it.dep
            node = dep.target
            mod = node.module if isinstance(node.module, nn.Module) and node.module in self.dg._module2name else None
            items.append(
                Item(node, self.name_of(node), mod, self.dg.is_out_channel_pruning_fn(dep.handler), list(it.idxs), list(it.root_idxs))
            )
        return items

    def _collect_groups(self) -> list[Group]:
        groups = []
        seen: set[nn.Module] = set()
        # Definition order makes the root (and so the group id) the earliest layer of the group.
        for _, m in self.model.named_modules():
            if m not in self.dg.module2node or not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or m in seen:
                continue
            pruner = self.dg.get_pruner_of_module(m)
            if pruner is None or pruner.get_out_channels(m) is None:
                continue
            channels = pruner.get_out_channels(m)
            name = self.dg._module2name[m]
            unfollowed = None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tpg, ties = pruning_group(self.dg, m, pruner.prune_out_channels, list(range(channels)), self.budget,
                                              self.limit)
            except Unfollowable as e:
                # Left whole: the group holds the root alone (its coupled layers are not known).
                unfollowed = f"not followed: channel positions run past the tensors through {self.op_name(e.node)}"
                tpg, ties = pruning_group(self.dg, m, pruner.prune_out_channels, [], None)
            except BudgetExceeded as e:
                parent = name.rpartition(".")[0] or name
                raise UnsupportedModelError(f"the channel graph stopped: {e}; leave the module out with "
                                            f"--ignore {parent}") from None
            if unfollowed is None:
                self._walked[name] = tpg
            items = self._items(tpg)
            for it in items:
                if it.out and it.module is not None:
                    seen.add(it.module)
            g = Group(name, m, channels, list(range(channels)), items, ties=ties)
            g.atoms = _atoms(g)
            g.segments = _segments(g)
            g.prunable, g.reason = (False, unfollowed) if unfollowed else self._check(g)
            groups.append(g)
        return groups

    def _check(self, g: Group) -> tuple[bool, str | None]:
        if _under(g.id, self.ignore):
            return False, "ignored"
        for it in g.items:
            gf = getattr(it.node, "grad_fn", None)
            why = tracing.barrier_reason(gf)
            if why is not None and why.startswith(tracing.IGNORED):
                return False, f"coupled to an ignored layer ({why.removeprefix(tracing.IGNORED)})"
            if why is not None:
                return False, f"unsupported op: {why}"
            op = gf.name() if gf is not None and hasattr(gf, "name") else ""
            if it.module is None and op in CHANNEL_CHANGING_OPS:
                return False, f"unsupported op: {CHANNEL_CHANGING_OPS[op]} in {self.owner.get(gf) or '<model>'}"
        for it in g.items:
            if it.out and (not it.node.outputs or any(isinstance(o.module, tp.ops._OutputOp) for o in it.node.outputs)):
                where = it.name if it.module is not None else self.op_name(it.node)
                return False, f"model output ({where})"
        coupled = [it.name for it in g.items if it.module is not None and _under(it.name, self.ignore)]
        if coupled:
            return False, f"coupled to an ignored layer ({coupled[0]})"
        if len(g.atoms) < 2:
            if g.channels < 2:
                return False, "a single channel"
            if g.ties:
                return False, "its channels can only go all together (one position carries several of them: a split or cat)"
            return False, "a single group of a grouped convolution"
        return True, None

    def input_sites(self) -> dict[nn.Module, list[tuple[str, list[int], list[int]]]]:
        """Where each prunable group's channels enter a layer: ``{layer: [(group id, positions, channels)]}``.

        Zeroing those input positions is exactly removing the channels: the consumers
        (convs, linears, channel re-mappings) and the depthwise or grouped convs that
        carry a group's channels through.
        """
        sites: dict[nn.Module, list[tuple[str, list[int], list[int]]]] = {}
        for g in self.prunable():
            for it in self._items(self.tp_group(g)):
                mod = it.module
                through = isinstance(mod, nn.modules.conv._ConvNd) and 1 < mod.groups and mod.in_channels == mod.out_channels
                consumer = not it.out and isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear, pruners.ChannelScatter))
                if consumer or through:
                    sites.setdefault(mod, []).append((g.id, it.idxs, it.root_idxs))
        return sites

    def tp_items(self, group: Group) -> list[Item]:
        """The group's members with their current positions (index maps refreshed)."""
        return self._items(self.tp_group(group))

    def leave_whole(self, gid: str, reason: str) -> None:
        """Mark a group unprunable, with the reason ``inspect`` and the report show."""
        g = self._by_id[gid]
        g.prunable, g.reason = False, reason

    def get(self, gid: str) -> Group:
        """The group whose root layer is ``gid``."""
        return self._by_id[gid]

    def prunable(self) -> list[Group]:
        """Groups deploykit will remove channels from."""
        return [g for g in self.groups if g.prunable]

    def remove(self, gid: str, original_idxs: Iterable[int]) -> None:
        """Physically remove channels (original numbering) from a group and all coupled layers."""
        g = self._by_id[gid]
        drop = set(original_idxs)
        pos = [i for i, k in enumerate(g.kept) if k in drop]
        if not pos:
            return
        if len(pos) >= g.channels:
            raise ValueError(f"cannot remove every channel of group {gid}")
        pruner = self.dg.get_pruner_of_module(g.root)
        tpg = pruning_group(self.dg, g.root, pruner.prune_out_channels, pos)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tpg.prune(record_history=False)
        # Only the maps of the nodes whose widths this removal changed (its group's): refreshing every
        # concat of a DenseNet-121 before each of its removals took most of a compress.
        splits.refresh(self.dg, [n for it in tpg.items for n in (it.dep.source, it.dep.target)])
        splits.mark_refreshed(self.dg)
        splits.sync_stored_widths(self.dg)
        g.kept = [k for k in g.kept if k not in drop]
        g.channels = len(g.kept)
        g.atoms = [a for a in ([k for k in atom if k not in drop] for atom in g.atoms) if a]


def _atoms(g: Group) -> list[list[int]]:
    """Union the group's channels that grouped convolutions force to go together."""
    tying = [it for it in g.items if it.module is not None and pruners.ties_channels(it.module, it.out)]
    if not g.ties and not tying:  # most groups: every channel is an atom of its own
        return [[c] for c in sorted(g.kept)]
    parent = {c: c for c in g.kept}

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    # One position of a layer carrying two root channels (cat([x, f(x)]) in a residual) ties them.
    for a, b in g.ties:
        if a in parent and b in parent:
            parent[find(a)] = find(b)
    for it in tying:  # only these can tie positions (asking every position of every layer took most of a trace)
        first: dict[tuple, int] = {}
        for pos, root in zip(it.idxs, it.root_idxs):
            key = pruners.atom_keys(it.module, it.out, pos)
            if key is None or root not in parent:
                continue
            if key in first:
                parent[find(root)] = find(first[key])
            else:
                first[key] = root
    atoms: dict[int, list[int]] = {}
    for c in g.kept:
        atoms.setdefault(find(c), []).append(c)
    return sorted(atoms.values())


def _segments(g: Group) -> list[list[int]]:
    """The group's channels partitioned by the set of layers that hold them (at trace time).

    A group whose every layer holds every channel is one segment. Where a split or chunk sends
    pieces to different layers (MixNet's mixed depthwise convs, C2f's halves), each piece is a
    segment: a layer of its own whose width the selection rounds separately.
    """
    reach: dict[int, list[int]] = {c: [] for c in g.kept}
    for i, it in enumerate(g.items):
        if it.module is None:
            continue
        for c in set(it.root_idxs):
            if c in reach:
                reach[c].append(i)
    pieces: dict[tuple[int, ...], list[int]] = {}
    for c in g.kept:
        pieces.setdefault(tuple(reach[c]), []).append(c)
    return sorted(pieces.values())
