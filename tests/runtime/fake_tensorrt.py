"""A stand-in ``tensorrt`` module for machines without a GPU, with the enums and the
behaviour of a chosen version (8.5/8.6, 10.x or 11.x), faithful to NVIDIA's sources.

It refuses what the real library refuses, so a test that passes here does not hide a
defect the first GPU would show. Each rule, with where it was read (TensorRT release
branches of github.com/NVIDIA/TensorRT, ``include/`` and ``python/src/infer/pyCore.cpp``;
onnx-tensorrt's ``docs/operators.md``; trtexec's ``samples/common/sampleOptions.cpp``):

* Enum values per version. ``NetworkDefinitionCreationFlag``: 8.x ``kEXPLICIT_BATCH = 0``;
  10.x ``kEXPLICIT_BATCH = 0`` (deprecated) and ``kSTRONGLY_TYPED = 1``; 11.0
  ``kSTRONGLY_TYPED = 0`` ("Deprecated in TensorRT 11.0. Strongly typed mode is always
  enabled ... retained for API compatibility but is ignored"), ``kPREFER_JIT_PYTHON_PLUGINS
  = 1``, ``kPREFER_AOT_PYTHON_PLUGINS = 2`` (NvInfer.h, release/8.6, 10.3, 11.0).
  ``BuilderFlag``: ``kFP16 = 0``, ``kINT8 = 1``, ``kTF32 = 7`` on 8.5/8.6, ``kTF32 = 6`` on
  10.x; 11.0 has no kFP16/kINT8 and keeps ``kTF32 = 6``.
* TF32 is on by default ("Allow (but not require) computations on tensors of type
  DataType::kFLOAT to use TF32 ... rounding the inputs to 10-bit mantissas ... Enabled by
  default", NvInfer.h ``BuilderFlag::kTF32``, 8.6/10.3/11.0). An engine built with it on an
  sm_80+ device rounds weights and inputs to 10-bit mantissas here.
* Strongly typed networks (10.x with the flag, 11.x always) refuse the FP16/INT8 builder
  flags at build time, not at ``set_flag``: trtexec 10.3 clears them itself because
  "setting fp16 mode is not allowed if graph is strongly typed" (sampleOptions.cpp).
* Optimization profiles per execution context on 8.x: "The execution context created will
  call setOptimizationProfile(0) implicitly if there are no other execution contexts
  assigned to optimization profile 0" (NvInferRuntime.h 8.6, ``createExecutionContext``);
  8.5: "For other execution contexts, setOptimizationProfile() must be called with unique
  profile index before calling execute or enqueue"; "If the profile index has not been
  set yet ... -1 will be returned and all calls to enqueueV3()/executeV2() will fail"
  (``getOptimizationProfile``). Sharing one profile needs ``kPROFILE_SHARING_0806``, "defaults
  to false" in 8.6 and on, not changeable, from 10.0 (NvInfer.h ``PreviewFeature``); on 10.x
  and 11.x every new context "will be assigned optimization profile 0".
* ``setInputShape`` returns false on an error (the deprecated ``setBindingDimensions``
  spells it out: "binding dimension is inconsistent with min-max range of the
  optimization profile"); ``getTensorShape`` gives ``-1`` dimensions while input shapes
  are not (validly) set ("there are dynamic dimensions that have not been set yet,
  return Dims{-1, {}}"), NvInferRuntime.h 8.6/10.3.
* ``setTimingCache`` "return[s] true if set successfully, false otherwise"; "A failure will
  be reported if the CUDA device property in the provided cache is different from
  current environment" unless ``ignoreMismatch`` (NvInfer.h 8.6/10.3/11.0).
* Engines are bound to the device and TensorRT version that built them: deserializing
  elsewhere returns None (the Python ``deserialize_cuda_engine`` returns None on failure).
* The ONNX parser supports the operators onnx-tensorrt's ``docs/operators.md`` marks "Y"
  in both the 8.5-GA and 10.x branches; anything else (``QLinearConv``, ``ConvInteger``,
  ...) fails as "No importer registered for op" followed by a failed plugin lookup
  (ModelImporter.cpp). Q/DQ zero points "must be zero" (operators.md 8.5). Networks must
  be explicit-batch on 8.x. A newer IR version or opset only warns, as the parser does
  ("ONNX model has a newer ir_version ... than this parser was built against", a warning:
  onnx/onnx-tensorrt#479).

The builder records every call (``trt.calls``) so tests can assert what deploykit asked
of each version; the engine runs its ONNX file with ONNX Runtime over :mod:`fake_gpu`'s
device memory, so the runner's own logic (shapes, buffers, addresses, streams, context
pool) executes for real. Only the names in ``deploykit.runtime.trt.API_NAMES`` exist.
"""

from __future__ import annotations

import enum
import json
import threading
import types
import weakref

import numpy as np

import fake_gpu
from fake_gpu import FakeCuda  # noqa: F401  (re-exported: the runner tests' CUDA binding)

ENGINE_MAGIC = b"FAKE-TRT-ENGINE\n"
CACHE_MAGIC = b"FAKE-TRT-TIMING\n"

# onnx-tensorrt docs/operators.md: "Y" in both release/8.5-GA and the 10.x branch.
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsNaN LRN LSTM LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul
Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad
ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# The ONNX IR version of the onnx release each parser was built against (onnx-tensorrt
# .gitmodules: 8.5-GA rel-1.12.0 -> IR 8, 8.6-GA v1.13.1 -> IR 8, 10.x v1.16.0 -> IR 10).
PARSER_IR = {8: 8, 10: 10, 11: 10}
MAX_OPSET = {8: 17, 10: 20, 11: 20}  # docs/operators.md: "up to Opset 17" (8.5/8.6); "opset 9 to opset 20" (10.0)


def tf32_round(x: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32's 10-bit mantissa (round to nearest even), still float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def make(version: str, strongly_typed_flag: bool | None = None) -> types.ModuleType:
    """A fake ``tensorrt`` of ``version`` (e.g. ``"8.6.1"``, ``"10.3.0"``, ``"11.0.0"``).

    ``strongly_typed_flag``: whether ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
    exists (default: from 10 on; a later 11.x may drop the deprecated name).
    """
    major, minor = (int(p) for p in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple] = []
    log: list[tuple[str, str]] = []
    trt.calls, trt.log = calls, log
    family = 8 if major < 10 else major

    if major < 10:
        net_flags = {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1}
    elif major == 10:
        net_flags = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    else:
        net_flags = {"STRONGLY_TYPED": 0, "PREFER_JIT_PYTHON_PLUGINS": 1, "PREFER_AOT_PYTHON_PLUGINS": 2}
    if strongly_typed_flag is False:
        net_flags.pop("STRONGLY_TYPED", None)
    elif strongly_typed_flag and "STRONGLY_TYPED" not in net_flags:
        net_flags["STRONGLY_TYPED"] = max(net_flags.values()) + 1
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags)
    if major < 10:
        bflags = {"FP16": 0, "INT8": 1, "TF32": 7}
    elif major == 10:
        bflags = {"FP16": 0, "INT8": 1, "TF32": 6}
    else:
        bflags = {"TF32": 6}
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", bflags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1})
    precision_flags = {getattr(trt.BuilderFlag, n) for n in ("FP16", "INT8") if n in bflags}

    def nptype(dt):
        return {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}[dt]

    trt.nptype = nptype

    def error(msg: str) -> None:
        log.append(("ERROR", msg))

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
            bit = lambda name: name in net_flags and flags & (1 << net_flags[name])  # noqa: E731
            self.explicit_batch = major >= 10 or bool(bit("EXPLICIT_BATCH"))
            self.strongly_typed = major >= 11 or bool(major == 10 and bit("STRONGLY_TYPED"))

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
            from onnx import numpy_helper

            calls.append(("parse_from_file", path))
            try:
                model = onnx.load(path)
            except Exception as e:  # noqa: BLE001 - any unreadable file
                self.errors.append(f"Failed to parse ONNX model from file: {path} ({type(e).__name__})")
                return False
            if not self.network.explicit_batch:
                self.errors.append("Network must have explicit batch (create it with EXPLICIT_BATCH)")
                return False
            if model.ir_version > PARSER_IR[family]:
                log.append(("WARNING", f"ONNX model has a newer ir_version ({model.ir_version}) than this parser "
                                       f"was built against ({PARSER_IR[family]})"))
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
            if opset > MAX_OPSET[family]:
                log.append(("WARNING", f"opset {opset} is newer than the {MAX_OPSET[family]} this parser supports"))
            inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
            for idx, node in enumerate(model.graph.node):
                if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
                    self.errors.append(f"In node {idx} with name: {node.name} and operator: {node.op_type} "
                                       f"(importFallbackPluginImporter): UNSUPPORTED_NODE: No importer registered for "
                                       f"op: {node.op_type}; Plugin not found")
                    return False
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                    zp = inits.get(node.input[2])
                    if zp is not None and np.any(zp != 0):
                        self.errors.append(f"In node {idx} ({node.op_type}): zero point must be zero")
                        return False
            self.network.onnx = path
            for i in model.graph.input:
                if i.name in inits:
                    continue
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
        def __init__(self, device, entries=0):
            self.device, self.entries = device, entries

        def serialize(self):
            header = {"device": self.device[0], "cc": list(self.device[1]), "entries": self.entries}
            return CACHE_MAGIC + json.dumps(header).encode()

    def device_id():
        dev = fake_gpu.current()
        return dev.name, tuple(dev.cc)

    class IBuilderConfig:
        def __init__(self):
            self.flags = {trt.BuilderFlag.TF32}  # on by default (NvInfer.h: "Enabled by default")
            self.cache, self.profiles = None, []

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))
            self.flags.add(flag)

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag))
            self.flags.discard(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def create_timing_cache(self, data):
            data = bytes(data)
            calls.append(("create_timing_cache", data))
            if not data:
                return ITimingCache(device_id())
            if not data.startswith(CACHE_MAGIC):
                error("Failed to create a timing cache from the given blob")
                return None
            header = json.loads(data[len(CACHE_MAGIC):])
            return ITimingCache((header["device"], tuple(header["cc"])), header["entries"])

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            if cache.device != device_id() and not ignore_mismatch:
                error("The timing cache was generated on a device with different CUDA device properties")
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile", dict(profile.shapes)))
            for lo, opt, hi in profile.shapes.values():
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                    return -1
            self.profiles.append(dict(profile.shapes))
            return len(self.profiles) - 1

    class Builder:
        fail = False

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            if Builder.fail or network.onnx is None:
                return None
            if network.strongly_typed and config.flags & precision_flags:
                error("BuilderFlag::kFP16/kINT8 are not allowed on a strongly typed network")
                return None
            dynamic = [t.name for t in network.inputs if any(d < 0 for d in t.shape)]
            if dynamic and (not config.profiles or any(n not in p for p in config.profiles for n in dynamic)):
                error(f"Network has dynamic or shape inputs, but no optimization profile covers {dynamic}")
                return None
            if config.cache is not None:
                config.cache.entries += 1
            name, cc = device_id()
            header = {"onnx": network.onnx, "device": name, "cc": list(cc), "trt": version,
                      "tf32": trt.BuilderFlag.TF32 in config.flags and cc >= (8, 0),
                      "profiles": [{k: [list(s) for s in v] for k, v in p.items()} for p in config.profiles]}
            return ENGINE_MAGIC + json.dumps(header).encode()

    class IExecutionContext:
        def __init__(self, engine, profile):
            self.engine, self.profile, self.shapes, self.addresses = engine, profile, {}, {}

        @property
        def active_optimization_profile(self):
            return self.profile

        def set_optimization_profile_async(self, index, stream_handle):
            fake_gpu.current().check_stream(stream_handle)
            if not 0 <= index < self.engine.num_optimization_profiles:
                error(f"profile index {index} is out of range")
                return False
            if family == 8 and index != self.profile and self.engine.profile_taken(index, self):
                error(f"optimization profile {index} is already used by another execution context")
                return False
            self.profile, self.shapes = index, {}
            return True

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            self.shapes.pop(name, None)
            if self.profile < 0 or name != self.engine.in_name:
                return False
            lo, _, hi = self.engine.profiles[self.profile][name]
            if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                error(f"shape {shape} of {name} is outside the optimization profile [{lo}, {hi}]")
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name):
            if name == self.engine.in_name:
                return self.shapes.get(name, self.engine.in_shape)
            if self.engine.in_name not in self.shapes:
                return tuple(-1 for _ in self.engine.out_shape)
            return (self.shapes[self.engine.in_name][0], *self.engine.out_shape[1:])

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            dev = fake_gpu.current()
            dev.check_stream(stream_handle)
            name, out = self.engine.in_name, self.engine.out_name
            if self.profile < 0 or name not in self.shapes or {name, out} - set(self.addresses):
                error("enqueueV3: no valid optimization profile, input shape or tensor address")
                return False
            shape = self.shapes[name]
            x = np.empty(shape, np.float32)
            dev.read(x, self.addresses[name])
            y = self.engine.run(x)
            dev.write(self.addresses[out], y)
            return True

    class ICudaEngine:
        def __init__(self, header):
            import onnx
            import onnxruntime as ort
            from onnx import numpy_helper

            model = onnx.load(header["onnx"])
            self.tf32 = header["tf32"]
            if self.tf32:
                for init in model.graph.initializer:
                    if init.data_type == onnx.TensorProto.FLOAT:
                        init.CopyFrom(numpy_helper.from_array(tf32_round(numpy_helper.to_array(init)), init.name))
            self.session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            i, o = self.session.get_inputs()[0], self.session.get_outputs()[0]
            self.in_name, self.out_name = i.name, o.name
            self.in_shape = tuple(d if isinstance(d, int) else -1 for d in i.shape)
            self.out_shape = tuple(d if isinstance(d, int) else -1 for d in o.shape)
            self.profiles = [{k: tuple(tuple(s) for s in v) for k, v in p.items()} for p in header["profiles"]]
            self._contexts: weakref.WeakSet = weakref.WeakSet()
            self._lock = threading.Lock()

        def run(self, x):
            return self.session.run(None, {self.in_name: tf32_round(x) if self.tf32 else x})[0]

        @property
        def num_io_tensors(self):
            return 2

        @property
        def num_optimization_profiles(self):
            return max(1, len(self.profiles))

        @property
        def live_contexts(self):
            return len(self._contexts)

        def profile_taken(self, index, asking):
            return any(c is not asking and c.profile == index for c in list(self._contexts))

        def get_tensor_name(self, i):
            return (self.in_name, self.out_name)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == self.in_name else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            return self.in_shape if name == self.in_name else self.out_shape

        def get_tensor_profile_shape(self, name, profile_index):
            return list(self.profiles[profile_index][name])

        def create_execution_context(self):
            with self._lock:
                # 8.x: profile 0 only while no other context holds it; 10+: always 0.
                profile = -1 if family == 8 and self.profile_taken(0, None) else 0
                ctx = IExecutionContext(self, profile)
                self._contexts.add(ctx)
            return ctx

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(ENGINE_MAGIC):
                error("Invalid engine: bad magic")
                return None
            header = json.loads(data[len(ENGINE_MAGIC):])
            if header["trt"] != version:
                error(f"The engine plan file is not compatible with this version of TensorRT, expecting "
                      f"library version {version} got {header['trt']}")
                return None
            name, cc = device_id()
            if tuple(header["cc"]) != cc:
                error(f"The engine plan file is generated on an incompatible device, expecting compute "
                      f"{cc[0]}.{cc[1]} got compute {header['cc'][0]}.{header['cc'][1]}")
                return None
            return ICudaEngine(header)

    for cls in (Logger, ITensor, INetworkDefinition, OnnxParser, IOptimizationProfile, ITimingCache, IBuilderConfig,
                Builder, IExecutionContext, ICudaEngine, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt
