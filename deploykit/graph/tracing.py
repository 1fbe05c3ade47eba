"""Tracing helpers around Torch-Pruning's DependencyGraph.

* Barriers: ops the graph must not see through (a channel shuffle, a module the
  user ``--ignore``s) are replaced, while tracing only, by one opaque op that
  computes the same values and links its inputs to its outputs. Groups that touch
  a barrier are reported unprunable with the barrier's reason, and a construct
  inside an ignored module can no longer break the trace.
* Attribution: every autograd node of the traced forward pass is mapped to the
  module whose forward created it, so an error can name a module path.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree


class Barrier(torch.autograd.Function):
    """Returns copies of ``outputs`` with a single autograd node linked to ``inputs``.

    The node (``BarrierBackward``) carries ``reason``; the graph library treats it
    as element-wise, which is harmless because groups through it are never pruned.
    """

    @staticmethod
    def forward(ctx, reason: str, n_inputs: int, *tensors: torch.Tensor):  # type: ignore[override]
        ctx.reason = reason
        outs = tuple(t.clone() for t in tensors[n_inputs:])
        return outs if len(outs) != 1 else outs[0]

    @staticmethod
    def backward(ctx, *grads):  # never run: barriers exist only while tracing
        raise RuntimeError("a tracing barrier was differentiated")


def barrier_reason(grad_fn: object) -> str | None:
    """The reason of a barrier node, or None for any other node."""
    return getattr(grad_fn, "reason", None) if type(grad_fn).__name__ == "BarrierBackward" else None


def _wrap(fn, reason: str):
    def opaque(*args, **kwargs):
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.requires_grad]
        with torch.no_grad():
            out = fn(*args, **kwargs)
        if not inputs:
            return out
        leaves, spec = pytree.tree_flatten(out)
        idx = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not idx:
            return out
        res = Barrier.apply(reason, len(inputs), *inputs, *(leaves[i] for i in idx))
        res = res if isinstance(res, tuple) else (res,)
        for i, t in zip(idx, res):
            leaves[i] = t
        return pytree.tree_unflatten(leaves, spec)

    return opaque


IGNORED = "ignored: "  # reason prefix of the barrier around an ignored module

# Functions the graph library cannot follow, replaced by barriers while tracing:
# (module, attribute, reason).
FUNCTION_BARRIERS: list[tuple[str, str, str]] = [
    ("torchvision.models.shufflenetv2", "channel_shuffle", "channel shuffle (a permutation across branches)"),
]


@contextlib.contextmanager
def barriers(model: nn.Module, ignore: Sequence[str]) -> Iterator[None]:
    """While active, ignored modules and known untraceable functions are barriers."""
    patched: list[tuple[object, str, object]] = []
    try:
        for mod_name, attr, reason in FUNCTION_BARRIERS:
            try:
                mod = importlib.import_module(mod_name)
            except ImportError:
                continue
            if hasattr(mod, attr):
                orig = getattr(mod, attr)
                patched.append((mod, attr, orig))
                setattr(mod, attr, _wrap(orig, reason))
        modules = dict(model.named_modules())
        for path in ignore:
            m = modules[path]
            patched.append((m, "forward", m.__dict__.get("forward")))
            m.forward = _wrap(m.forward, IGNORED + path)
        yield
    finally:
        for obj, attr, orig in reversed(patched):
            if orig is None:
                del obj.__dict__[attr]
            else:
                setattr(obj, attr, orig)


@contextlib.contextmanager
def attribution(model: nn.Module) -> Iterator[dict[object, str]]:
    """Map every autograd node created in a forward pass to the module path that created it."""
    owner: dict[object, str] = {}
    names = {m: n for n, m in model.named_modules()}
    stack: list[str] = []

    def claim(tensors, name: str) -> None:
        todo = [t.grad_fn for t in pytree.tree_leaves(tensors) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        while todo:
            fn = todo.pop()
            if fn in owner:
                continue
            owner[fn] = name
            todo += [f for f, _ in getattr(fn, "next_functions", ()) if f is not None]

    def pre(module, args):
        if module in names:
            claim(args, stack[-1] if stack else "")
            stack.append(names[module])

    def post(module, args, output):
        if module in names and stack:
            claim(output, stack.pop())

    h1 = nn.modules.module.register_module_forward_pre_hook(pre)
    h2 = nn.modules.module.register_module_forward_hook(post)
    try:
        yield owner
    finally:
        h1.remove()
        h2.remove()


# Library autograd functions known to act on each channel independently (safe to trace through).
CHANNELWISE_FUNCTIONS = {
    "GeneratedBackwardFor_torchvision_roi_align_default",
    "GeneratedBackwardFor_torchvision_roi_pool_default",
}


def custom_function_name(grad_fn: object) -> str | None:
    """The name of a user-defined autograd.Function node (not a barrier, not known channel-wise), else None."""
    if type(grad_fn).__name__.removesuffix("Backward") in CHANNELWISE_FUNCTIONS:
        return None
    if isinstance(grad_fn, torch.autograd.function.BackwardCFunction) and barrier_reason(grad_fn) is None:
        return type(grad_fn).__name__.removesuffix("Backward")
    if grad_fn is not None and not hasattr(grad_fn, "name"):
        return type(grad_fn).__name__
    return None
