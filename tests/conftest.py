"""Shared fixtures: real data location, an isolated cache, small models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """``$DEPLOYKIT_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("DEPLOYKIT_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real CIFAR-10 data and pretrained weights; skip when absent."""
    d = shared_data()
    if not (d / "cifar10").is_dir():
        pytest.skip(f"real data not found at {d} (set DEPLOYKIT_DATA or place ../shared/data beside the repo)")
    return d


@pytest.fixture(scope="session")
def resnet20_weights(data_dir: Path) -> Path:
    """The pretrained CIFAR ResNet-20 checkpoint."""
    matches = sorted((data_dir / "weights").glob("resnet20-*.th"))
    if not matches:
        pytest.skip(f"no resnet20 checkpoint under {data_dir / 'weights'}")
    return matches[0]


def session_threads() -> int:
    """Torch threads for the session: ``$OMP_NUM_THREADS`` when set, else min(2, CPUs).

    The suite must pass under any thread count (reductions then sum in another order),
    so an explicit ``OMP_NUM_THREADS`` is honoured rather than overridden.
    """
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own cache (the digits demo model trains once in it)."""
    old = os.environ.get("DEPLOYKIT_CACHE")
    os.environ["DEPLOYKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(session_threads())
    yield
    if old is None:
        os.environ.pop("DEPLOYKIT_CACHE", None)
    else:
        os.environ["DEPLOYKIT_CACHE"] = old


@pytest.fixture(autouse=True)
def no_spell_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency checks never wait out a slow spell in tests: fake backends' bases differ from their
    tables' by design, and a real one's timing is not what a test asserts (the waiting itself is
    tested with a scripted timer and clock)."""
    monkeypatch.setattr("deploykit.bench.latency_check.WAIT_S", 0.0)


@pytest.fixture(scope="session")
def digits_model():
    """The trained digits demo model (trained once per session)."""
    from deploykit.zoo import build_model

    return build_model("digits:demo")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests with a reason when no CUDA device is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (none visible: torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
