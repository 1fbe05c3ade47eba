"""A stand-in ``tensorrt`` module for machines without a GPU, with the attributes of a
chosen version (8.6, 10.x or 11.x), and a NumPy-backed CUDA API.

The builder records every call, so tests can assert what deploykit asked of each
version. Its "engine" remembers the ONNX file and runs it with ONNX Runtime, so the
TensorRT runner's own logic (shapes, buffers, addresses, stream handling, context
pool) runs for real against it. It provides only the names in
``deploykit.runtime.trt.API_NAMES``: calling anything else fails like a missing API.
"""

from __future__ import annotations

import enum
import itertools
import types

import numpy as np

ENGINE_MAGIC = b"FAKE-TRT-ENGINE\n"


def make(version: str, strongly_typed_flag: bool | None = None) -> types.ModuleType:
    """A fake ``tensorrt`` of ``version`` (e.g. ``"8.6.1"``, ``"10.3.0"``, ``"11.0.0"``).

    ``strongly_typed_flag``: whether ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
    exists (default: from 10 on; an 11.x may have dropped it, strong typing being the
    only mode).
    """
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple] = []
    trt.calls = calls

    flags = {}
    if major < 11:
        flags["EXPLICIT_BATCH"] = 0
    if (major >= 10) if strongly_typed_flag is None else strongly_typed_flag:
        flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags or {"_NONE": 9})
    bflags = {"TF32": 0}
    if major < 11:
        bflags.update(FP16=1, INT8=2)
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", bflags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1})

    def nptype(dt):
        return {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}[dt]

    trt.nptype = nptype

    class Logger:
        WARNING = 2

        def __init__(self, severity=2):
            self.severity = severity

    class ITensor:
        def __init__(self, name, shape):
            self._name, self._shape = name, shape

        name = property(lambda self: self._name)
        shape = property(lambda self: self._shape)

    class INetworkDefinition:
        def __init__(self, flags):
            self.flags, self.inputs, self.onnx = flags, [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            import onnx

            calls.append(("parse_from_file", path))
            try:
                model = onnx.load(path)
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"cannot read {path}: {e}")
                return False
            self.network.onnx = path
            for i in model.graph.input:
                dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in i.type.tensor_type.shape.dim)
                self.network.inputs.append(ITensor(i.name, dims))
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class ITimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"fresh-cache"

        def serialize(self):
            return self.data + b"+1"

    class IBuilderConfig:
        def __init__(self, strongly_typed):
            self.strongly_typed, self.flags, self.cache = strongly_typed, [], None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            if self.strongly_typed and flag in (getattr(trt.BuilderFlag, "FP16", None), getattr(trt.BuilderFlag, "INT8", None)):
                raise TypeError("precision flags are not allowed on a strongly typed network")
            calls.append(("set_flag", flag))
            self.flags.append(flag)

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return ITimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile", dict(profile.shapes)))
            return 0

    class Builder:
        fail = False

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig(major >= 11 or bool(self._strong))

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            if Builder.fail or network.onnx is None:
                return None
            return ENGINE_MAGIC + network.onnx.encode()

        @property
        def _strong(self):
            last = next((c for c in reversed(calls) if c[0] == "create_network"), ("", 0))
            return major >= 10 and last[1] & (1 << 1)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0]
            return (batch, *self.engine.out_shape[1:])

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            api = FakeCuda.instance
            name = self.engine.in_name
            x = np.frombuffer(api.mem[self.addresses[name]], dtype=np.float32,
                              count=int(np.prod(self.shapes[name]))).reshape(self.shapes[name])
            y = self.engine.session.run(None, {name: x})[0]
            api.mem[self.addresses[self.engine.out_name]][: y.nbytes] = y.tobytes()
            return True

    class ICudaEngine:
        def __init__(self, onnx_path):
            import onnxruntime as ort

            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
            self.in_name, self.out_name = i.name, o.name
            self.in_shape = tuple(d if isinstance(d, int) else -1 for d in i.shape)
            self.out_shape = tuple(d if isinstance(d, int) else -1 for d in o.shape)

        @property
        def num_io_tensors(self):
            return 2

        def get_tensor_name(self, i):
            return (self.in_name, self.out_name)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == self.in_name else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            return self.in_shape if name == self.in_name else self.out_shape

        def create_execution_context(self):
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(ENGINE_MAGIC):
                return None
            return ICudaEngine(data[len(ENGINE_MAGIC):].decode())

    for cls in (Logger, ITensor, INetworkDefinition, OnnxParser, IOptimizationProfile, ITimingCache, IBuilderConfig,
                Builder, IExecutionContext, ICudaEngine, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt


class FakeCuda:
    """A CUDA API over host memory: pointers index bytearrays."""

    name = "fake"
    instance: FakeCuda | None = None

    def __init__(self):
        self.mem: dict[int, bytearray] = {}
        self._next = itertools.count(0x1000, 0x1000)
        self.freed: list[int] = []
        FakeCuda.instance = self

    def device_count(self):
        return 1

    def compute_capability(self, device=0):
        return (8, 7)

    def device_name(self, device=0):
        return "fake"

    def malloc(self, nbytes):
        ptr = next(self._next)
        self.mem[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr):
        self.mem.pop(ptr)
        self.freed.append(ptr)

    def stream(self):
        return object()

    def stream_handle(self, stream):
        return id(stream)

    def synchronize(self, stream):
        pass

    def htod(self, dst, src, stream):
        self.mem[dst][: src.nbytes] = np.ascontiguousarray(src).tobytes()

    def dtoh(self, dst, src, stream):
        dst[...] = np.frombuffer(self.mem[src], dtype=dst.dtype, count=dst.size).reshape(dst.shape)
