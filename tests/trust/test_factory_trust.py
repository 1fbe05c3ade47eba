"""A ``module:function`` factory named by a file runs only when the user opts in.

``evilmod.py`` sits in the working directory (and on sys.path), as it would beside an
artifact received from elsewhere: importing it writes an ``imported`` marker, calling its
factory a ``called`` marker. Without the opt-in neither marker may appear, and nothing may
be written; with ``--trust-factory`` / ``trust_factory=True`` the factory runs and the
artifact loads.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import deploykit
from deploykit.cli.main import main
from deploykit.errors import DeployKitError
from tests.cli.test_bad_input import run_bad
from tests.trust import cifar_shards, copy_artifact, shared_artifact, snapshot

EVILMOD = textwrap.dedent('''
    import os
    import pathlib

    MARKERS = pathlib.Path(__file__).resolve().parent.parent / "markers"
    MARKERS.mkdir(exist_ok=True)
    (MARKERS / "imported").write_text("evilmod was imported")


    def factory():
        (MARKERS / "called").write_text("evilmod.factory ran")
        from deploykit.zoo.cifar_resnet import DEPTHS, CifarResNet

        return CifarResNet(DEPTHS["resnet20"])


    factory.input_shape = (1, 3, 32, 32)


    def abort():  # what os:abort would do (os.abort is replaced by a recorder in these tests)
        (MARKERS / "called").write_text("evilmod.abort ran")
        os.abort()


    def broken():
        raise ValueError("boom")


    def interrupted():
        raise KeyboardInterrupt


    def not_a_model():
        return {"weights": 1}
''')

REFUSED = "names the factory 'evilmod:factory', which would run code; pass --trust-factory"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return shared_artifact(tmp_path_factory)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return cifar_shards(tmp_path_factory.mktemp("cifar") / "data")


@pytest.fixture()
def evil(tmp_path, monkeypatch):
    """``evilmod.py`` in the working directory and on sys.path; ``os.abort`` recorded instead of done.

    Yields the markers directory (``imported``, ``called`` appear there when the module is imported / run).
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "evilmod.py").write_text(EVILMOD)
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    sys.modules.pop("evilmod", None)
    aborts: list[str] = []

    def abort() -> None:  # were it called, the test fails instead of the whole run aborting
        aborts.append("os.abort")
        raise AssertionError("os.abort was called")

    monkeypatch.setattr(os, "abort", abort)
    yield tmp_path / "markers"
    sys.modules.pop("evilmod", None)
    assert not aborts


def _evil_artifact(artifact: Path, tmp_path: Path, spec: str = "evilmod:factory") -> Path:
    return copy_artifact(artifact, tmp_path / "received", base_spec=spec)


CLI_ENTRIES = {
    "inspect": lambda art, tmp, data: ["inspect", art],
    "eval": lambda art, tmp, data: ["eval", art, "--data", f"cifar10:{data}"],
    "export": lambda art, tmp, data: ["export", art, "--onnx", tmp / "m.onnx"],
    "compress": lambda art, tmp, data: ["compress", art, "--target-macs", "0.9", "--criterion", "l1", "--out", tmp / "o"],
    "profile": lambda art, tmp, data: ["profile", art, "--out", tmp / "lut.json"],
    "bench": lambda art, tmp, data: ["bench", art, "--backend", "torch", "--runs", "1", "--warmup", "0"],
}


@pytest.mark.parametrize("command", sorted(CLI_ENTRIES))
def test_cli_refuses_a_factory_named_by_plan_json(command, artifact, shards, evil, tmp_path, capsys):
    art = _evil_artifact(artifact, tmp_path)
    before = snapshot(tmp_path)
    line = run_bad(CLI_ENTRIES[command](art, tmp_path, shards), capsys)
    assert f"{art}/plan.json {REFUSED}" in line and all(f in line for f in ("cifar:, digits:", "torchvision:"))
    assert not evil.exists(), "evilmod was imported"
    assert snapshot(tmp_path) == before  # nothing written (not even evilmod's __pycache__)


API_ENTRIES = {
    "deploykit.load": lambda art: deploykit.load(str(art)),
    "deploykit.build_model": lambda art: deploykit.build_model(str(art)),
    "Engine": lambda art: deploykit.Engine(str(art)),
    "Engine(backend=torch)": lambda art: deploykit.Engine(str(art), backend="torch"),
}


@pytest.mark.parametrize("entry", sorted(API_ENTRIES))
def test_python_api_refuses_a_factory_named_by_plan_json(entry, artifact, evil, tmp_path):
    art = _evil_artifact(artifact, tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(DeployKitError) as e:
        API_ENTRIES[entry](art)
    assert REFUSED in str(e.value) and "\n" not in str(e.value)
    assert not evil.exists(), "evilmod was imported"
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("spec", ["os:abort", "sys:exit", "evilmod:abort", "subprocess:getoutput", "builtins:exit"])
def test_plan_json_naming_a_stdlib_or_local_callable_is_refused_before_import(spec, artifact, evil, tmp_path, capsys):
    art = _evil_artifact(artifact, tmp_path, spec)
    line = run_bad(["eval", art, "--data", "digits:test"], capsys)
    assert f"names the factory {spec!r}, which would run code" in line
    assert not evil.exists()


def test_trust_factory_runs_it_everywhere(artifact, shards, evil, tmp_path, capsys):
    art = _evil_artifact(artifact, tmp_path)
    assert main(["inspect", str(art), "--trust-factory"]) == 0
    assert (evil / "imported").is_file() and (evil / "called").is_file()
    (evil / "called").unlink()
    assert main(["eval", str(art), "--data", f"cifar10:{shards}", "--trust-factory"]) == 0
    assert "top-1" in capsys.readouterr().out
    assert main(["export", str(art), "--onnx", str(tmp_path / "m.onnx"), "--trust-factory"]) == 0
    assert (tmp_path / "m.onnx").is_file()
    (evil / "called").unlink()
    assert main(["bench", str(art), "--backend", "torch", "--runs", "1", "--warmup", "0", "--trust-factory"]) == 0
    assert (evil / "called").is_file()
    for load in (lambda: deploykit.load(str(art), trust_factory=True),
                 lambda: deploykit.build_model(str(art), trust_factory=True)):
        (evil / "called").unlink()
        assert load().base_spec == "evilmod:factory" and (evil / "called").is_file()
    (evil / "called").unlink()
    with deploykit.Engine(str(art), trust_factory=True) as engine:
        assert len(engine.predict(np.zeros((32, 32, 3), np.uint8)).labels) == 5
    assert (evil / "called").is_file()


def test_compress_an_untrusted_artifact_only_with_trust_factory(artifact, evil, tmp_path, capsys):
    art = _evil_artifact(artifact, tmp_path)
    out = tmp_path / "again"
    assert main(["compress", str(art), "--target-macs", "0.9", "--criterion", "l1", "--out", str(out), "--trust-factory"]) == 0
    assert (evil / "called").is_file()
    assert deploykit.load(str(out), trust_factory=True).base_spec == "evilmod:factory"


def test_a_factory_the_user_names_runs_without_opt_in(evil, capsys):
    assert main(["inspect", "evilmod:factory"]) == 0
    assert (evil / "called").is_file()
    assert deploykit.build_model("evilmod:factory").spec == "evilmod:factory"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sys:exit", "model factory 'sys:exit' raised SystemExit"),
        ("evilmod:broken", "model factory 'evilmod:broken' raised ValueError: boom"),
        ("evilmod:interrupted", "model factory 'evilmod:interrupted' raised KeyboardInterrupt"),
        ("evilmod:not_a_model", "evilmod:not_a_model returned dict, not a torch.nn.Module"),
        ("os:getcwd", "os:getcwd returned str, not a torch.nn.Module"),
        ("evilmod:missing", "module 'evilmod' has no callable 'missing'"),
        ("no_such_module_x:make", "no importable module"),
    ],
)
def test_a_failing_factory_is_one_line_exit_2(spec, message, evil, capsys):
    line = run_bad(["inspect", spec], capsys)
    assert message in line


def test_sys_exit_in_a_trusted_plan_is_exit_2_not_0(artifact, shards, evil, tmp_path, capsys):
    art = _evil_artifact(artifact, tmp_path, "sys:exit")
    line = run_bad(["eval", art, "--data", f"cifar10:{shards}", "--trust-factory", "--json", tmp_path / "r.json"], capsys)
    assert "model factory 'sys:exit' raised SystemExit" in line
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("entry", [lambda art: deploykit.build_model(str(art), trust_factory="no"),
                                   lambda art: deploykit.Engine(str(art), trust_factory=1)], ids=["build_model", "Engine"])
def test_the_opt_in_is_a_bool_not_anything_truthy(entry, artifact, evil, tmp_path):
    art = _evil_artifact(artifact, tmp_path)
    with pytest.raises(DeployKitError, match="valid: True or False"):
        entry(art)
    assert not evil.exists()
