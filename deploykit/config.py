"""Validated settings: a misspelled key or an out-of-range value fails loudly, in one line."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from deploykit.errors import DeployKitError

C = TypeVar("C", bound="StrictConfig")


class StrictConfig(BaseModel):
    """Base for settings objects: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls: type[C], **kwargs: Any) -> C:
        """Validate ``kwargs``; raise a DeployKitError naming the first problem."""
        try:
            return cls(**kwargs)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or cls.__name__
            raise DeployKitError(f"{where}: {err['msg']}") from None
