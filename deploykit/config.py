"""Validated settings: a misspelled key or an out-of-range value fails loudly, in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from deploykit.errors import DeployKitError

C = TypeVar("C", bound="StrictConfig")
M = TypeVar("M", bound=BaseModel)


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
            loc = err["loc"]
            if loc and isinstance(loc[0], str) and loc[0] in cls.model_fields:
                # Settings are the command line's flags by name: say it the way the user typed it.
                where = f"--{loc[0].replace('_', '-')} {err.get('input')!r}"
            else:
                where = ".".join(str(p) for p in loc) or cls.__name__
            raise DeployKitError(f"{where}: {err['msg']}") from None


def read_document(path: str | Path, schema: type[M], what: str, missing: str = "") -> M:
    """Read a JSON file and validate it against ``schema``.

    Args:
        path: the file.
        schema: the pydantic model of the document.
        what: the document's name in messages ("a deploykit latency table (deploykit-lut/1)").
        missing: a hint appended when the file does not exist.

    Raises:
        DeployKitError: missing file, bad JSON, or the first schema violation with its location.
    """
    p = Path(path)
    if not p.is_file():
        raise DeployKitError(f"{path} does not exist{missing}")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DeployKitError(f"{path} is not valid JSON: {e}") from None
    try:
        return schema.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise DeployKitError(f"{path} is not {what}: {where}: {err['msg']}") from None
