"""Fixtures for the kernel tests: the host library is built once per session with g++."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def host():
    """The host build of the kernels (skips when there is no C++ compiler)."""
    if shutil.which("g++") is None:
        pytest.skip("no g++: the host kernel library cannot be built here")
    from deploykit.kernels import host as host_mod

    host_mod.library()
    return host_mod
