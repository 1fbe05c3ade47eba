"""Fuzz the npz shard loader: a seeded generator of mutations of a valid tiny shard.

Each case must give a valid dataset or a DeployKitError with one line naming the
file, never another exception, never a large allocation, and never a write.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deploykit.data import load_dataset
from deploykit.errors import DeployKitError

SEED = 20240611
CASES = 400
NUM_CLASSES = 10  # CIFAR-10's label range
NAME = "cifar10_test_lossless_000.npz"

Members = dict[str, bytes]


def npy(arr: np.ndarray) -> bytes:
    """``arr`` as .npy bytes (object arrays pickled, as numpy.savez writes them)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=True)
    return buf.getvalue()


def raw_npy(header: str, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """A hand-made .npy whose header says whatever it is told (a lying shape, garbage)."""
    text = header.encode("latin1")
    size = 2 if version[0] == 1 else 4
    pad = -(10 + size - 4 + len(text) + 1) % 64
    body = text + b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + len(body).to_bytes(size, "little") + body + data


def valid(rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """A small valid shard: uint8 N×H×W×C (C 1 or 3) and N labels in range."""
    n, h, w, c = rng.randint(1, 5), rng.randint(1, 6), rng.randint(1, 6), rng.choice((1, 3))
    g = np.random.default_rng(rng.randrange(1 << 30))
    x = g.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    y = g.integers(0, NUM_CLASSES, n).astype(rng.choice(("<i8", "<i4", "<u1", ">i2", "<u8")))
    if rng.random() < 0.3:
        x = np.asfortranarray(x)
    return x, y


def _valid_members(rng: random.Random) -> Members:
    x, y = valid(rng)
    return {"x.npy": npy(x), "y.npy": npy(y)}


# Each mutation: (members, expectation) where expectation is "ok", "error" or "either".
def m_valid(rng: random.Random) -> tuple[Members, str]:
    members = _valid_members(rng)
    return members, "ok"


def m_extra_keys(rng: random.Random) -> tuple[Members, str]:
    members = _valid_members(rng)
    extra = rng.choice([np.arange(3), np.array(["a", "b"]), np.array([{"a": 1}], dtype=object), np.zeros(())])
    members[rng.choice(["test_index.npy", "meta.npy", "x2.npy", "notnpy.txt"])] = npy(extra)
    return members, "ok"


def m_missing_key(rng: random.Random) -> tuple[Members, str]:
    members = _valid_members(rng)
    for k in rng.sample(sorted(members), rng.randint(1, 2)):
        data = members.pop(k)
        if rng.random() < 0.5:
            members[rng.choice(["images.npy", "X.npy", k.upper(), k.removesuffix(".npy")])] = data
    return members, "error"


def m_x_dtype(rng: random.Random) -> tuple[Members, str]:
    x, y = valid(rng)
    dt = rng.choice(["float32", "float64", "int8", "int16", "uint16", "bool", "<U3", "S2", "complex64", "object"])
    bad = x.astype(dt) if dt != "object" else np.array(x.tolist(), dtype=object)
    return {"x.npy": npy(bad), "y.npy": npy(y)}, "error"


def m_y_dtype(rng: random.Random) -> tuple[Members, str]:
    x, y = valid(rng)
    dt = rng.choice(["float32", "float64", "bool", "<U2", "S2", "complex64", "object", "V8"])
    if dt == "object":
        bad = np.array([str(v) for v in y], dtype=object)
    elif dt == "V8":
        bad = np.zeros(len(y), dtype=[("a", "<i4"), ("b", "<i4")])
    else:
        bad = y.astype(dt)
    return {"x.npy": npy(x), "y.npy": npy(bad)}, "error"


def m_x_shape(rng: random.Random) -> tuple[Members, str]:
    x, y = valid(rng)
    ndim = rng.choice([0, 1, 2, 3, 5, 6, 4])
    dims = [rng.randint(0, 4) for _ in range(ndim)]
    if ndim == 4:
        dims[0] = len(y)
        dims[3] = rng.choice([0, 2, 4, 5])  # never a valid channel count
    bad = np.zeros(dims, dtype=np.uint8)
    return {"x.npy": npy(bad), "y.npy": npy(y)}, "error"


def m_y_shape(rng: random.Random) -> tuple[Members, str]:
    x, y = valid(rng)
    bad = rng.choice([y.reshape(-1, 1), y.reshape(1, -1), np.array(y[0]), np.stack([y, y], 1)])
    return {"x.npy": npy(x), "y.npy": npy(bad)}, "error"


def m_lengths(rng: random.Random) -> tuple[Members, str]:
    x, y = valid(rng)
    k = rng.choice([0, len(y) + rng.randint(1, 3)] + ([rng.randint(0, len(y) - 1)] if len(y) > 1 else []))
    bad = np.resize(y, k) if k else y[:0]
    return {"x.npy": npy(x), "y.npy": npy(bad)}, "error"


def m_empty(rng: random.Random) -> tuple[Members, str]:
    x, y = valid(rng)
    shape = rng.choice([(0, *x.shape[1:]), (len(y), 0, x.shape[2], x.shape[3]), (len(y), x.shape[1], 0, x.shape[3])])
    return {"x.npy": npy(np.zeros(shape, np.uint8)), "y.npy": npy(y if shape[0] else y[:0])}, "error"


def m_labels(rng: random.Random) -> tuple[Members, str]:
    x, y = valid(rng)
    y = y.astype(np.int64)
    y[rng.randrange(len(y))] = rng.choice([-1, -(2**40), NUM_CLASSES, 19, 2**62])
    return {"x.npy": npy(x), "y.npy": npy(y)}, "error"


def m_huge_shape(rng: random.Random) -> tuple[Members, str]:
    """A header declaring far more data than the member holds: refused before allocating."""
    x, y = valid(rng)
    n = rng.choice([10**6, 10**9, 2**40, 2**62])
    shape = (n, 32, 32, 3)
    key = rng.choice(["x", "y"])
    members = {"x.npy": npy(x), "y.npy": npy(y)}
    if key == "x":
        members["x.npy"] = raw_npy(f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}", x.tobytes())
    else:
        members["y.npy"] = raw_npy(f"{{'descr': '<i8', 'fortran_order': False, 'shape': ({n},), }}", y.tobytes())
    return members, "error"


def m_header(rng: random.Random) -> tuple[Members, str]:
    """Garbage, hostile or odd-version .npy headers."""
    x, y = valid(rng)
    header = rng.choice([
        "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2",
        "__import__('os').system('touch pwned')",
        "{'descr': 'not-a-dtype', 'fortran_order': False, 'shape': (1, 1, 1, 1), }",
        "{'descr': '|u1', 'fortran_order': 'maybe', 'shape': (1, 1, 1, 1), }",
        "{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 1, 1, 1), }",
        "{'descr': '|u1', 'fortran_order': False, 'shape': (1.5, 1, 1, 1), }",
        "{'descr': '|u1', 'shape': (1, 1, 1, 1), }",
        "{'descr': '|O', 'fortran_order': False, 'shape': (1, 1, 1, 1), }",
        "[" * 5000,
        "",
    ])
    version = rng.choice([(1, 0), (2, 0), (3, 0), (9, 9), (0, 0)])
    return {"x.npy": raw_npy(header, b"\x00" * 8, version), "y.npy": npy(y)}, "error"


def m_trailing(rng: random.Random) -> tuple[Members, str]:
    """A member holding more bytes than its header declares."""
    x, y = valid(rng)
    return {"x.npy": npy(x) + bytes(rng.randint(1, 64)), "y.npy": npy(y)}, "error"


MUTATIONS: list[Callable[[random.Random], tuple[Members, str]]] = [
    m_valid, m_extra_keys, m_missing_key, m_x_dtype, m_y_dtype, m_x_shape, m_y_shape, m_lengths, m_empty,
    m_labels, m_huge_shape, m_header, m_trailing,
]


def zipped(members: Members, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def damage(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage to a whole file: truncate, flip, splice, or replace it."""
    kind = rng.choice(["truncate", "flip", "flip", "splice", "garbage", "empty", "text"])
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "splice":
        i = rng.randrange(len(data))
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))) + data[i:]
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 512)))
    if kind == "empty":
        return b""
    return b"x,y\n1,2\n"


def make_case(i: int) -> tuple[bytes, str, str]:
    """The i-th case: file bytes, what it is, and the expectation ("ok", "error" or "either")."""
    rng = random.Random(SEED * 1000 + i)
    mutation = MUTATIONS[i % len(MUTATIONS)]
    members, expect = mutation(rng)
    data = zipped(members, rng)
    what = mutation.__name__
    # A third of the cases get byte-level damage too: then anything may happen, but only cleanly.
    if rng.random() < 0.33:
        data = damage(data, rng)
        what, expect = f"{what}+damage", "either"
    return data, what, expect


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("block", range(4))
def test_npz_loader_fuzz(block, tmp_path, monkeypatch):
    """Every mutation: a valid dataset or one clean DeployKitError line naming the file; nothing written."""
    monkeypatch.chdir(tmp_path)  # a hostile header that ran code would write here
    d = tmp_path / "c"
    d.mkdir()
    f = d / NAME
    seen = {"ok": 0, "error": 0}
    for i in range(block, CASES, 4):
        data, what, expect = make_case(i)
        f.write_bytes(data)
        before = _snapshot(tmp_path)
        try:
            ds = load_dataset(f"cifar10:{d}:test")
        except DeployKitError as e:
            msg = str(e)
            assert expect != "ok", f"case {i} ({what}) was refused: {msg}"
            assert "\n" not in msg and str(f) in msg, f"case {i} ({what}): {msg!r}"
            seen["error"] += 1
        else:
            assert expect != "error", f"case {i} ({what}) was accepted"
            assert ds.images.dtype == np.uint8 and ds.images.ndim == 4 and ds.images.shape[-1] in (1, 3)
            assert ds.labels.dtype == np.int64 and ds.labels.shape == (len(ds.images),)
            assert len(ds) > 0 and 0 <= ds.labels.min() and ds.labels.max() < NUM_CLASSES
            seen["ok"] += 1
        assert _snapshot(tmp_path) == before, f"case {i} ({what}) wrote something"
    assert seen["ok"] and seen["error"]  # the generator exercises both outcomes
