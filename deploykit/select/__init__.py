"""Choosing which channels go: global ranking under cost targets."""

from deploykit.select.global_rank import NORMALIZERS, Selection, SelectConfig, Target, select_global

__all__ = ["NORMALIZERS", "Selection", "SelectConfig", "Target", "select_global"]
