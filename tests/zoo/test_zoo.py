import numpy as np
import pytest
import torch

from deploykit.data import load_dataset
from deploykit.errors import DeployKitError
from deploykit.train.loop import evaluate
from deploykit.zoo import build_model, check_input, parse_shape


def test_unknown_specs_list_valid_ones():
    with pytest.raises(DeployKitError, match="valid: cifar:NAME, digits:NAME, timm:NAME, torchvision:NAME"):
        build_model("resnet18")
    with pytest.raises(DeployKitError, match="did you mean 'resnet18'"):
        build_model("torchvision:resnet81")
    with pytest.raises(DeployKitError, match="valid: resnet20, resnet32, resnet44, resnet56"):
        build_model("cifar:resnet99")
    with pytest.raises(DeployKitError, match="no importable module"):
        build_model("no_such_pkg.models:make")


def test_module_factory_spec(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch.nn as nn\n"
        "def tiny():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))\n"
        "tiny.input_shape = (1, 3, 20, 20)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    built = build_model("mymodels:tiny")
    assert built.input_shape == (1, 3, 20, 20)
    assert built.model(built.example_input()).shape == (1, 2)


def test_rejected_input_shape_is_a_user_error():
    built = build_model("cifar:resnet20", input_shape=parse_shape("1x1x32x32"))
    with pytest.raises(DeployKitError, match="rejects input shape 1x1x32x32"):
        check_input(built)
    with pytest.raises(DeployKitError, match="of the form"):
        parse_shape("1x3xbig")


def test_cifar_resnet20_reproduces_published_accuracy(data_dir, resnet20_weights):
    built = build_model("cifar:resnet20", weights=str(resnet20_weights))
    ds = load_dataset(f"cifar10:{data_dir / 'cifar10'}:test:lossless")
    assert len(ds) == 1000
    # The data README measured 91.50 for this checkpoint on these 1000 images.
    assert evaluate(built.model, ds, built.preprocess) == pytest.approx(91.5, abs=0.05)


def test_option_a_shortcut_maps_channel_j_to_j_plus_pad():
    from deploykit.zoo.cifar_resnet import PadShortcut

    x = torch.randn(1, 16, 8, 8)
    y = PadShortcut(16, 8)(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_digits_data_and_demo_model(digits_model):
    train, test = load_dataset("digits:train"), load_dataset("digits:test")
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (8, 8, 1)
    assert len(train) + len(test) == 1797
    assert evaluate(digits_model.model, test, digits_model.preprocess) > 95.0
