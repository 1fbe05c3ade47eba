"""Load weights without unpickling: safetensors, or torch.load(weights_only=True)."""

from __future__ import annotations

from collections import OrderedDict

from pathlib import Path

import torch
from torch import nn

from deploykit.errors import DeployKitError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch checkpoint.

    A checkpoint may hold the state dict itself or wrap it under ``state_dict``
    (as the CIFAR ResNet checkpoints do); a ``module.`` prefix (DataParallel) is
    stripped from every key.

    Raises:
        DeployKitError: the file is missing, truncated, corrupt or holds no tensors.
    """
    p = Path(path)
    if not p.is_file():
        raise DeployKitError(f"weights file {p} does not exist")
    with p.open("rb") as f:
        head = f.read(8)
    # safetensors starts with a little-endian u64 header length followed by '{'.
    is_safetensors = p.suffix == ".safetensors" or _looks_like_safetensors(p, head)
    try:
        if is_safetensors:
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
            sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    except Exception as e:  # noqa: BLE001 - any reader failure means a bad file
        kind = "safetensors" if is_safetensors else "torch checkpoint"
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DeployKitError(f"cannot read weights {p} as a {kind} (truncated or corrupt?): {msg[:200]}") from None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DeployKitError(f"weights file {p} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _looks_like_safetensors(p: Path, head: bytes) -> bool:
    if len(head) < 8:
        return False
    n = int.from_bytes(head, "little")
    if not 2 <= n <= p.stat().st_size:
        return False
    with p.open("rb") as f:
        f.seek(8)
        return f.read(1) == b"{"


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly, naming every missing, unexpected or mis-shaped key.

    Raises:
        DeployKitError: the weights do not match the architecture.
    """
    own = model.state_dict()
    # Checkpoints from older torch lack BatchNorm's step counter; it is not a weight.
    merged = OrderedDict({**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state})
    # Module versions: safetensors keeps none, and some modules refuse to load without one
    # (torchvision's MNASNet); the checkpoint's own, else this architecture's.
    merged._metadata = getattr(state, "_metadata", None) or getattr(own, "_metadata", None)  # type: ignore[attr-defined]
    state = merged
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise DeployKitError(f"weights {source} do not match the architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Read ``path`` and load it strictly into ``model``."""
    load_into(model, read_state_dict(path), str(path))
