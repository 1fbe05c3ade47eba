"""``deploykit convert-weights``: a checkpoint weights_only refuses becomes safetensors without running its code."""

from __future__ import annotations

import argparse
import builtins
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deploykit.cli.main import main
from deploykit.zoo.weights import read_state_dict
from tests.cli.test_bad_input import run_bad


class Exec:
    """Unpickling runs ``exec`` on a line that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class System:
    """Unpickling runs ``os.system`` (pickled as posix.system) to create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Getattr:
    """Unpickling reaches ``Path.touch`` through ``builtins.getattr`` (how protocol 2 pickles a method)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())  # the bound method pickles as getattr(marker, "touch")


def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4),
          "bn.num_batches_tracked": torch.tensor(7)}
    sd["view"] = sd["conv.weight"][1]  # shares storage with conv.weight
    return sd


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
@pytest.mark.parametrize("payload", [Exec, System])
def test_malicious_checkpoint_converts_without_running_code(payload, legacy, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    src, dst = tmp_path / "ckpt.pth", tmp_path / "w.safetensors"
    sd = state()
    torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1), "hook": payload(marker)}, src,
               _use_new_zipfile_serialization=not legacy)

    code = main(["convert-weights", str(src), str(dst)])
    out = capsys.readouterr().out
    assert code == 0
    assert not marker.exists()
    assert "neutralized (never imported or called): argparse.Namespace, " in out
    assert ("builtins.exec" if payload is Exec else "posix.system") in out
    got = load_file(str(dst))
    assert set(got) == set(sd) and all(torch.equal(got[k], v) for k, v in sd.items())
    assert read_state_dict(dst).keys() == sd.keys()  # --weights takes it
    assert files(tmp_path) == ["ckpt.pth", "w.safetensors"]

    # The payload is live: unpickling it the ordinary way does create the marker.
    torch.load(src, weights_only=False)
    assert marker.exists()


def test_getattr_payload_is_neutralized_too(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    src = tmp_path / "ckpt.pth"
    with src.open("wb") as f:
        pickle.dump({"state_dict": state(), "x": Getattr(marker)}, f, protocol=2)  # not torch.save: raw pickle
    line = run_bad(["convert-weights", src, tmp_path / "w.safetensors"], capsys)  # a raw pickle is no checkpoint
    assert "cannot convert" in line
    assert not marker.exists()
    torch.save({"state_dict": state(), "x": Getattr(marker)}, src, pickle_protocol=2)
    assert main(["convert-weights", str(src), str(tmp_path / "w.safetensors")]) == 0
    assert "builtins.getattr" in capsys.readouterr().out
    assert not marker.exists()


def test_rejected_pickle_says_how_to_convert_and_the_conversion_loads(tmp_path, capsys):
    from deploykit.zoo import build_model

    sd = build_model("cifar:resnet20", pretrained=False).model.state_dict()
    src, dst = tmp_path / "r20.th", tmp_path / "r20.safetensors"
    torch.save({"state_dict": sd, "args": argparse.Namespace(arch="resnet20"), "best_prec1": 91.7}, src)
    line = run_bad(["inspect", "cifar:resnet20", "--weights", src], capsys)
    assert f"weights {src} contains Python objects other than tensors (weights_only refused: argparse.Namespace); " \
           f"convert it without running code: deploykit convert-weights {src} OUT.safetensors" in line
    assert "weights_only=False" not in line
    assert main(["convert-weights", str(src), str(dst)]) == 0
    assert main(["inspect", "cifar:resnet20", "--weights", str(dst)]) == 0, capsys.readouterr().err


def test_top_level_payload_is_not_run_and_not_converted(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    src = tmp_path / "evil.pt"
    torch.save(Exec(marker), src)
    line = run_bad(["convert-weights", src, tmp_path / "w.safetensors"], capsys)
    assert "holds no state dict of tensors" in line
    assert not marker.exists() and files(tmp_path) == ["evil.pt"]


def test_a_tensor_rebuilt_from_a_neutralized_object_is_refused(tmp_path, capsys):
    marker = tmp_path / "MARKER"

    class Forged:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (Exec(marker), 0, (2,), (1,), False, {}))

    src = tmp_path / "forged.pt"
    torch.save({"w": Forged()}, src)
    line = run_bad(["convert-weights", src, tmp_path / "w.safetensors"], capsys)
    assert "cannot convert" in line and "not a storage" in line
    assert not marker.exists() and files(tmp_path) == ["forged.pt"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), t / "in.pt"), "is a TorchScript archive"),
        (lambda t: (t / "in.pt").write_bytes(b"not a pickle at all"), "cannot convert"),
        (lambda t: torch.save([1, 2, 3], t / "in.pt"), "holds no state dict of tensors"),
        (lambda t: None, "does not exist"),
    ],
    ids=["torchscript", "garbage", "no-tensors", "missing"],
)
def test_unconvertible_inputs(make, message, tmp_path, capsys):
    make(tmp_path)
    before = files(tmp_path)
    line = run_bad(["convert-weights", tmp_path / "in.pt", tmp_path / "w.safetensors"], capsys)
    assert message in line
    assert files(tmp_path) == before


def test_out_is_checked_before_reading(tmp_path, capsys):
    src = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state()}, src)
    (tmp_path / "file").write_text("x")
    assert "cannot be written" in run_bad(["convert-weights", src, tmp_path / "file" / "w.safetensors"], capsys)
    assert "is the input file" in run_bad(["convert-weights", src, src], capsys)
    assert files(tmp_path) == ["ckpt.pth", "file"]
