"""A fake ``pycuda`` (``pycuda.driver``) over :mod:`fake_gpu`, installed into
``sys.modules`` for one test, with pycuda's context rules (github.com/inducer/pycuda,
``src/cpp/cuda.hpp`` and ``doc/driver.rst``):

* The context stack is per thread (``boost::thread_specific_ptr<context_stack>``).
  ``Device.retain_primary_context()`` returns the primary context *not* made current;
  ``Context.push()`` makes it current in the calling thread; the static ``Context.pop()``
  pops the calling thread's stack ("cannot pop context from empty stack" when empty).
* Allocation, streams, copies and module loads act on the current context: with none
  current in the calling thread they fail (``cuMemAlloc failed: invalid device context``).
* A stack still holding a context when it is cleaned up (at thread exit, or at exit for
  the main thread) aborts the process: "PyCUDA ERROR: The context stack was not empty
  upon module cleanup." (``context_stack::~context_stack``; reported in
  NVIDIA/TensorRT#1107 for TensorRT runners used from threads). Here the abort is
  recorded in :data:`ABORTS` instead, and :func:`main_thread_stack` exposes the main
  thread's stack for an at-exit check.
* ``DeviceAllocation.free()`` and a stream's destruction activate their own context.
"""

from __future__ import annotations

import sys
import threading
import types
import weakref

import numpy as np

import fake_gpu

ABORTS: list[str] = []
ABORT = "PyCUDA ERROR: The context stack was not empty upon module cleanup."


class LogicError(RuntimeError):
    """pycuda._driver.LogicError."""


class _Stack:
    def __init__(self) -> None:
        self.items: list = []
        self.thread = threading.current_thread().name

    def __del__(self) -> None:  # the thread-specific stack dies with its thread
        if self.items:
            ABORTS.append(f"{ABORT} (thread {self.thread})")


_local = threading.local()
_main_stack: list[_Stack] = []


def _stack() -> _Stack:
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = _Stack()
        if threading.current_thread() is threading.main_thread():
            _main_stack[:] = [s]
    return s


def main_thread_stack() -> list:
    """The contexts still pushed in the main thread (pycuda aborts at exit unless empty)."""
    return list(_main_stack[0].items) if _main_stack else []


def _require_context(what: str) -> None:
    if not _stack().items:
        raise LogicError(f"{what} failed: invalid device context")


def _module(device_count: int = 1) -> types.ModuleType:
    drv = types.ModuleType("pycuda.driver")
    drv.LogicError = LogicError
    state = {"init": False}

    def init(flags=0):
        state["init"] = True

    class Context:
        def __init__(self, device):
            self.device = device

        def push(self):
            _stack().items.append(self)

        @staticmethod
        def pop():
            s = _stack()
            if not s.items:
                raise LogicError("m_stack::pop failed: cannot pop context from empty stack")
            s.items.pop()

        @staticmethod
        def get_current():
            s = _stack()
            return s.items[-1] if s.items else None

        def detach(self):
            pass

    class Device:
        def __init__(self, i):
            if not state["init"]:
                raise LogicError("cuDeviceGet failed: initialization error (call pycuda.driver.init())")
            self.i = i

        @staticmethod
        def count():
            return device_count

        def compute_capability(self):
            return fake_gpu.current().cc

        def name(self):
            return fake_gpu.current().name

        def retain_primary_context(self):
            return Context(self)

    class DeviceAllocation:
        def __init__(self, ptr):
            self.ptr = ptr

        def __int__(self):
            return self.ptr

        def free(self):
            fake_gpu.current().free(self.ptr)

    class Stream:
        def __init__(self, flags=0):
            _require_context("cuStreamCreate")
            dev = fake_gpu.current()
            self.handle = dev.create_stream()
            weakref.finalize(self, dev.destroy_stream, self.handle)

        def synchronize(self):
            _require_context("cuStreamSynchronize")
            fake_gpu.current().check_stream(self.handle)

    def mem_alloc(nbytes):
        _require_context("cuMemAlloc")
        return DeviceAllocation(fake_gpu.current().malloc(nbytes))

    def memcpy_htod_async(dest, src, stream=None):
        _require_context("cuMemcpyHtoDAsync")
        fake_gpu.current().write(int(dest), np.asarray(src))

    def memcpy_dtoh_async(dest, src, stream=None):
        _require_context("cuMemcpyDtoHAsync")
        fake_gpu.current().read(dest, int(src))

    def module_from_buffer(buffer, options=None, message_handler=None):
        _require_context("cuModuleLoadDataEx")
        return types.SimpleNamespace(get_function=lambda name: name)

    for obj in (init, Context, Device, DeviceAllocation, Stream, mem_alloc, memcpy_htod_async, memcpy_dtoh_async,
                module_from_buffer):
        setattr(drv, obj.__name__, obj)
    return drv


def install(monkeypatch, device_count: int = 1) -> types.ModuleType:
    """Put the fake ``pycuda`` into ``sys.modules``; returns ``pycuda.driver``."""
    pkg = types.ModuleType("pycuda")
    drv = _module(device_count)
    pkg.driver = drv
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    ABORTS.clear()
    return drv
