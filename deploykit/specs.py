"""MODEL spec resolvers: the kinds of MODEL spec that are not ``family:name`` or ``module:function``.

The zoo reads those two itself; any other kind (an artifact directory) needs a layer above
the zoo to load it, so that layer's loader is registered here by reference and the zoo
looks it up without importing it. This module is at the bottom of the package and imports
nothing heavy, so the package itself (:mod:`deploykit`) registers the resolvers when it is
imported: every use of the zoo finds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deploykit.registry import Registry, resolve


@dataclass(frozen=True)
class SpecResolver:
    """One kind of MODEL spec.

    Attributes:
        claims: whether a spec is of this kind (cheap: it runs for every spec built).
        load: ``"module:function"`` of ``load(spec, trust_factory=...) -> BuiltModel``.
    """

    claims: Callable[[str], bool]
    load: str

    def __call__(self, spec: str, trust_factory: bool | None = None) -> Any:
        """The model ``spec`` names."""
        return resolve(self.load)(spec, trust_factory=trust_factory)


SPEC_RESOLVERS: Registry[SpecResolver] = Registry("MODEL spec resolver")


def resolver_for(spec: str) -> SpecResolver | None:
    """The registered resolver that claims ``spec``, if any."""
    return next((r for r in map(SPEC_RESOLVERS.get, SPEC_RESOLVERS.names()) if r.claims(spec)), None)
