"""A pretend GPU for the fakes: device identity, memory and streams, shared by the fake
``tensorrt``, the fake ``cuda.bindings``, the fake ``pycuda`` and :class:`FakeCuda`.

Device memory is host memory: a pointer indexes a ``bytearray``. What a real device
refuses is refused here too: an unknown or already freed pointer, a copy past the end of
an allocation, a stream used after it was destroyed. The device's name and compute
capability travel with engines and timing caches (see ``fake_tensorrt``), so "taking an
engine to another GPU" is ``use_device(...)`` in a test.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Device:
    """One GPU: what a driver reports, and its memory."""

    name: str = "NVIDIA Jetson AGX Orin"
    cc: tuple[int, int] = (8, 7)
    mem: dict[int, bytearray] = field(default_factory=dict)
    streams: set[int] = field(default_factory=set)
    destroyed_streams: list[int] = field(default_factory=list)
    freed: list[int] = field(default_factory=list)
    _next: itertools.count = field(default_factory=lambda: itertools.count(0x1000, 0x1000))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def malloc(self, nbytes: int) -> int:
        with self._lock:
            ptr = next(self._next)
            self.mem[ptr] = bytearray(max(int(nbytes), 1))
        return ptr

    def free(self, ptr: int) -> None:
        if ptr not in self.mem:
            raise RuntimeError(f"free of an unknown device pointer {ptr:#x} (double free?)")
        del self.mem[ptr]
        self.freed.append(ptr)

    def buffer(self, ptr: int, nbytes: int) -> memoryview:
        if ptr not in self.mem:
            raise RuntimeError(f"illegal address: {ptr:#x} is not a live allocation")
        if nbytes > len(self.mem[ptr]):
            raise RuntimeError(f"access of {nbytes} bytes past the end of a {len(self.mem[ptr])}-byte allocation")
        return memoryview(self.mem[ptr])[:nbytes]

    def write(self, ptr: int, src: np.ndarray) -> None:
        data = np.ascontiguousarray(src).tobytes()
        self.buffer(ptr, len(data))[:] = data

    def read(self, dst: np.ndarray, ptr: int) -> None:
        dst[...] = np.frombuffer(self.buffer(ptr, dst.nbytes), dtype=dst.dtype).reshape(dst.shape)

    def create_stream(self) -> int:
        with self._lock:
            handle = next(self._next) | 0x1
            self.streams.add(handle)
        return handle

    def check_stream(self, handle: int) -> None:
        if handle and handle not in self.streams:
            raise RuntimeError(f"invalid resource handle: stream {handle:#x} was destroyed or never created")

    def destroy_stream(self, handle: int) -> None:
        self.check_stream(handle)
        self.streams.discard(handle)
        self.destroyed_streams.append(handle)

    @property
    def arch(self) -> int:
        return self.cc[0] * 10 + self.cc[1]


_CURRENT = [Device()]


def current() -> Device:
    """The GPU the fakes run on now."""
    return _CURRENT[0]


def use_device(device: Device) -> Device:
    """Make ``device`` the current GPU (as if the program ran on another machine)."""
    _CURRENT[0] = device
    return device


class FakeCuda:
    """deploykit's ``CudaApi`` protocol over :func:`current` (the runner tests' binding).

    Streams are real handles that must be destroyed; ``live_streams`` and ``mem`` let a
    test check that a deactivated runner released everything.
    """

    name = "fake"
    instance: FakeCuda | None = None

    def __init__(self, device: Device | None = None) -> None:
        self.device = device or current()
        self.created_streams: list[int] = []
        FakeCuda.instance = self

    @property
    def mem(self) -> dict[int, bytearray]:
        return self.device.mem

    @property
    def freed(self) -> list[int]:
        return self.device.freed

    @property
    def live_streams(self) -> set[int]:
        return set(self.created_streams) & self.device.streams

    def device_count(self) -> int:
        return 1

    def compute_capability(self, device: int = 0) -> tuple[int, int]:
        return self.device.cc

    def device_name(self, device: int = 0) -> str:
        return self.device.name

    def malloc(self, nbytes: int) -> int:
        return self.device.malloc(nbytes)

    def free(self, ptr: int) -> None:
        self.device.free(ptr)

    def stream(self) -> int:
        handle = self.device.create_stream()
        self.created_streams.append(handle)
        return handle

    def destroy_stream(self, stream: int) -> None:
        self.device.destroy_stream(stream)

    def stream_handle(self, stream: int) -> int:
        return int(stream)

    def synchronize(self, stream: int) -> None:
        self.device.check_stream(stream)

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.device.check_stream(stream)
        self.device.write(dst, src)

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.device.check_stream(stream)
        self.device.read(dst, src)

    def scope(self):
        import contextlib

        return contextlib.nullcontext()

    def close(self) -> None:
        pass
