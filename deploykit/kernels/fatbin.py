"""Read the architectures out of a CUDA fatbinary or cubin, without cuobjdump.

A fatbin is a 16-byte header (magic 0xBA55ED50, version, header size, payload size)
followed by entries, each with its own header: kind (1 = PTX, 2 = ELF/SASS), header
size, payload size and the target architecture (75 for sm_75). A cubin is an ELF file
whose ``e_flags`` carry the SM in bits 8..15 (CUDA ELF ABI 8 and later) or 0..7 (older).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
_FATBIN_HEADER = struct.Struct("<IHHQ")
_ENTRY_HEADER = struct.Struct("<HHIQIIHHI")  # kind, flags, header size, size, csize, _, minor, major, arch
KINDS = {1: "ptx", 2: "sass"}


@dataclass(frozen=True)
class Entry:
    """One embedded image: ``kind`` is ``"ptx"`` or ``"sass"``; ``arch`` like 86."""

    kind: str
    arch: int
    size: int


def fatbin_entries(data: bytes) -> list[Entry]:
    """The entries of every fatbin in ``data`` (nvcc may concatenate several)."""
    entries, off = [], 0
    while off + _FATBIN_HEADER.size <= len(data):
        magic, _, header, size = _FATBIN_HEADER.unpack_from(data, off)
        if magic != FATBIN_MAGIC:
            break
        pos, end = off + header, off + header + size
        while pos + _ENTRY_HEADER.size <= end:
            kind, _, ehead, esize, _, _, _, _, arch = _ENTRY_HEADER.unpack_from(data, pos)
            entries.append(Entry(KINDS.get(kind, f"kind{kind}"), arch, esize))
            pos += ehead + esize
        off = end
    if not entries:
        raise ValueError("not a CUDA fatbinary (no 0xBA55ED50 header)")
    return entries


def cubin_arch(data: bytes) -> int:
    """The SM architecture a cubin (CUDA ELF) was compiled for."""
    if data[:4] != b"\x7fELF" or data[7] != 0x41:  # ELFOSABI_CUDA
        raise ValueError("not a CUDA cubin (ELF with OS ABI 0x41)")
    abi_version = data[8]
    is64 = data[4] == 2
    flags = struct.unpack_from("<I", data, 0x30 if is64 else 0x24)[0]
    return (flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF


def archs(path: str | Path) -> dict[str, list[int]]:
    """``{"sass": [75, 86, ...], "ptx": [90]}`` for a fatbin or cubin file."""
    data = Path(path).read_bytes()
    if data[:4] == b"\x7fELF":
        return {"sass": [cubin_arch(data)], "ptx": []}
    out: dict[str, list[int]] = {"sass": [], "ptx": []}
    for e in fatbin_entries(data):
        out.setdefault(e.kind, []).append(e.arch)
    return {k: sorted(set(v)) for k, v in out.items()}
