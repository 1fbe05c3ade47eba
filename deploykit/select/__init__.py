"""Choosing which channels go: global ranking under cost targets, and the criteria that are searches
(``blend``, ``ga``: they register in :data:`deploykit.importance.CRITERIA` when imported).

The ranking's names load on first use (PEP 562), so that the torch-free
:mod:`deploykit.select.targets` can be imported without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NORMALIZERS", "Selection", "SelectConfig", "Target", "select_global"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from deploykit.select import global_rank

        return getattr(global_rank, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
