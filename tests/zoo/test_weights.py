import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from deploykit.errors import DeployKitError
from deploykit.zoo.weights import load_weights, read_state_dict


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_safetensors_and_wrapped_checkpoint_load(tmp_path):
    src, dst = _net(), _net()
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    load_weights(dst, tmp_path / "w.safetensors")
    assert torch.equal(src[0].weight, dst[0].weight)
    # A DataParallel checkpoint wrapped in {"state_dict": ...}, as the CIFAR ResNets ship.
    wrapped = {"best_prec1": 1.0, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}
    torch.save(wrapped, tmp_path / "w.th")
    dst2 = _net()
    load_weights(dst2, tmp_path / "w.th")
    assert torch.equal(src[1].running_mean, dst2[1].running_mean)


def test_truncated_and_corrupt_files_are_user_errors(tmp_path):
    save_file(_net().state_dict(), str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DeployKitError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "junk.th").write_bytes(b"not a checkpoint at all")
    with pytest.raises(DeployKitError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "junk.th")
    with pytest.raises(DeployKitError, match="does not exist"):
        read_state_dict(tmp_path / "missing.th")


def test_mismatched_weights_name_the_keys(tmp_path):
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 2, 1))
    save_file(other.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(DeployKitError) as e:
        load_weights(_net(), tmp_path / "w.safetensors")
    msg = str(e.value)
    assert "do not match the architecture" in msg
    assert "unexpected: 2.bias, 2.weight" in msg
    assert "0.weight (8, 3, 3, 3) vs model (4, 3, 3, 3)" in msg


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {"w": Evil()}}, tmp_path / "evil.th")
    with pytest.raises(DeployKitError):
        read_state_dict(tmp_path / "evil.th")


def test_safetensors_load_into_a_module_that_checks_its_version(tmp_path):
    # safetensors keeps no module versions; torchvision's MNASNet refuses a state without one.
    import torchvision

    src, dst = torchvision.models.mnasnet0_5(num_classes=10), torchvision.models.mnasnet0_5(num_classes=10)
    save_file(src.state_dict(), str(tmp_path / "m.safetensors"))
    load_weights(dst, tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 64, 64)
    src.eval(), dst.eval()
    torch.testing.assert_close(src(x), dst(x))
