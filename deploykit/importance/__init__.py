"""Channel importance criteria, one family per module, all in :data:`CRITERIA`."""

from deploykit.importance import fisher, magnitude  # noqa: F401  (registration)
from deploykit.importance import blend, dcff, ensemble, ga, lasso, operator_norm, tp_wrapped  # noqa: F401  (registration)
from deploykit.importance.base import CRITERIA, Importance, ScoringContext, score_groups

__all__ = ["CRITERIA", "Importance", "ScoringContext", "score_groups", "get_criterion"]


def get_criterion(name: str) -> Importance:
    """A fresh criterion by registered name (unknown names list the valid ones)."""
    return CRITERIA.get(name)()
