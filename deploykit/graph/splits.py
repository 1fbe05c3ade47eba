"""Index maps of split/chunk and cat nodes, read from autograd instead of guessed.

Torch-Pruning 1.6 assumes a split's i-th consumer reads chunk i and that a concat reads
each input once. YOLOv8's C2f breaks both: ``y = cv1(x).chunk(2, 1)``, the second half
feeds the bottleneck *and* the concat, and the concat reads both halves of the same split.
Its index maps then send channels to the wrong chunk (or past the tensor), and its
split offsets go stale after the first removal. Autograd records, for every consumer,
which output of the split each of its inputs is (``next_functions``' output number), and
each op's output shape: that fixes the maps exactly.

A chunk (``chunk(n)`` / ``split(int)``: equal sizes computed from the tensor at run time)
only stays correct while its pieces stay equal, so channel i of one piece goes with
channel i of every other piece; :func:`chunk_partners` gives those positions to the
group walk. A split by widths its module stores (timm's MixNet ``split(x, self.splits)``, Res2Net's
``split(out, self.width)``, YOLO11's C2PSA ``split((self.c, self.c))``, CSPNet's
``split(self.expand_chs // 2)``) would go stale once channels go: when exactly one attribute
of the module that made the split holds its widths (the list, each equal piece, or the
total), :func:`sync_stored_widths` rewrites it after every removal. Anything else stale is
found by the self-check after pruning, which leaves the group whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import accumulate

import torch_pruning as tp
from torch import nn
from torch_pruning import _helpers
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.index_mapping import _ConcatIndexMapping, _SplitIndexMapping


def _channel_split(gf: object) -> bool:
    full = getattr(gf, "_saved_self_sym_sizes", None)
    dim = getattr(gf, "_saved_dim", None)
    return full is not None and dim is not None and len(full) > 1 and dim % len(full) == 1


def _offsets(sizes: list[int]) -> list[int]:
    return [0, *accumulate(sizes)]


def _reads(consumer: object, gf: object) -> list[tuple[int, int]]:
    """``(input slot, output number)`` of every input of ``consumer`` that is an output of ``gf``."""
    fns = getattr(getattr(consumer, "grad_fn", None), "next_functions", ()) or ()
    return [(slot, nr) for slot, (f, nr) in enumerate(fns) if f is gf]


def prepare(dg: tp.DependencyGraph, owner: Mapping[object, str], model: nn.Module) -> None:
    """Give split nodes their real chunk sizes, and concats that read a split their slot sizes.

    Called once on the freshly traced graph; the sizes are then kept current by
    Torch-Pruning's split and concat pruners as channels are removed.

    Args:
        owner: the module path that created each autograd node (where a split's widths may be stored).
        model: the traced model.
    """
    modules = dict(model.named_modules())
    for node in dg.module2node.values():
        gf = node.grad_fn
        if node.type == tp.ops.OPTYPE.SPLIT and _channel_split(gf):
            total = int(gf._saved_self_sym_sizes[1])
            if hasattr(gf, "_saved_split_sizes"):
                sizes = [int(s) for s in gf._saved_split_sizes]
                node.module.dk_chunked = False
            elif hasattr(gf, "_saved_split_size"):
                step = int(gf._saved_split_size)
                sizes = [min(step, total - i) for i in range(0, total, step)]
                node.module.dk_chunked = len(set(sizes)) == 1 and len(sizes) > 1
            else:
                continue
            node.module.split_sizes = sizes
            node.module.offsets = _offsets(sizes)
            node.module.dk_mapped = True
            _bind_stored_widths(node.module, modules.get(owner.get(gf, ""), None))
    for node in dg.module2node.values():
        if node.type != tp.ops.OPTYPE.CONCAT or not any(getattr(i.module, "dk_mapped", False) for i in node.inputs):
            continue
        fns = node.grad_fn.next_functions
        meta = [getattr(f, "_input_metadata", None) for f, _ in fns]
        if any(m is None or nr >= len(m) for m, (_, nr) in zip(meta, fns)):
            continue
        shapes = [m[nr].shape for m, (_, nr) in zip(meta, fns)]
        dim = getattr(node.grad_fn, "_saved_dim", None)
        if dim is None or len(shapes[0]) < 2 or dim % len(shapes[0]) != 1:
            continue
        node.module.concat_sizes = [int(s[1]) for s in shapes]
        node.module.dk_mapped = True
    refresh(dg)


def _bind_stored_widths(split: object, module: nn.Module | None) -> None:
    """Bind the one attribute of ``module`` that holds ``split``'s widths, if there is exactly one."""
    if module is None:
        return
    sizes = split.split_sizes
    equal = len(sizes) > 1 and len(set(sizes)) == 1
    found = []
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, bool):
            continue
        if isinstance(value, (list, tuple)) and len(value) == len(sizes) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value) and list(value) == sizes:
            found.append((name, "list"))
        elif isinstance(value, int) and equal and value == sizes[0]:
            found.append((name, "each"))
        elif isinstance(value, int) and equal and value == sum(sizes):
            found.append((name, "total"))
    # The list itself is the strongest evidence (a module often also stores its total width as in_channels).
    for kind in ("list", "each", "total"):
        same = [f for f in found if f[1] == kind]
        if same:
            break
    if len(same) != 1:
        return  # none, or ambiguous: the self-check decides
    split.dk_stored = (module, *same[0])
    if same[0][1] != "list":
        split.dk_chunked = True  # the forward splits into equal pieces: keep them equal


def sync_stored_widths(dg: tp.DependencyGraph) -> None:
    """Write each bound split's current widths back into the attribute its module splits by."""
    for node in dg.module2node.values():
        stored = getattr(node.module, "dk_stored", None) if node.type == tp.ops.OPTYPE.SPLIT else None
        if stored is None:
            continue
        module, name, kind = stored
        sizes = node.module.split_sizes
        old = getattr(module, name)
        setattr(module, name, type(old)(sizes) if kind == "list" else sizes[0] if kind == "each" else sum(sizes))


def refresh_if_pruned(dg: tp.DependencyGraph) -> None:
    """:func:`refresh`, unless no parameter changed shape since the last one (nothing was removed).

    The maps follow from the widths alone, and rebuilding them walks every concat: on DenseNet-121 a
    refresh before each of the ~500 group walks of a compress took most of its time.
    """
    shapes = param_shapes(dg)
    if getattr(dg, "_dk_mapped_shapes", None) != shapes:
        refresh(dg)
        dg._dk_mapped_shapes = shapes


def param_shapes(dg: tp.DependencyGraph) -> tuple:
    """The shapes of every parameter of ``dg``'s model: they change exactly when channels are removed."""
    mods = getattr(dg, "_dk_param_modules", None)
    if mods is None:  # the modules stay; pruning replaces their parameters, so shapes are read afresh
        mods = dg._dk_param_modules = [m for m in dg.model.modules() if m._parameters]
    return tuple(tuple(p.shape) for m in mods for p in m._parameters.values() if p is not None)


# Torch-Pruning's map update of each node type whose maps follow widths (its update_index_mapping, node by node).
_UPDATES = {
    tp.ops.OPTYPE.CONCAT: index_mapping.update_concat_index_mapping,
    tp.ops.OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
    tp.ops.OPTYPE.RESHAPE: index_mapping.update_reshape_index_mapping,
    tp.ops.OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping,
    tp.ops.OPTYPE.EXPAND: index_mapping.update_expand_index_mapping,
    tp.ops.OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
}


def refresh(dg: tp.DependencyGraph, nodes: Iterable[object] | None = None) -> None:
    """Torch-Pruning's index maps, then the exact ones for the splits :func:`prepare` sized.

    Args:
        nodes: only these nodes' maps (those a removal changed the widths of: its group's nodes), and
            the splits and concats mapped together with them; None: every node.
    """
    todo = list(dg.module2node.values()) if nodes is None else list({id(n): n for n in nodes}.values())
    if nodes is not None:  # a split and the concat it feeds are mapped in one place (_map_split)
        near = [n for node in todo for n in (node.inputs if node.type == tp.ops.OPTYPE.CONCAT else
                                             node.outputs if node.type == tp.ops.OPTYPE.SPLIT else ())]
        todo = list({id(n): n for n in [*todo, *near]}.values())
    for node in todo:
        update = _UPDATES.get(node.type)
        if update is not None:
            update(dg, node)
    for node in todo:
        if node.type == tp.ops.OPTYPE.CONCAT and getattr(node.module, "dk_mapped", False):
            _map_concat(node)
    for node in todo:
        if node.type == tp.ops.OPTYPE.SPLIT and getattr(node.module, "dk_mapped", False):
            _map_split(node)


def mark_refreshed(dg: tp.DependencyGraph) -> None:
    """Record the parameter shapes the maps now follow (after a :func:`refresh` of the nodes a removal changed)."""
    dg._dk_mapped_shapes = param_shapes(dg)


def _map_concat(node: object) -> None:
    """Each non-split input of a concat to its own slot(s), by autograd's input order."""
    offsets = _offsets(node.module.concat_sizes)
    for source in {id(i): i for i in node.inputs}.values():
        if source.type == tp.ops.OPTYPE.SPLIT and getattr(source.module, "dk_mapped", False):
            continue  # mapped with the split, both steps in one place
        reads = _reads(node, source.grad_fn)
        back = [d for d in node.dependencies if d.target is source]
        fwd = [d for d in source.dependencies if d.target is node]
        if not reads or len(reads) != len(back) or len(reads) != len(fwd):
            continue
        for (slot, _), b, f in zip(reads, back, fwd):
            b.index_mapping[1] = _ConcatIndexMapping(offsets[slot: slot + 2], reverse=True)
            f.index_mapping[1] = _ConcatIndexMapping(offsets[slot: slot + 2])


def _map_split(node: object) -> None:
    """Each consumer of a split to the chunk it reads (and, for a concat, to the slot it fills)."""
    offsets = node.module.offsets = _offsets(node.module.split_sizes)
    gf = node.grad_fn
    for consumer in {id(o): o for o in node.outputs}.values():
        reads = _reads(consumer, gf)
        out = [d for d in node.dependencies if d.target is consumer]
        back = [d for d in consumer.dependencies if d.target is node]
        if not reads or len(reads) != len(out) or len(reads) != len(back):
            continue  # a consumer autograd cannot place: leave its maps as they were
        cat = consumer.type == tp.ops.OPTYPE.CONCAT and getattr(consumer.module, "dk_mapped", False)
        cat_offsets = _offsets(consumer.module.concat_sizes) if cat else None
        for (slot, nr), fwd, rev in zip(reads, out, back):
            piece = offsets[nr: nr + 2]
            if cat:
                where = cat_offsets[slot: slot + 2]
                fwd.index_mapping = [_SplitIndexMapping(piece), _ConcatIndexMapping(where)]
                # Back from the concat: into the slot first, then into the split's input.
                rev.index_mapping = [_ConcatIndexMapping(where, reverse=True), _SplitIndexMapping(piece, reverse=True)]
            else:
                fwd.index_mapping = [_SplitIndexMapping(piece), fwd.index_mapping[1]]
                rev.index_mapping = [_SplitIndexMapping(piece, reverse=True), rev.index_mapping[1]]


def chunk_partners(node: object, idxs: list) -> list:
    """``idxs`` at a chunk node, with the same position in every other piece (pieces stay equal)."""
    mod = getattr(node, "module", None)
    if not getattr(mod, "dk_chunked", False):
        return idxs
    sizes = mod.split_sizes
    if len(set(sizes)) != 1:
        return idxs
    step = sizes[0]
    return [_helpers._HybridIndex(idx=i.idx % step + k * step, root_idx=i.root_idx) for i in idxs for k in range(len(sizes))]
