"""Layer pruners Torch-Pruning lacks, registered with every dependency graph deploykit builds.

* :class:`ChannelScatterPruner`: parameter-free channel re-mapping modules
  (:class:`~deploykit.zoo.scatter.ChannelScatter`, e.g. the CIFAR ResNets' option-A
  shortcut). Input and output channels are separate groups: removing an input channel
  turns the output it fed into a zero channel; removing an output channel drops that
  position.
* :class:`CoupledGroupConvPruner`: grouped convolutions with as many inputs as
  outputs (ResNeXt, RegNet). Torch-Pruning prunes them by keeping channels-per-group
  equal across groups; deploykit removes *whole groups* instead (``groups`` shrinks,
  channels per group stay), which keeps widths multiples of the group width and
  the convolution as regular as before. Input and output channels of such a conv
  are one group, as for a depthwise conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch_pruning as tp
from torch import nn

# The contract lives with the models that implement it (the zoo, below this layer); it stays
# importable from here, where the pruners that honour it are.
from deploykit.zoo.scatter import ChannelScatter


class ChannelScatterPruner(tp.pruner.BasePruningFunc):
    """Prunes :class:`ChannelScatter` modules on either side."""

    def prune_out_channels(self, layer: ChannelScatter, idxs: Sequence[int]) -> nn.Module:
        drop = set(idxs)
        src = [s for o, s in enumerate(layer.scatter_sources()) if o not in drop]
        layer.set_sources(src, layer.in_channels)
        return layer

    def prune_in_channels(self, layer: ChannelScatter, idxs: Sequence[int]) -> nn.Module:
        drop = set(idxs)
        renumber = {}
        for i in range(layer.in_channels):
            if i not in drop:
                renumber[i] = len(renumber)
        src = [renumber.get(s, -1) if s >= 0 else -1 for s in layer.scatter_sources()]
        layer.set_sources(src, len(renumber))
        return layer

    def get_out_channels(self, layer: ChannelScatter) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: ChannelScatter) -> int:
        return layer.in_channels


class CoupledGroupConv2d(nn.Conv2d):
    """Marker class for a grouped conv (1 < groups < channels, in == out) pruned by whole groups.

    Instances are ordinary ``nn.Conv2d`` objects whose class is swapped in place
    (same state dict, same forward, same ONNX export).
    """


def is_coupled_group_conv(m: nn.Module) -> bool:
    """Whether ``m`` is a grouped conv that deploykit prunes by whole groups."""
    return (
        type(m) in (nn.Conv2d, CoupledGroupConv2d)
        and 1 < m.groups < m.out_channels
        and m.in_channels == m.out_channels
    )


def mark_group_convs(model: nn.Module) -> int:
    """Swap the class of every coupled grouped conv to :class:`CoupledGroupConv2d`; returns the count."""
    n = 0
    for m in model.modules():
        if is_coupled_group_conv(m):
            m.__class__ = CoupledGroupConv2d
            n += 1
    return n


class CoupledGroupConvPruner(tp.pruner.BasePruningFunc):
    """Removes whole groups: indices must cover complete groups of ``channels // groups``."""

    def prune_out_channels(self, layer: nn.Conv2d, idxs: Sequence[int]) -> nn.Module:
        per = layer.out_channels // layer.groups
        drop = sorted(set(idxs))
        whole = {i // per for i in drop}
        if len(drop) != len(whole) * per:
            raise ValueError(f"{len(drop)} channels do not make whole groups of {per} in a grouped conv")
        keep = [i for i in range(layer.out_channels) if i not in set(drop)]
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if layer.bias is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        layer.out_channels = layer.in_channels = len(keep)
        layer.groups -= len(whole)
        return layer

    # One index space for inputs and outputs: pruning either side prunes both.
    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Conv2d) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: nn.Conv2d) -> int:
        return layer.in_channels


def customized_pruners() -> dict[type, tp.pruner.BasePruningFunc]:
    """Pruners for classes Torch-Pruning does not handle as deploykit wants.

    Every subclass of :class:`ChannelScatter` defined so far is covered (e.g. the CIFAR option-A
    shortcut): a model holding one has imported its class.
    """
    pruners: dict[type, tp.pruner.BasePruningFunc] = {CoupledGroupConv2d: CoupledGroupConvPruner()}
    todo = list(ChannelScatter.__subclasses__())
    while todo:
        cls = todo.pop()
        pruners[cls] = ChannelScatterPruner()
        todo += cls.__subclasses__()
    return pruners


def ties_channels(module: nn.Module, out: bool) -> bool:
    """Whether :func:`atom_keys` may tie some channel of ``module`` to another (grouped, not depthwise, convs)."""
    if not isinstance(module, nn.modules.conv._ConvNd) or module.groups == 1:
        return False
    return isinstance(module, CoupledGroupConv2d) or module.groups != (module.out_channels if out else module.in_channels)


def atom_keys(module: nn.Module, out: bool, position: int) -> tuple | None:
    """Which channels must go together with the channel at ``position`` of ``module``.

    Returns a key shared by all positions of one atom, or None when the channel
    can go alone. Whole groups for coupled grouped convs; the same offset within
    every group (Torch-Pruning's scheme) for other grouped convs.
    """
    if not isinstance(module, nn.modules.conv._ConvNd) or module.groups == 1:
        return None
    if isinstance(module, CoupledGroupConv2d):
        return ("block", id(module), position // (module.out_channels // module.groups))
    channels = module.out_channels if out else module.in_channels
    if module.groups == channels:  # depthwise: channels are independent
        return None
    return ("offset", id(module), out, position % (channels // module.groups))
