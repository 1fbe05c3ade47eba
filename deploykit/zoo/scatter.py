"""The contract of parameter-free channel re-mapping modules, which the graph layer prunes.

A model that routes channels by index (the CIFAR ResNets' option-A shortcut) subclasses
:class:`ChannelScatter`; :func:`deploykit.graph.pruners.customized_pruners` finds every
subclass and prunes it with ``ChannelScatterPruner``. The base class sits in the zoo, with
the models, so that a model module never imports the graph layer above it.
"""

from __future__ import annotations

from torch import nn


class ChannelScatter(nn.Module):
    """Base for modules whose output channel o copies input channel ``src[o]`` (or is zero)."""

    in_channels: int
    out_channels: int

    def scatter_sources(self) -> list[int]:
        """Source input channel of every output channel (-1: zero)."""
        raise NotImplementedError

    def set_sources(self, src: list[int], in_channels: int) -> None:
        """Install a new mapping after pruning."""
        raise NotImplementedError
