"""Error types: user errors (bad input) versus bugs.

A :class:`DeployKitError` is something the user can fix (an unknown name, a bad
path, a target out of range). The CLI prints its message as one line on stderr
and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DeployKitError(Exception):
    """A user error: the message says what was wrong and what is valid."""

    exit_code = 2


class UnsupportedModelError(DeployKitError):
    """The dependency graph cannot follow an op of the model."""


class ParityError(Exception):
    """ONNX Runtime outputs differ from PyTorch beyond tolerance (exit 1, not a user error)."""
