"""Channel masks at the consumers' inputs: removing channels without touching the model.

Zeroing a group channel at every input site the graph lists (``ModelGraph.input_sites``)
is exactly removing it (the same sites Group Fisher differentiates), so criteria that
must *try* removals (ensemble sampling, GA fitness, blend's evolutionary search) run the
unchanged model under :meth:`SiteMasks.applied` instead of pruning copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.graph.groups import ModelGraph
from deploykit.graph.pruners import ChannelScatter

Batch = tuple[torch.Tensor, torch.Tensor]
Masks = dict[str, torch.Tensor]  # group id -> one value per current group channel (1 keep, 0 remove)


def _input_width(mod: nn.Module) -> int:
    if isinstance(mod, nn.Linear):
        return mod.in_features
    if isinstance(mod, (nn.modules.conv._ConvNd, ChannelScatter)):
        return mod.in_channels
    raise TypeError(f"no input width for {type(mod).__name__}")


def _broadcast_shape(mod: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    # Linear layers hold features on the last dim, everything else on dim 1.
    if isinstance(mod, nn.Linear):
        return (1,) * (x.ndim - 1) + (x.shape[-1],)
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


class SiteMasks:
    """Per-layer input masks built from per-group channel masks.

    Args:
        graph: the model's groups in their current state (masks index current channels).
    """

    def __init__(self, graph: ModelGraph) -> None:
        self.graph = graph
        self.sites = {
            mod: [(gid, torch.tensor(idxs), torch.tensor(root)) for gid, idxs, root in entries]
            for mod, entries in graph.input_sites().items()
        }
        self.channels = {g.id: g.channels for g in graph.prunable()}

    def layer_masks(self, masks: Masks) -> dict[nn.Module, torch.Tensor]:
        """The input-channel mask of every consumer whose groups appear in ``masks``."""
        out: dict[nn.Module, torch.Tensor] = {}
        for mod, entries in self.sites.items():
            vec = None
            for gid, idxs, root in entries:
                m = masks.get(gid)
                if m is None:
                    continue
                if vec is None:
                    vec = torch.ones(_input_width(mod), dtype=m.dtype)
                vec[idxs] = vec[idxs] * m.to(vec.dtype)[root]
            if vec is not None:
                out[mod] = vec
        return out

    @contextlib.contextmanager
    def applied(self, masks: Masks) -> Iterator[None]:
        """Run the model inside the block with ``masks`` multiplied into the consumers' inputs."""
        handles = []

        def hook_for(vec: torch.Tensor) -> Callable:
            def pre_hook(mod: nn.Module, args: tuple) -> tuple:
                x = args[0]
                return (x * vec.to(device=x.device, dtype=x.dtype).view(_broadcast_shape(mod, x)), *args[1:])

            return pre_hook

        try:
            for mod, vec in self.layer_masks(masks).items():
                handles.append(mod.register_forward_pre_hook(hook_for(vec)))
            yield
        finally:
            for h in handles:
                h.remove()

    def consumers(self, gids: Iterable[str]) -> list[nn.Module]:
        """The layers where the channels of groups ``gids`` enter."""
        wanted = set(gids)
        return [mod for mod, entries in self.sites.items() if any(e[0] in wanted for e in entries)]

    def keep_masks(self, removal: dict[str, Sequence[int]]) -> Masks:
        """0/1 masks over current channels from ``{group id: original indices to remove}``."""
        out: Masks = {}
        for gid, idxs in removal.items():
            g = self.graph.get(gid)
            drop = set(idxs)
            out[gid] = torch.tensor([0.0 if k in drop else 1.0 for k in g.kept])
        return out


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameter-free model)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def mean_loss(model: nn.Module, batches: Sequence[Batch], loss_fn: Callable | None = None) -> float:
    """Mean per-sample loss over ``batches`` in eval mode (``loss_fn`` sums over a batch)."""
    loss_fn = loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
    was = model.training
    model.eval()
    total, n = 0.0, 0
    dev = device_of(model)
    for x, y in batches:
        total += float(loss_fn(model(x.to(dev)), y.to(dev)))
        n += x.shape[0]
    model.train(was)
    return total / max(n, 1)


@torch.no_grad()
def accuracy_and_loss(model: nn.Module, batches: Sequence[Batch]) -> tuple[float, float]:
    """Top-1 (percent) and mean cross-entropy over ``batches`` in eval mode."""
    was = model.training
    model.eval()
    correct, total, n = 0, 0.0, 0
    dev = device_of(model)
    for x, y in batches:
        out = model(x.to(dev))
        y = y.to(dev)
        correct += int((out.argmax(1) == y).sum())
        total += float(F.cross_entropy(out, y, reduction="sum"))
        n += x.shape[0]
    model.train(was)
    return 100.0 * correct / max(n, 1), total / max(n, 1)


@contextlib.contextmanager
def bn_recalibrated(model: nn.Module, batches: Iterable[Batch]) -> Iterator[None]:
    """Inside the block BatchNorm statistics are re-estimated on ``batches``; restored afterwards.

    Run inside :meth:`SiteMasks.applied` this is the recalibration a physically pruned
    model would get: the statistics of kept channels see only kept inputs.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum, m.training)
             for m in bns if m.track_running_stats]
    was = model.training
    dev = device_of(model)
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        with torch.no_grad():
            for x, _ in batches:
                model(x.to(dev))
        for m in bns:
            m.eval()
        yield
    finally:
        for m, (mean, var, count, mom, tr) in zip([m for m in bns if m.track_running_stats], saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
            m.momentum = mom
            m.train(tr)
        model.train(was)


class PrefixReplay:
    """Skip the part of the forward pass that masks cannot change, for fixed batches.

    Masks act at consumer inputs, so every layer that runs before the first masked
    consumer sees exactly what it saw unmasked. One unmasked pass records the outputs of
    every leaf module per batch; inside :meth:`replaying` those modules return their
    recorded outputs instead of computing them (functional ops in between still run). For
    a block-internal group of a ResNet that skips most of the network.

    Args:
        model: the model (eval mode; it must be deterministic on the batches).
        batches: the fixed batches, replayed in this order by :meth:`forward_all`.
    """

    def __init__(self, model: nn.Module, batches: Sequence[Batch]) -> None:
        self.model, self.batches = model, list(batches)
        self.leaves = [m for m in model.modules() if not list(m.children())]
        self.first_call: dict[nn.Module, int] = {}
        self.last_call: dict[nn.Module, int] = {}
        self.outputs: list[dict[nn.Module, list[torch.Tensor]]] = []
        dev = device_of(model)
        was = model.training
        model.eval()
        for b, (x, _) in enumerate(self.batches):
            outs: dict[nn.Module, list[torch.Tensor]] = {}
            counter = [0]

            def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
                outs.setdefault(mod, []).append(out)
                if b == 0:
                    self.first_call.setdefault(mod, counter[0])
                    self.last_call[mod] = counter[0]
                counter[0] += 1

            handles = [m.register_forward_hook(hook) for m in self.leaves]
            try:
                with torch.no_grad():
                    model(x.to(dev))
            finally:
                for h in handles:
                    h.remove()
            self.outputs.append(outs)
        model.train(was)

    @contextlib.contextmanager
    def replaying(self, consumers: Iterable[nn.Module], batch: int) -> Iterator[None]:
        """While entered, leaf modules that finish before any of ``consumers`` is called replay ``batch``'s outputs."""
        start = min((self.first_call[m] for m in consumers if m in self.first_call), default=0)
        outs = self.outputs[batch]
        patched = []
        for mod in self.leaves:
            if mod in outs and self.last_call.get(mod, start) < start:
                queue = iter(outs[mod])
                mod.forward = lambda *a, _q=queue, **k: next(_q)  # type: ignore[method-assign]
                patched.append(mod)
        try:
            yield
        finally:
            for mod in patched:
                del mod.forward  # back to the class's forward

    @torch.no_grad()
    def mean_loss(self, consumers: Iterable[nn.Module], loss_fn: Callable | None = None) -> float:
        """:func:`mean_loss` over the fixed batches, replaying what precedes ``consumers``."""
        loss_fn = loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
        consumers = list(consumers)
        was = self.model.training
        self.model.eval()
        dev = device_of(self.model)
        total, n = 0.0, 0
        for b, (x, y) in enumerate(self.batches):
            with self.replaying(consumers, b):
                total += float(loss_fn(self.model(x.to(dev)), y.to(dev)))
            n += x.shape[0]
        self.model.train(was)
        return total / max(n, 1)
