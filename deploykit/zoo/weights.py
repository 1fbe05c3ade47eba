"""Load weights without unpickling: safetensors, or torch.load(weights_only=True).

A checkpoint that ``weights_only`` refuses (it holds other Python objects beside the
tensors: an ``argparse.Namespace`` of training options, numpy scalars, a whole
model) is converted with :func:`convert_to_safetensors` (``deploykit convert-weights``),
which unpickles with :func:`restricted_pickle`: the globals torch itself uses for
tensors are real, every other global is an inert :class:`Neutralized` stand-in that
is never imported and never called.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import re
import tarfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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
        # "Unsupported operand": not a pickle at all (garbage, a text file), so nothing to convert.
        if (not is_safetensors and isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e)
                and "Unsupported operand" not in str(e)):
            raise DeployKitError(f"weights {p} contains Python objects other than tensors (weights_only refused: "
                                 f"{_refused_global(str(e))}); convert it without running code: "
                                 f"deploykit convert-weights {p} OUT.safetensors") from None
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


def _refused_global(message: str) -> str:
    """The global (or construct) named in torch's weights_only refusal."""
    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"WeightsUnpickler error: ([^\n.]+)", message)
    return m.group(1).strip() if m else "an object torch does not allow"


# -- converting a pickled checkpoint without running its code ---------------------------
class Neutralized:
    """An inert stand-in for a global the restricted unpickler refused.

    The global is never imported and nothing of it is ever called: building,
    reducing, calling, ``BUILD`` state and appended items are only recorded here.
    """

    qualname = "?"
    dump_patches = False  # torch's legacy loader checks it before writing a .patch file

    def __new__(cls, *args: Any, **kwargs: Any) -> Neutralized:
        obj = object.__new__(cls)
        obj.__dict__["_args"] = (args, kwargs)
        obj.__dict__["_items"] = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: the arguments were recorded by ``__new__``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Neutralized:
        """Calling a stand-in (what ``getattr(x, 'm')`` returned) records the call in another stand-in."""
        return type(self)(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def append(self, item: Any) -> None:
        """Record an APPEND."""
        self.__dict__["_items"].append(item)

    def extend(self, items: list[Any]) -> None:
        """Record an APPENDS."""
        self.__dict__["_items"].extend(list(items))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["_items"].append((key, value))

    def __repr__(self) -> str:
        return f"<neutralized {self.qualname}>"


class _TensorType(Neutralized):
    qualname = "torch.Tensor"


class _ParameterType(Neutralized):
    qualname = "torch.nn.parameter.Parameter"


def _storage(storage: Any) -> Any:
    # What torch's own persistent_load returns for the file's storage records, and nothing else.
    if type(storage) is not torch.storage.TypedStorage:
        raise pickle.UnpicklingError(f"a tensor is rebuilt from {type(storage).__name__}, not a storage")
    return storage


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int for v in value):
        raise pickle.UnpicklingError(f"a tensor {what} is not a tuple of integers")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    """torch's ``_rebuild_tensor*`` on checked arguments; hooks, metadata and grad flags are dropped."""
    if type(storage_offset) is not int:
        raise pickle.UnpicklingError("a tensor's storage offset is not an integer")
    return torch._utils._rebuild_tensor(_storage(storage), storage_offset, _ints(size, "size"), _ints(stride, "stride"))


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype) or type(storage_offset) is not int:
        raise pickle.UnpicklingError("a tensor's dtype or storage offset is malformed")
    return torch._utils._rebuild_tensor_v3(_storage(storage), storage_offset, _ints(size, "size"),
                                           _ints(stride, "stride"), False, OrderedDict(), dtype)


def _rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    """A parameter's data as a plain tensor: its hooks and Python state are not restored."""
    if type(data) is not torch.Tensor:
        raise pickle.UnpicklingError("a parameter is rebuilt from something other than a tensor")
    return data


_REBUILDERS: set[Callable[..., torch.Tensor]] = {_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter}


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    """A tensor saved with Python attributes: only plain tensors and parameters, rebuilt as plain tensors."""
    if func not in _REBUILDERS or new_type not in (_TensorType, _ParameterType) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("a tensor of a type other than torch.Tensor or Parameter")
    return func(*args)


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 pickles ``bytes``: latin-1 only (no codec lookup by name)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("bytes encoded other than as latin-1")
    return text.encode("latin-1")


def _allowed_globals() -> dict[str, Any]:
    """What the restricted unpickler gives real objects for: torch's tensor machinery and plain containers."""
    allowed: dict[str, Any] = {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch._tensor.Tensor": _TensorType,
        "torch.Tensor": _TensorType,
        "torch.nn.parameter.Parameter": _ParameterType,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.storage.UntypedStorage": torch.UntypedStorage,
        "torch.UntypedStorage": torch.UntypedStorage,
        "collections.OrderedDict": OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "_codecs.encode": _encode,
    }
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[f"torch.{name}"] = getattr(torch, name)
    return allowed


def restricted_pickle(neutralized: list[str]) -> SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose unpickler never imports or calls what the file names.

    ``find_class`` returns real objects only for :func:`_allowed_globals` (torch
    handles storage types itself, before asking); every other global becomes a
    fresh :class:`Neutralized` subclass, and its name is appended to ``neutralized``.
    """
    allowed = _allowed_globals()
    stand_ins: dict[str, type[Neutralized]] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # Protocol 2 names Python 2 modules (__builtin__.set): rename as pickle itself would, as strings only.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            key = f"{module}.{name}"
            if key in allowed:
                return allowed[key]
            if key not in stand_ins:
                stand_ins[key] = type(f"Neutralized[{key}]", (Neutralized,), {"qualname": key})
                neutralized.append(key)
            return stand_ins[key]

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    return SimpleNamespace(__name__="deploykit.restricted_pickle", Unpickler=Unpickler, load=load)


def _tensors(obj: Any) -> tuple[dict[str, torch.Tensor], str] | None:
    """The state dict in a loaded checkpoint: itself, or its ``state_dict`` / ``model`` entry."""
    candidates = [(obj, "")]
    if isinstance(obj, dict):
        candidates += [(obj[k], f"['{k}']") for k in ("state_dict", "model") if k in obj]
    for cand, where in candidates:
        if isinstance(cand, dict) and cand and all(isinstance(k, str) and type(v) in (torch.Tensor, torch.nn.Parameter)
                                                   for k, v in cand.items()):
            return cand, where
    return None


def convert_to_safetensors(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Convert a pickled torch checkpoint to safetensors without running any code it names.

    Returns:
        ``{"tensors": count, "entry": "['state_dict']" or "", "neutralized": [global, ...]}``.

    Raises:
        DeployKitError: a missing or unreadable file, a TorchScript or legacy tar archive
            (formats that torch.load would not unpickle through ``pickle_module``), or no
            state dict of tensors in it.
    """
    from safetensors.torch import save_file

    from deploykit.atomic import atomic_file, check_writable

    p = Path(src)
    if not p.is_file():
        raise DeployKitError(f"weights file {p} does not exist")
    if Path(dst).resolve() == p.resolve():
        raise DeployKitError(f"convert-weights: OUT {dst} is the input file; give a new .safetensors path")
    check_writable(dst, "convert-weights OUT")
    with p.open("rb") as f:
        head = f.read(8)
    if p.suffix == ".safetensors" or _looks_like_safetensors(p, head):
        raise DeployKitError(f"{p} is already a safetensors file: nothing to convert")
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            # torch.load hands such an archive to torch.jit.load, which runs its TorchScript code.
            if any(n.split("/", 1)[-1] == "constants.pkl" for n in z.namelist()):
                raise DeployKitError(f"{p} is a TorchScript archive, not a checkpoint: export its state_dict() from "
                                     "a trusted environment instead")
    elif tarfile.is_tarfile(p):
        raise DeployKitError(f"{p} is a legacy tar checkpoint (torch < 0.4), which is not converted: re-save it with a "
                             "recent torch in a trusted environment")
    neutralized: list[str] = []
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=False, pickle_module=restricted_pickle(neutralized))
    except Exception as e:  # noqa: BLE001 - nothing of the file ran; any failure means a file we cannot convert
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DeployKitError(f"cannot convert {p} (truncated, corrupt, or tensors built from other objects): "
                             f"{msg[:200]}") from None
    found = _tensors(obj)
    if found is None:
        keys = f" (keys: {', '.join(map(str, list(obj)[:8]))})" if isinstance(obj, dict) else ""
        raise DeployKitError(f"{p} holds no state dict of tensors, at the top level or under 'state_dict' or "
                             f"'model'{keys}")
    sd, where = found
    # Fresh contiguous copies through the class's own methods: no attribute set on a loaded
    # object is used, and tensors that shared storage are written separately.
    plain = {k: torch.Tensor.clone(torch.Tensor.detach(v), memory_format=torch.contiguous_format)
             for k, v in sd.items()}
    with atomic_file(dst) as tmp:
        save_file(plain, str(tmp), metadata={"format": "pt", "converted_from": p.name,
                                              "neutralized": ", ".join(neutralized)})
    return {"tensors": len(plain), "entry": where, "neutralized": neutralized}
