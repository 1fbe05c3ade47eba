"""Which split of a DATA spec calibrates and fine-tunes, and which evaluates."""

from __future__ import annotations

SPLITS = ("train", "test")


def with_split(spec: str, split: str) -> str:
    """``spec`` with its split set to ``split`` where the dataset has splits.

    ``digits`` → ``digits:train``; ``cifar10:DIR:test:jpeg75`` → ``cifar10:DIR:train:jpeg75``;
    ``imagefolder:DIR`` is returned as is (one folder, no splits).
    """
    kind, *args = spec.split(":")
    if kind == "digits":
        return f"digits:{split}"
    if kind == "cifar10" and args:
        rest = args[1:]
        if rest and rest[0] in SPLITS:
            rest = rest[1:]
        return ":".join(["cifar10", args[0], split, *rest])
    return spec
