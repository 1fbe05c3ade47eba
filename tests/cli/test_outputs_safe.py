"""Nothing lost, nothing half-written: a failed run leaves every existing output as it was.

Every bad case exits with one line on stderr (2 for bad input; 1 for a failed parity
check, which is not the user's input) and writes nothing: an existing ONNX file and its
sidecar stay byte-identical, no temporary file or directory is left, and the working
directory's listing is unchanged (a model failing parity is kept only as
OUT.failed.onnx, by design).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from deploykit.cli.main import main
from deploykit.errors import DeployKitError
from deploykit.runtime.trt import trt_status
from tests.cli.test_bad_input import run_bad

MODELS = '''
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


class Noisy(Small):
    """PyTorch and its ONNX export disagree: the export traces the other branch."""

    def forward(self, x):
        y = super().forward(x)
        return y if torch.jit.is_tracing() else y + 1.0


class Spectral(nn.Module):
    def forward(self, x):
        return torch.fft.rfft2(x).abs()


class WithFFT(Small):
    def __init__(self):
        super().__init__()
        self.spec = Spectral()

    def forward(self, x):
        return self.fc(self.spec(self.conv(x)).mean((2, 3)))


def noisy():
    return Noisy()


def gray():
    return Small(channels=1)


def fft():
    return WithFFT()
'''

RGB = ["--input-shape", "1x3x16x16"]
GRAY = ["--input-shape", "1x1x16x16"]


@pytest.fixture(scope="module")
def support(tmp_path_factory) -> Path:
    """A directory (outside each test's tmp_path) with the test models and a 3-channel CIFAR-like dataset."""
    d = tmp_path_factory.mktemp("support")
    (d / "dk_outputs_models.py").write_text(textwrap.dedent(MODELS))
    rng = np.random.default_rng(0)
    data = d / "rgb"
    data.mkdir()
    for split in ("train", "test"):
        np.savez(data / f"cifar10_{split}_lossless_000.npz", x=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, 16).astype(np.int64))
    return d


@pytest.fixture
def models(support, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(support))
    return support


@pytest.fixture
def prev(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """An existing prev.onnx with its sidecar (their bytes are all that matters here)."""
    onnx = tmp_path / "prev.onnx"
    onnx.write_bytes(b"previous good model")
    Path(f"{onnx}.json").write_text('{"previous": "sidecar"}\n')
    return onnx, {p.name: p.read_bytes() for p in tmp_path.iterdir()}


def listing(d: Path) -> dict[str, bytes | None]:
    """Every entry under ``d`` (hidden temporaries included) with its bytes."""
    return {str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None) for p in sorted(d.rglob("*"))}


def run_code(args, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return code, lines[0]


# -- a failed parity check ------------------------------------------------------------------
@pytest.mark.usefixtures("models")
def test_failed_parity_keeps_the_previous_onnx_and_names_the_failed_copy(tmp_path, prev, capsys):
    onnx, before = prev
    code, line = run_code(["export", "dk_outputs_models:noisy", *RGB, "--onnx", onnx, "--json", tmp_path / "r.json"],
                          capsys)
    assert code == 1
    assert "parity check failed" in line and "was not written" in line and "prev.failed.onnx" in line
    after = listing(tmp_path)
    assert {k: after[k] for k in before} == before  # prev.onnx and its sidecar byte-identical
    assert sorted(after) == ["prev.failed.onnx", "prev.failed.onnx.json", "prev.onnx", "prev.onnx.json"]  # no --json


# -- everything that can be checked is checked before anything is written ----------------
def _file(t: Path) -> Path:
    (t / "file").write_text("a regular file")
    return t / "file"


no_gpu = pytest.mark.skipif(trt_status().ok, reason="a GPU and TensorRT are present")

EXPORT_CASES = [
    pytest.param(["gray", *GRAY, "--data", "cifar10:{rgb}"], "cannot feed 3-channel images to a 1-channel model",
                 id="data-channels"),
    pytest.param(["gray", *GRAY, "--precision", "int8", "--calib-data", "cifar10:{rgb}"], "cannot feed 3-channel",
                 id="calib-channels"),
    pytest.param(["gray", *GRAY, "--samples", "-5"], "'--samples': -5 is not in the range x>=1", id="samples-negative"),
    pytest.param(["gray", *GRAY, "--samples", "0"], "'--samples': 0 is not in the range x>=1", id="samples-zero"),
    pytest.param(["gray", *GRAY, "--trt", "{tmp}/m.engine"], "--trt needs a CUDA GPU", id="trt-no-gpu",
                 marks=no_gpu),
    pytest.param(["gray", *GRAY, "--opset", "3"], "opset 3 is not supported", id="opset"),
    pytest.param(["gray", *GRAY, "--json", "{file}/r.json"], "--json {file}/r.json cannot be written",
                 id="json-under-file"),
    pytest.param(["gray", *GRAY, "--json", "/proc/deploykit-r.json"], "cannot create files in /proc", id="json-proc"),
    pytest.param(["gray", *GRAY, "--trt", "{file}/m.engine"], "--trt {file}/m.engine cannot be written",
                 id="trt-under-file"),
    pytest.param(["gray", *GRAY, "--bundle", "jetson", "{file}/b"], "--bundle directory {file}/b cannot be written",
                 id="bundle-under-file"),
    pytest.param(["gray", *GRAY, "--bundle", "jetson", "{file}"], "Directory '{file}' is a file",
                 id="bundle-is-file"),
    pytest.param(["gray", *GRAY, "--json", "{tmp}/prev.onnx.json"], "is also the --onnx sidecar", id="json-is-sidecar"),
    pytest.param(["fft", *RGB], "operator aten::fft_rfft2 in module 'spec' (Spectral) is not supported", id="fft"),
]


@pytest.mark.usefixtures("models")
@pytest.mark.parametrize("args, message", EXPORT_CASES)
def test_export_refuses_before_writing(args, message, tmp_path, prev, support, capsys):
    onnx, _ = prev
    file = _file(tmp_path)
    before = listing(tmp_path)
    fill = {"{rgb}": str(support / "rgb"), "{tmp}": str(tmp_path), "{file}": str(file)}
    for key, value in fill.items():
        args = [a.replace(key, value) for a in args]
    line = run_bad(["export", f"dk_outputs_models:{args[0]}", *args[1:], "--onnx", onnx], capsys)
    assert message.replace("{file}", str(file)) in line
    assert listing(tmp_path) == before


@pytest.mark.usefixtures("models")
def test_a_late_failure_removes_everything_and_a_success_replaces_both_files(tmp_path, prev, monkeypatch, capsys):
    import deploykit.export.bundle as bundle

    onnx, _ = prev
    before = listing(tmp_path)

    def broken(*args, **kwargs):
        raise DeployKitError("the bundle could not be written")

    with monkeypatch.context() as m:
        m.setattr(bundle, "write_bundle", broken)  # fails after the ONNX export passed its checks
        line = run_bad(["export", "dk_outputs_models:gray", *GRAY, "--onnx", onnx, "--bundle", "jetson",
                        tmp_path / "b"], capsys)
    assert "the bundle could not be written" in line
    assert listing(tmp_path) == before
    assert main(["export", "dk_outputs_models:gray", *GRAY, "--onnx", str(onnx)]) == 0, capsys.readouterr().err
    after = listing(tmp_path)
    assert sorted(after) == ["prev.onnx", "prev.onnx.json"]  # both replaced, no temporaries left
    assert after["prev.onnx"] != before["prev.onnx"] and b"dk_outputs_models:gray" in after["prev.onnx.json"]


@pytest.mark.usefixtures("models")
def test_trt_engine_and_sidecar_are_staged_with_the_onnx(tmp_path, monkeypatch, capsys):
    """The --trt path without a GPU: a stand-in builder, to check what is moved into place and when."""
    import deploykit.runtime.trt as trt

    def fake_build(onnx_path, engine_path, cfg=None, trt=None):
        assert not (tmp_path / "m.onnx").exists()  # the ONNX file is not in place before the engine is built
        Path(engine_path).write_bytes(b"engine")
        return {"engine": str(engine_path), "tensorrt": "10.0", "strongly_typed": True, "flags": []}

    monkeypatch.setattr(trt, "trt_status", lambda: trt.TrtStatus(True, "stand-in"))
    monkeypatch.setattr(trt, "build_engine", fake_build)
    args = ["export", "dk_outputs_models:gray", *GRAY, "--onnx", tmp_path / "m.onnx", "--trt", tmp_path / "m.engine"]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    assert sorted(listing(tmp_path)) == ["m.engine", "m.engine.json", "m.onnx", "m.onnx.json"]
    assert b'"tensorrt": "10.0"' in (tmp_path / "m.engine.json").read_bytes()
    assert str(tmp_path / "m.engine").encode() in (tmp_path / "m.engine.json").read_bytes()


def test_export_onnx_into_an_existing_directory_is_a_user_error(tmp_path):
    from deploykit.export.onnx import export_onnx
    from deploykit.zoo import build_model

    (tmp_path / "d").mkdir()
    with pytest.raises(DeployKitError, match="is a directory; give the file to write"):
        export_onnx(build_model("cifar:resnet20", pretrained=False), tmp_path / "d")
    assert listing(tmp_path) == {"d": None}


# -- compress: --out that cannot be replaced or written --------------------------------------
def compress(out, *extra):
    return ["compress", "cifar:resnet20", "--target-macs", "0.5", "--criterion", "l1", "--out", out, *extra]


@pytest.mark.parametrize(
    "out, extra, message",
    [
        (".", ["--force"], "--out . is the current directory and cannot be replaced"),
        ("..", ["--force"], "--out .. is an ancestor of the current directory"),
        ("/", ["--force"], "--out / is a filesystem root"),
        (".", ["--resume"], "--out . is the current directory"),
        ("/proc/deploykit-x", [], "--out /proc/deploykit-x cannot be written: cannot create files in /proc"),
        ("file/x", [], "--out file/x cannot be written"),
        ("file", [], "Invalid value for '--out': Directory 'file' is a file"),
        ("art", ["--json", "/proc/deploykit-r.json"], "--json /proc/deploykit-r.json cannot be written"),
        ("art", ["--json", "file/r.json"], "--json file/r.json cannot be written"),
    ],
)
def test_compress_refuses_outputs_before_work(out, extra, message, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    _file(work)
    monkeypatch.chdir(work)
    before = listing(tmp_path)
    line = run_bad(compress(out, *extra), capsys)
    assert message in line
    assert listing(tmp_path) == before


# -- the other subcommands that write ----------------------------------------------------
@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    from deploykit.export.onnx import export_onnx
    from deploykit.zoo import build_model

    path = tmp_path_factory.mktemp("onnx") / "r20.onnx"
    export_onnx(build_model("cifar:resnet20", pretrained=False), path)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "{onnx}", "--json", "file/r.json"], "--json file/r.json cannot be written"),
        (["bench", "{onnx}", "--csv", "file/r.csv"], "--csv file/r.csv cannot be written"),
        (["bench", "{onnx}", "--md", "/proc/deploykit.md"], "--md /proc/deploykit.md cannot be written"),
        (["bench", "{onnx}", "--plot", "file/p.png"], "--plot file/p.png cannot be written"),
        (["eval", "cifar:resnet20", "--data", "digits", "--json", "file/r.json"],
         "--json file/r.json cannot be written"),
        (["inspect", "cifar:resnet20", "--json", "/proc/deploykit-r.json"], "cannot create files in /proc"),
        (["profile", "cifar:resnet20", "--out", "file/lut.json"], "--out file/lut.json cannot be written"),
        (["demo", "--out", "file/demo"], "--out file/demo cannot be written"),
        (["bench", "{onnx}", "--batch", "100000000"], "--batch 100000000 needs at least"),
    ],
)
def test_other_commands_refuse_before_work(args, message, small_onnx, tmp_path, monkeypatch, capsys):
    _file(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    line = run_bad([a.replace("{onnx}", str(small_onnx)) for a in args], capsys)
    assert message in line
    assert listing(tmp_path) == before


def test_bench_memory_estimate_names_what_is_available(small_onnx, capsys):
    line = run_bad(["bench", small_onnx, "--batch", "1,100000000"], capsys)
    assert "GiB" in line and "of memory is available" in line and "give a smaller --batch" in line


# -- --device and bounded numbers ----------------------------------------------------------
def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize(
    "extra, message",
    [
        pytest.param(["--device", "cuda"], "CUDA is not available on this machine; valid here: cpu",
                     marks=pytest.mark.skipif(_cuda(), reason="CUDA is available")),
        pytest.param(["--device", "cuda:0"], "CUDA is not available on this machine",
                     marks=pytest.mark.skipif(_cuda(), reason="CUDA is available")),
        (["--device", "cudafoo"], "--device 'cudafoo' is not a device; valid: cpu, cuda, cuda:N"),
        (["--device", "cuda:x"], "--device 'cuda:x' is not a device"),
        (["--device", "cuda:99"], "--device 'cuda:99'"),
        (["--finetune-epochs", "inf"], "--finetune-epochs inf: Input should be a finite number"),
        (["--finetune-epochs", "nan"], "--finetune-epochs nan: Input should be a finite number"),
        (["--finetune-epochs", "1e9"], "less than or equal to 1000"),
        (["--lr", "inf"], "--lr inf: Input should be a finite number"),
    ],
)
def test_compress_device_and_numbers(extra, message, tmp_path, capsys):
    line = run_bad(compress(tmp_path / "art", *extra), capsys)
    assert message in line
    assert list(tmp_path.iterdir()) == []


# -- modes: what the umask says, like any other tool ------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_artifact_and_onnx_files_are_readable_as_the_umask_says(tmp_path, capsys):
    art, onnx = tmp_path / "art", tmp_path / "m.onnx"
    args = compress(art, "--json", tmp_path / "c.json")
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    args = ["export", art, "--onnx", onnx, "--json", tmp_path / "e.json"]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert modes == {"art": 0o755, "art/model.safetensors": 0o644, "art/plan.json": 0o644, "art/report.json": 0o644,
                     "c.json": 0o644, "m.onnx": 0o644, "m.onnx.json": 0o644, "e.json": 0o644}
