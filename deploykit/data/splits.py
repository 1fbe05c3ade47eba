"""Which split of a DATA spec calibrates and fine-tunes, and which evaluates."""

from __future__ import annotations

SPLITS = ("train", "test")
CIFAR_VARIANTS = ("lossless", "jpeg75")


def with_split(spec: str, split: str) -> str:
    """``spec`` with its split set to ``split`` where the dataset has splits.

    ``digits`` → ``digits:train``; ``cifar10:DIR:test:jpeg75`` → ``cifar10:DIR:train:jpeg75``;
    ``yolo:DIR`` → ``yolo:DIR:train``;
    ``imagefolder:DIR`` is returned as is (one folder, no splits). A spec whose
    split field holds something else, or with extra fields, is returned unchanged,
    for the loader to reject.
    """
    kind, *args = spec.split(":")
    if kind == "digits":
        # Extra fields stay, so the loader refuses them instead of this silently dropping them.
        return f"digits:{split}" if not args or (len(args) == 1 and args[0] in SPLITS) else spec
    if kind == "cifar10" and args:
        rest = args[1:]
        if rest and rest[0] in SPLITS:
            rest = rest[1:]
        if len(rest) > 1 or (rest and rest[0] not in CIFAR_VARIANTS):
            return spec
        return ":".join(["cifar10", args[0], split, *rest])
    if kind == "yolo" and args and (len(args) == 1 or (len(args) == 2 and args[1] in SPLITS)):
        return f"yolo:{args[0]}:{split}"
    return spec


def names_split(spec: str) -> bool:
    """Whether the spec names a split explicitly."""
    return any(part in SPLITS for part in spec.split(":")[1:])
