"""Channel importance criteria, one family per module, all in :data:`CRITERIA`.

The two criteria that are searches (``blend``: blended criteria tuned by an evolutionary
algorithm; ``ga``: genetic selection with layer sensitivity) use the selection layer's search
code, so they live in :mod:`deploykit.select` and register themselves here when imported;
:mod:`deploykit.train.search`, which runs their schedule, imports them.
"""

from deploykit.importance import fisher, magnitude  # noqa: F401  (registration)
from deploykit.importance import dcff, ensemble, lasso, operator_norm, tp_wrapped  # noqa: F401  (registration)
from deploykit.importance.base import CRITERIA, Importance, ScoringContext, score_groups

__all__ = ["CRITERIA", "Importance", "ScoringContext", "score_groups", "get_criterion"]


def get_criterion(name: str) -> Importance:
    """A fresh criterion by registered name (unknown names list the valid ones)."""
    return CRITERIA.get(name)()
