"""Validated settings and documents: a misspelled key or an out-of-range value fails loudly, in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploykit.errors import DeployKitError

C = TypeVar("C", bound="StrictConfig")
M = TypeVar("M", bound=BaseModel)

# The longest document read: plans and sidecars are kilobytes; anything this large is not one.
MAX_DOCUMENT_BYTES = 64 << 20
# How much of a user's value a message repeats (a 10 MB string must not become a 10 MB line).
ECHO_CHARS = 80
# The most entries a document's list may hold (labels, groups): far above any real model's.
MAX_ITEMS = 1 << 20
# A name, label or id in a document.
Text = Annotated[str, Field(max_length=1000)]


class StrictConfig(BaseModel):
    """Base for settings objects: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # A dict setting filled from several flags: its flag per key, e.g. {"targets": "target-{}"}.
    FLAG_OF_KEY: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls: type[C], **kwargs: Any) -> C:
        """Validate ``kwargs``; raise a DeployKitError naming the first problem."""
        try:
            return cls(**kwargs)
        except ValidationError as e:
            err = e.errors()[0]
            loc = err["loc"]
            flag = cls.flag_of(loc)
            if flag is not None:
                # Settings are the command line's flags by name: say it the way the user typed it.
                where = f"--{flag} {echo(err.get('input'))}"
            else:
                where = ".".join(str(p) for p in loc) or cls.__name__
            raise DeployKitError(one_line(f"{where}: {_message(err)}")) from None

    @classmethod
    def flag_of(cls, loc: tuple[Any, ...]) -> str | None:
        """The command-line flag (without ``--``) of the setting at ``loc``, a validation error's location.

        A group of settings (a StrictConfig field) is looked into: its settings are flags too.
        None when ``loc`` names no setting.
        """
        if not loc or not isinstance(loc[0], str) or loc[0] not in cls.model_fields:
            return None
        group = cls.model_fields[loc[0]].annotation
        if len(loc) > 1 and isinstance(group, type) and issubclass(group, StrictConfig):
            return group.flag_of(loc[1:])
        return cls.FLAG_OF_KEY.get(loc[0], "").format(*loc[1:]) or loc[0].replace("_", "-")


class StrictDocument(BaseModel):
    """Base for the schema of a file deploykit reads (plan.json, sidecars, checkpoint meta).

    JSON types are taken as they are (``strict``: ``"3"`` is not 3, ``true`` is not 1),
    unknown keys are errors, and NaN / Infinity (which Python's json accepts) are refused.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def one_line(text: str, limit: int = 400) -> str:
    """``text`` with every run of whitespace (newlines included) made one space, capped at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def echo(value: Any, limit: int = ECHO_CHARS) -> str:
    """A short ``repr`` of a user's value for a message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # huge ints refuse str(); deep nests recurse
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


def _message(err: Any) -> str:
    """pydantic's message for one error, without its ``Value error, `` prefix."""
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _where(loc: tuple[Any, ...]) -> str:
    """``groups.0.kept: `` for a nested field, nothing for the document as a whole."""
    return f"{one_line('.'.join(str(x) for x in loc), 120)}: " if loc else ""


def _got(err: Any) -> str:
    """`` (got VALUE)`` when repeating the offending value helps."""
    value = err.get("input")
    # A missing key's input is the enclosing object; so is a whole-object check's: neither is worth repeating.
    whole_object = err.get("type") == "value_error" and isinstance(value, (dict, list))
    if "input" not in err or err.get("type") == "missing" or whole_object:
        return ""
    return f" (got {echo(value)})"


def validate_document(doc: Any, schema: type[M], source: str, what: str) -> M:
    """Validate an already-parsed document against ``schema``.

    Args:
        doc: the parsed JSON.
        source: where it came from (a path), for messages.
        what: the document's name in messages ("a deploykit plan").

    Raises:
        DeployKitError: one line: the source, the first violation's location and what is valid.
    """
    try:
        return schema.model_validate(doc)
    except ValidationError as e:
        err = e.errors()[0]
        where = _where(err["loc"])
        raise DeployKitError(one_line(f"{source} is not {what}: {where}{_message(err)}{_got(err)}")) from None
    except RecursionError:
        raise DeployKitError(f"{source} is not {what}: it nests too deeply") from None


def read_json(path: str | Path, what: str, missing: str = "") -> Any:
    """Parse a JSON file, refusing what is not a readable, UTF-8, reasonably sized JSON document.

    Raises:
        DeployKitError: one line naming the file and what is wrong with it.
    """
    p = Path(path)
    if not p.is_file():
        raise DeployKitError(one_line(f"{path} does not exist{missing}" if not p.exists() else f"{path} is not a file"))
    try:
        size = p.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise DeployKitError(f"{path} is {size:,} bytes: too large for {what} (at most {MAX_DOCUMENT_BYTES:,})")
        data = p.read_bytes()
    except OSError as e:
        raise DeployKitError(one_line(f"{path} cannot be read: {e.strerror or e}")) from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DeployKitError(f"{path} is not valid JSON: not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise DeployKitError(f"{path} is not valid JSON: it nests too deeply") from None
    except ValueError as e:  # JSONDecodeError, and integers longer than Python converts
        raise DeployKitError(one_line(f"{path} is not valid JSON: {e}")) from None


def read_document(path: str | Path, schema: type[M], what: str, missing: str = "") -> M:
    """Read a JSON file and validate it against ``schema``.

    Args:
        path: the file.
        schema: the pydantic model of the document.
        what: the document's name in messages ("a deploykit latency table (deploykit-lut/1)").
        missing: a hint appended when the file does not exist.

    Raises:
        DeployKitError: missing file, bad JSON, or the first schema violation with its location, in one line.
    """
    return validate_document(read_json(path, what, missing), schema, str(path), what)
