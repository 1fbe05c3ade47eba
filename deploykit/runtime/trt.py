"""TensorRT backend: build engines from ONNX and run them, on TensorRT 8.5/8.6, 10 and 11.

The differences between TensorRT versions live in :func:`features` and the small
functions beside it, and nowhere else:

=========  ==============================  ==========================================
version    network creation flags          precision
=========  ==============================  ==========================================
8.5, 8.6   EXPLICIT_BATCH                  weakly typed: BuilderFlag.FP16 / INT8 let the
                                           builder use the graph's fp16 casts and Q/DQ
10.x       STRONGLY_TYPED                  from the graph (flags would be refused)
11.x       STRONGLY_TYPED where the enum   from the graph; FP16/INT8 flags and
           still has it (always on)        calibrators no longer exist
=========  ==============================  ==========================================

Building uses the name-based API everywhere: ``build_serialized_network``, an
optimization profile for a dynamic batch, a timing cache file reused across builds and
a workspace limit; running uses ``set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3`` on a CUDA stream (8.5+). ``tensorrt`` is a lazy module
(:mod:`deploykit.lazy`), first touched by :func:`trt_status` only after a GPU was found,
and handed out by :func:`require_gpu`: creating a TensorRT runtime without a device logs
an error and the next call segfaults.

Execution contexts and optimization profiles: on 8.5/8.6 a profile serves one context at
a time (only the first context gets profile 0 implicitly, later ones start at -1 and
every enqueue fails until a free profile is set; sharing needs 8.6's opt-in
``kPROFILE_SHARING_0806``). deploykit therefore builds one identical profile per pool
slot on 8.x and gives slot *i* profile *i* explicitly; from 10.0 profiles are shared, one
profile is built and every slot selects profile 0.

TF32: TensorRT enables it by default for FP32 math on Ampere and newer. Deployment builds
keep it (that is the speed users expect); ``BuildConfig(tf32=False)`` clears the flag
for parity checks that compare with PyTorch at FP32 tolerances (the GPU conformance test).

Caches are keyed by what makes an engine or a timing cache valid: the ONNX bytes, the
TensorRT version, the GPU (name and compute capability) and the build settings, so a
cache directory shared by two GPUs rebuilds instead of failing to deserialize.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import queue
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from deploykit.atomic import atomic_file
from deploykit.errors import DeployKitError
from deploykit.lazy import lazy_import
from deploykit.runtime.base import Runner, TensorMeta, onnx_path_of
from deploykit.cuda import cuda_api, gpu_status
from deploykit.kernels.sources import cache_dir

log = logging.getLogger(__name__)

tensorrt = lazy_import("tensorrt", what="TensorRT", install="pip install 'deploykit[gpu]' or use JetPack's")

MIN_VERSION = (8, 5)  # the name-based tensor API and execute_async_v3 (JetPack 5.1 ships 8.5.2)
DEFAULT_WORKSPACE = 1 << 30  # 1 GiB: enough tactics for CNNs, fits a Jetson Orin Nano


@dataclass(frozen=True)
class TrtFeatures:
    """What one TensorRT version needs and offers (the single dispatch point)."""

    version: tuple[int, int]
    explicit_batch_flag: bool  # 8.x: networks must be created with EXPLICIT_BATCH
    strongly_typed_flag: bool  # the STRONGLY_TYPED creation flag exists and is used
    precision_flags: bool  # weakly typed builds need BuilderFlag.FP16 / INT8 to use them
    profile_sharing: bool  # 10+: contexts share profile 0; 8.x: one profile per context


def parse_version(text: str) -> tuple[int, int]:
    """``"10.3.0.26"`` → ``(10, 3)``."""
    parts = (text.split(".") + ["0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise DeployKitError(f"cannot read the TensorRT version {text!r}") from None


def features(trt: ModuleType) -> TrtFeatures:
    """The version-dependent behaviour for the imported ``tensorrt`` module."""
    version = parse_version(getattr(trt, "__version__", "0.0"))
    if version < MIN_VERSION:
        raise DeployKitError(
            f"TensorRT {trt.__version__} is too old: deploykit needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer "
            "(the name-based tensor API and execute_async_v3)"
        )
    has_strong = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    major = version[0]
    return TrtFeatures(
        version=version,
        explicit_batch_flag=major < 10,
        strongly_typed_flag=major >= 10 and has_strong,
        precision_flags=major < 10,
        profile_sharing=major >= 10,
    )


def network_flags(trt: ModuleType, feats: TrtFeatures) -> int:
    """The ``create_network`` flags for this version."""
    flags = 0
    if feats.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if feats.strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def precision_builder_flags(trt: ModuleType, feats: TrtFeatures, precision: str) -> list[Any]:
    """Builder flags a weakly typed build needs to honour the graph's precision."""
    if not feats.precision_flags or precision == "fp32":
        return []
    if precision == "fp16":
        return [trt.BuilderFlag.FP16]
    # Q/DQ (explicit quantization) on 8.6 still needs INT8 enabled; FP16 lets the layers
    # left unquantized run in half precision rather than fp32.
    return [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]


# Every TensorRT name deploykit calls, by class. A test checks them against the real
# bindings when tensorrt imports, and the fake module the CPU tests use provides exactly these.
API_NAMES: dict[str, tuple[str, ...]] = {
    "Logger": ("WARNING",),
    "Builder": ("create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"),
    "IBuilderConfig": ("set_memory_pool_limit", "create_timing_cache", "set_timing_cache", "get_timing_cache",
                       "add_optimization_profile", "set_flag", "clear_flag"),
    "ITimingCache": ("serialize",),
    "IOptimizationProfile": ("set_shape",),
    "OnnxParser": ("parse_from_file", "num_errors", "get_error"),
    "INetworkDefinition": ("num_inputs", "get_input"),
    "ITensor": ("name", "shape"),
    "Runtime": ("deserialize_cuda_engine",),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype", "get_tensor_shape",
                    "create_execution_context", "num_optimization_profiles", "get_tensor_profile_shape"),
    "IExecutionContext": ("set_input_shape", "get_tensor_shape", "set_tensor_address", "execute_async_v3",
                          "set_optimization_profile_async"),
    "MemoryPoolType": ("WORKSPACE",),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "NetworkDefinitionCreationFlag": (),  # EXPLICIT_BATCH (8.x) / STRONGLY_TYPED (10+): see features()
    "BuilderFlag": ("TF32",),  # FP16 / INT8 on 8.x only (see features())
}


def missing_api(trt: ModuleType) -> list[str]:
    """``Class.attr`` names from :data:`API_NAMES` the given module lacks (plus version-specific ones)."""
    feats = features(trt)
    need = {k: list(v) for k, v in API_NAMES.items()}
    if feats.explicit_batch_flag:
        need["NetworkDefinitionCreationFlag"].append("EXPLICIT_BATCH")
    if feats.version[0] == 10:  # 11 may drop the flag: strong typing is then the only mode
        need["NetworkDefinitionCreationFlag"].append("STRONGLY_TYPED")
    if feats.precision_flags:
        need["BuilderFlag"] += ["FP16", "INT8"]
    out = []
    for cls, attrs in need.items():
        obj = getattr(trt, cls, None)
        if obj is None:
            out.append(cls)
            continue
        out += [f"{cls}.{a}" for a in attrs if not hasattr(obj, a)]
    out += [f for f in ("nptype",) if not hasattr(trt, f)]
    return out


# -- availability -------------------------------------------------------------------
@dataclass(frozen=True)
class TrtStatus:
    """Whether TensorRT can run here, and why not."""

    ok: bool
    reason: str


@functools.lru_cache(maxsize=None)
def trt_status() -> TrtStatus:
    """A GPU first (TensorRT without one crashes), then ``import tensorrt``."""
    gpu = gpu_status()
    if not gpu.ok:
        return TrtStatus(False, f"no GPU: {gpu.reason}")
    try:
        tensorrt.module()
    except ImportError as e:  # the lazy module's error: names the package and how to install it
        return TrtStatus(False, str(e))
    return TrtStatus(True, "GPU and TensorRT present")


def require_gpu(onnx_hint: str | Path | None = None) -> ModuleType:
    """``tensorrt``, imported only once a device is known to exist.

    Raises:
        DeployKitError: no GPU or no TensorRT; names the ONNX file to take to a GPU machine.
    """
    status = trt_status()
    if not status.ok:
        where = f"; the ONNX file is {onnx_hint} (build the engine on the target: see its bundle)" if onnx_hint else ""
        raise DeployKitError(f"TensorRT needs a CUDA GPU and none is usable here ({status.reason}){where}")
    return tensorrt.module()


# -- building -----------------------------------------------------------------------
@dataclass
class BuildConfig:
    """Engine build settings.

    Attributes:
        precision: the precision already in the ONNX graph (``fp32``, ``fp16``, ``int8``).
        batch: ``(min, opt, max)`` batch sizes of the optimization profile.
        workspace: workspace memory pool limit in bytes.
        timing_cache: file to load tactic timings from and save them to (None: off).
        tf32: let FP32 math use TF32 on Ampere+ (TensorRT's default); False for parity checks.
        profiles: identical optimization profiles to build, one per execution context
            that runs at once (8.x cannot share a profile between contexts; 10+ can, and
            builds one whatever this says).
    """

    precision: str = "fp32"
    batch: tuple[int, int, int] = (1, 1, 8)
    workspace: int = DEFAULT_WORKSPACE
    timing_cache: str | Path | None = None
    tf32: bool = True
    profiles: int = 1

    def key(self) -> str:
        """The settings that change the engine (not where the timing cache lives)."""
        return f"{self.precision}|{list(self.batch)}|{int(self.workspace)}|tf32={self.tf32}|profiles={self.profiles}"


def profile_count(feats: TrtFeatures, cfg: BuildConfig) -> int:
    """How many optimization profiles a build makes (see :class:`BuildConfig`)."""
    return 1 if feats.profile_sharing else max(1, int(cfg.profiles))


def _attach_timing_cache(config: Any, cache_file: Path | None) -> None:
    """Give the builder the saved timings when they fit this GPU, else a fresh cache.

    ``set_timing_cache`` returns False for a cache made on another device (and
    ``create_timing_cache`` None for a damaged blob): that is not an error, only lost
    speed, so the build goes on with an empty cache and says so in one line.
    """
    blob = cache_file.read_bytes() if cache_file is not None and cache_file.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, False):
        return
    if blob:
        log.warning("timing cache %s does not fit this GPU or TensorRT version: starting a fresh one", cache_file)
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, False):
        raise DeployKitError("TensorRT refused an empty timing cache (see its log above)")


def build_engine(onnx_path: str | Path, engine_path: str | Path, cfg: BuildConfig | None = None,
                 trt: ModuleType | None = None) -> dict[str, Any]:
    """Parse ``onnx_path``, build a serialized engine and write it atomically.

    Args:
        trt: the tensorrt module (tests pass a fake; normally imported after a GPU check).

    Returns:
        ``{"engine": path, "tensorrt": version, "strongly_typed": bool, "flags": [...], ...}``.
    """
    cfg = cfg or BuildConfig()
    trt = trt or require_gpu(onnx_path)
    feats = features(trt)
    if not Path(onnx_path).is_file():
        raise DeployKitError(f"ONNX file {onnx_path} does not exist")
    lo, opt, hi = cfg.batch
    if not 1 <= lo <= opt <= hi:
        raise DeployKitError(f"batch profile must satisfy 1 <= min <= opt <= max, got {cfg.batch}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, feats))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeployKitError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace))
    flags = precision_builder_flags(trt, feats, cfg.precision)
    for flag in flags:
        config.set_flag(flag)
    if not cfg.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    for _ in range(profile_count(feats, cfg)):
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(tensor.shape)
            if any(d < 0 for d in dims[1:]):
                raise DeployKitError(f"input {tensor.name} has dynamic dimensions besides the batch: {dims}")
            profile.set_shape(tensor.name, (lo, *dims[1:]), (opt, *dims[1:]), (hi, *dims[1:]))
        if config.add_optimization_profile(profile) < 0:
            raise DeployKitError(f"TensorRT refused the optimization profile for batch {cfg.batch}")
    cache_file = Path(cfg.timing_cache) if cfg.timing_cache else None
    _attach_timing_cache(config, cache_file)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeployKitError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    with atomic_file(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    timings = config.get_timing_cache() if cache_file is not None else None
    if timings is not None:  # None when the builder kept no cache: nothing to save, not an error
        with atomic_file(cache_file) as tmp:
            tmp.write_bytes(bytes(timings.serialize()))
    return {"engine": str(engine_path), "tensorrt": ".".join(map(str, feats.version)),
            "strongly_typed": feats.strongly_typed_flag or feats.version[0] >= 11,
            "flags": [str(f) for f in flags], "batch_profile": list(cfg.batch), "workspace": int(cfg.workspace),
            "tf32": cfg.tf32, "profiles": profile_count(feats, cfg)}


def device_key(api: Any, trt: ModuleType) -> str:
    """What an engine or a timing cache is bound to: GPU name, compute capability, TensorRT version."""
    major, minor = api.compute_capability(0)
    return f"{api.device_name(0)}|sm_{major}{minor}|trt {trt.__version__}"


def engine_cache_key(onnx_bytes: bytes, api: Any, trt: ModuleType, cfg: BuildConfig) -> str:
    """A short hash of everything a built engine depends on."""
    h = hashlib.sha256(onnx_bytes)
    for part in (device_key(api, trt), cfg.key()):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


# -- running ------------------------------------------------------------------------
class _Slot:
    """One execution context with its own stream, profile and device buffers (one call at a time)."""

    def __init__(self, engine: Any, api: Any, profile: int, share: bool) -> None:
        self.stream = api.stream()
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (ptr, nbytes)
        self.context = engine.create_execution_context()
        self.profile = profile
        # Set explicitly on every version: on 8.x only the first context gets profile 0
        # implicitly; on 10+ it is already 0 and setting it again is harmless.
        if not self.context.set_optimization_profile_async(profile, api.stream_handle(self.stream)):
            self.release(api)
            hint = "" if share else " (TensorRT 8.x: each execution context needs a profile of its own)"
            raise DeployKitError(f"TensorRT refused optimization profile {profile} for an execution context{hint}")
        api.synchronize(self.stream)

    def buffer(self, api: Any, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                api.free(ptr)
                del self.buffers[name]
            ptr, size = api.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def release(self, api: Any) -> None:
        """Free the buffers, drop the context (before its engine goes) and destroy the stream."""
        for ptr, _ in self.buffers.values():
            api.free(ptr)
        self.buffers.clear()
        self.context = None
        api.destroy_stream(self.stream)
        self.stream = None


class TrtRunner(Runner):
    """Run a TensorRT engine; an ONNX file or bundle is built into a cached engine first.

    Thread safety: a pool of ``contexts`` execution contexts, each with its own CUDA
    stream, buffers and optimization profile; a call takes one from the pool and returns
    it when done, inside the CUDA binding's scope for the calling thread (pycuda's
    contexts are per thread: the primary context is pushed and popped around each use).
    """

    backend = "trt"

    def __init__(self, path: str | Path, contexts: int = 2, build: BuildConfig | None = None, trt: ModuleType | None = None,
                 cuda: Any = None) -> None:
        super().__init__()
        self.path, self.contexts, self.build_cfg = Path(path), contexts, build
        self._trt, self._api = trt, cuda
        self._slots: list[_Slot] = []

    def _engine_bytes(self, trt: ModuleType) -> bytes:
        if self.path.suffix in (".engine", ".plan"):
            if not self.path.is_file():
                raise DeployKitError(f"engine file {self.path} does not exist")
            return self.path.read_bytes()
        onnx = onnx_path_of(self.path)
        engines = cache_dir().parent / "engines"
        device = hashlib.sha256(device_key(self.api, trt).encode()).hexdigest()[:12]
        cfg = self.build_cfg or BuildConfig(precision=_sidecar_precision(onnx))
        if cfg.timing_cache is None:
            cfg = dataclasses.replace(cfg, timing_cache=engines / f"timing-{device}.cache")
        cfg = dataclasses.replace(cfg, profiles=max(cfg.profiles, self.contexts))
        engine = engines / f"{onnx.stem}-{engine_cache_key(onnx.read_bytes(), self.api, trt, cfg)}.engine"
        if not engine.is_file():
            build_engine(onnx, engine, cfg, trt=trt)
        return engine.read_bytes()

    def activate_impl(self) -> None:
        hint = self.path if self.path.suffix == ".onnx" else None
        trt = self._trt or require_gpu(hint)
        feats = features(trt)
        self.trt = trt
        self.api = self._api or cuda_api()
        with self.api.scope():
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(self._engine_bytes(trt))
            if self.engine is None:
                raise DeployKitError(f"TensorRT cannot deserialize {self.path}: an engine runs only on the GPU model "
                                     f"and TensorRT version that built it ({device_key(self.api, trt)} here)")
            self._inputs, self._outputs = {}, {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                meta = TensorMeta(name, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))),
                                  tuple(None if d < 0 else int(d) for d in self.engine.get_tensor_shape(name)))
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                (self._inputs if is_input else self._outputs)[name] = meta
            self._pool: queue.Queue[_Slot] = queue.Queue()
            self._slots = []
            wanted = max(1, self.contexts)
            n = wanted if feats.profile_sharing else min(wanted, self.engine.num_optimization_profiles)
            if n < wanted:
                log.warning("%s has %d optimization profile(s): TensorRT %s runs at most that many calls at once",
                            self.path, n, trt.__version__)
            try:
                for i in range(n):
                    self._slots.append(_Slot(self.engine, self.api, 0 if feats.profile_sharing else i,
                                             feats.profile_sharing))
            except BaseException:
                self._release()
                raise
            for s in self._slots:
                self._pool.put(s)
            self._batch_range = self._profile_batches()

    def _profile_batches(self) -> dict[str, tuple[int, int]]:
        """Per input, the batch range every slot's profile accepts (the tightest over slots)."""
        out: dict[str, tuple[int, int]] = {}
        for name, meta in self._inputs.items():
            if not meta.shape or meta.shape[0] is not None:
                continue  # a static batch: the base check already holds it to that size
            try:
                ranges = [self.engine.get_tensor_profile_shape(name, s.profile) for s in self._slots]
                lo, hi = max(int(r[0][0]) for r in ranges), min(int(r[2][0]) for r in ranges)
            except Exception:  # noqa: BLE001 - no readable profile: set_input_shape's own check remains
                continue
            if 1 <= lo <= hi:
                out[name] = (lo, hi)
        return out

    def _release(self) -> None:
        with self.api.scope():
            for s in self._slots:
                s.release(self.api)
            self._slots = []
            self._pool = queue.Queue()  # the pool held the slots (and so the contexts) too
            self.engine, self.runtime = None, None

    def deactivate_impl(self) -> None:
        # Contexts before their engine, the engine before its runtime; streams destroyed.
        self._release()

    def get_input_metadata_impl(self) -> dict[str, TensorMeta]:
        return self._inputs

    def get_output_metadata_impl(self) -> dict[str, TensorMeta]:
        return self._outputs

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        """The base checks, then the batch against the engine's optimization profile."""
        super().check_feed(feed)
        for name, (lo, hi) in self._batch_range.items():
            batch = feed[name].shape[0]
            if not lo <= batch <= hi:
                raise DeployKitError(f"input {name!r} has batch {batch}, outside the engine's optimization profile "
                                     f"({lo}..{hi}); split the batch or rebuild with a larger profile")

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        slot = self._pool.get()
        try:
            with self.api.scope():
                return self._run(slot, feed)
        finally:
            self._pool.put(slot)

    def _run(self, slot: _Slot, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ctx, api, stream = slot.context, self.api, slot.stream
        for name, arr in feed.items():
            arr = np.ascontiguousarray(arr)
            if not ctx.set_input_shape(name, tuple(arr.shape)):
                raise DeployKitError(f"TensorRT refused shape {'x'.join(map(str, arr.shape))} for input {name!r} "
                                     f"(outside optimization profile {slot.profile})")
            ptr = slot.buffer(api, name, arr.nbytes)
            api.htod(ptr, arr, stream)
            ctx.set_tensor_address(name, ptr)
        outs = {}
        for name, meta in self._outputs.items():
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise DeployKitError(f"TensorRT could not infer the shape of output {name!r} ({shape}) "
                                     "from the input shapes given")
            out = np.empty(shape, dtype=meta.dtype)
            ctx.set_tensor_address(name, slot.buffer(api, name, out.nbytes))
            outs[name] = out
        if not ctx.execute_async_v3(api.stream_handle(stream)):
            raise DeployKitError("TensorRT execute_async_v3 failed (see its log)")
        for name, out in outs.items():
            api.dtoh(out, slot.buffers[name][0], stream)
        api.synchronize(stream)
        return outs


def _sidecar_precision(onnx: Path) -> str:
    # Imported here: the sidecar schema pulls in the zoo (and torch), which running an engine does not need.
    from deploykit.export.sidecar import read_sidecar, sidecar_path

    # Validated like every sidecar: a damaged one is one line, not a traceback.
    return (read_sidecar(onnx).get("precision") or "fp32") if sidecar_path(onnx).is_file() else "fp32"
