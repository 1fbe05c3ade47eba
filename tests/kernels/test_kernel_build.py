"""Builds of the kernels: the host library's ABI, nvcc fatbins (architectures checked in
the output), NVRTC cubins for a chosen architecture with caching, and the fatbin reader."""

from __future__ import annotations

import ctypes
import shutil
import struct

import pytest

from deploykit.errors import DeployKitError
from deploykit.kernels import fatbin, sources
from deploykit.kernels.params import PreprocessParams


def test_host_library_agrees_on_the_params_struct_layout(host):
    lib = host.library()
    assert lib.dk_host_preprocess_params_size() == ctypes.sizeof(PreprocessParams)
    assert lib.dk_host_abi_version() == host.ABI_VERSION


def test_host_build_is_cached_by_source_hash(host, tmp_path, monkeypatch):
    first = host.build()
    assert host.build() == first  # same sources and flags: the cached library
    copy = tmp_path / "kernels"
    shutil.copytree(sources.kernels_dir(), copy)
    (copy / "include" / "deploykit" / "common.h").write_text((copy / "include" / "deploykit" / "common.h").read_text() + "\n// edited\n")
    monkeypatch.setenv("DEPLOYKIT_KERNELS_DIR", str(copy))
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "cache"))
    rebuilt = host.build()
    assert rebuilt != first and rebuilt.is_file() and str(rebuilt).startswith(str(tmp_path / "cache"))


def test_missing_kernel_sources_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_KERNELS_DIR", str(tmp_path))
    with pytest.raises(DeployKitError, match="DEPLOYKIT_KERNELS_DIR"):
        sources.kernels_dir()


def _fake_fatbin(entries: list[tuple[int, int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<HHIQIIHHI", kind, 0x101, 64, len(p), 0, 0, 8, 1, arch).ljust(64, b"\0") + p
                    for kind, arch, p in entries)
    return struct.pack("<IHHQ", fatbin.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_fatbin_reader_lists_sass_and_ptx_architectures(tmp_path):
    path = tmp_path / "k.fatbin"
    path.write_bytes(_fake_fatbin([(2, 75, b"\x7fELF...."), (2, 87, b"x" * 13), (1, 90, b"ptx")]))
    assert fatbin.archs(path) == {"sass": [75, 87], "ptx": [90]}
    with pytest.raises(ValueError, match="fatbinary"):
        fatbin.fatbin_entries(b"not a fatbin at all")


requires_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH (CUDA toolkit absent)")


@requires_nvcc
def test_nvcc_build_has_sass_for_every_target_and_ptx_for_the_newest(tmp_path):
    from deploykit.kernels import build

    report = build.build(tmp_path, (75, 86, 87, 90))
    assert len(report) == len(sources.CUDA_SOURCES)
    for path, found in report.items():
        # Read back independently of build()'s own check.
        assert fatbin.archs(path) == {"sass": [75, 86, 87, 90], "ptx": [90]} == found


@requires_nvcc
def test_nvcc_refuses_an_architecture_it_cannot_target(tmp_path):
    from deploykit.kernels import build

    unsupported = sorted({70, 72} - build.supported_archs(build.nvcc()))
    if not unsupported:
        pytest.skip("this nvcc still targets sm_70 and sm_72")
    with pytest.raises(DeployKitError, match=f"sm_{unsupported[0]}"):
        build.build(tmp_path, (unsupported[0], 87))


def _nvrtc_or_skip():
    from deploykit.kernels import nvrtc

    try:
        nvrtc.version()
    except (DeployKitError, RuntimeError, OSError) as e:
        pytest.skip(f"NVRTC is not loadable here: {e}")
    return nvrtc


@pytest.mark.parametrize("arch", [75, 87])
def test_nvrtc_compiles_for_the_requested_architecture_and_caches(tmp_path, monkeypatch, arch):
    nvrtc = _nvrtc_or_skip()
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    for source in sources.CUDA_SOURCES:
        cubin, cached = nvrtc.compile_cubin(source, arch)
        assert not cached and fatbin.cubin_arch(cubin) == arch
        again, cached = nvrtc.compile_cubin(source, arch)
        assert cached and again == cubin
    assert len(list((tmp_path / "kernels" / "nvrtc").glob("*.cubin"))) == len(sources.CUDA_SOURCES)


def test_nvrtc_unknown_source_lists_valid_ones():
    nvrtc = _nvrtc_or_skip()
    with pytest.raises(DeployKitError, match="preprocess.cu"):
        nvrtc.compile_cubin("nope.cu", 87)
