"""A registry of model families for parametrized tests: a small variant of each
for the default suite, and the full-size spec for ``slow`` tests (in the spirit of
timm's tests/test_models.py and Model-Optimizer's lazy vision model factories)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn


@dataclass(frozen=True)
class Case:
    """A family: ``small()`` builds a cheap variant fed ``small_shape``; ``spec`` is the full model."""

    name: str
    small: Callable[[], nn.Module]
    small_shape: tuple[int, ...]
    spec: str
    # Zeroing a channel equals removing it unless a norm over channels (LayerNorm) sees it.
    removal_is_masking: bool = True


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, weights=None, **kw)


def _vgg_small() -> nn.Module:
    from torchvision.models.vgg import make_layers

    features = make_layers([16, "M", 32, "M", 64, 64, "M"], batch_norm=True)
    return nn.Sequential(features, nn.Flatten(), nn.Linear(64 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


def _resnet_small(block: str, **kw) -> Callable[[], nn.Module]:
    from torchvision.models import resnet

    cls = resnet.Bottleneck if block == "bottleneck" else resnet.BasicBlock
    return lambda: resnet.ResNet(cls, [1, 1, 1, 1], num_classes=10, **kw)


def _regnet_small() -> nn.Module:
    from torchvision.models import regnet

    params = regnet.BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=0.25)
    return regnet.RegNet(params, num_classes=10, stem_width=16)


def _convnext_small() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)], num_classes=10)


def _cifar(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from deploykit.zoo import build_model

        return build_model(f"cifar:{name}", pretrained=False).model

    return make


CLASSIFIERS = [
    Case("resnet18", _resnet_small("basic"), (1, 3, 32, 32), "torchvision:resnet18"),
    Case("resnet50", _resnet_small("bottleneck", width_per_group=16), (1, 3, 32, 32), "torchvision:resnet50"),
    Case("resnext50_32x4d", _resnet_small("bottleneck", groups=8, width_per_group=4), (1, 3, 32, 32), "torchvision:resnext50_32x4d"),
    Case("wide_resnet50_2", _resnet_small("bottleneck", width_per_group=32), (1, 3, 32, 32), "torchvision:wide_resnet50_2"),
    Case("vgg11_bn", _vgg_small, (1, 3, 32, 32), "torchvision:vgg11_bn"),
    Case("mobilenet_v2", _tv("mobilenet_v2", width_mult=0.25, num_classes=10), (1, 3, 32, 32), "torchvision:mobilenet_v2"),
    Case("mobilenet_v3_large", _tv("mobilenet_v3_large", width_mult=0.25, num_classes=10), (1, 3, 32, 32), "torchvision:mobilenet_v3_large"),
    Case("mnasnet1_0", _tv("mnasnet0_5", num_classes=10), (1, 3, 32, 32), "torchvision:mnasnet1_0"),
    Case("efficientnet_b0", _tv("efficientnet_b0", num_classes=10), (1, 3, 32, 32), "torchvision:efficientnet_b0"),
    Case("regnet_y_400mf", _regnet_small, (1, 3, 32, 32), "torchvision:regnet_y_400mf"),
    Case("densenet121", lambda: torchvision.models.DenseNet(8, (2, 2), 16, num_classes=10), (1, 3, 32, 32), "torchvision:densenet121"),
    Case("googlenet", _tv("googlenet", aux_logits=False, init_weights=False, num_classes=10), (1, 3, 64, 64), "torchvision:googlenet"),
    Case("inception_v3", _tv("inception_v3", aux_logits=False, init_weights=False, num_classes=10), (1, 3, 96, 96), "torchvision:inception_v3"),
    Case("squeezenet1_1", _tv("squeezenet1_1", num_classes=10), (1, 3, 64, 64), "torchvision:squeezenet1_1"),
    Case("shufflenet_v2_x1_0", _tv("shufflenet_v2_x0_5", num_classes=10), (1, 3, 32, 32), "torchvision:shufflenet_v2_x1_0"),
    Case("convnext_tiny", _convnext_small, (1, 3, 32, 32), "torchvision:convnext_tiny", removal_is_masking=False),
    Case("cifar_resnet20", _cifar("resnet20"), (1, 3, 32, 32), "cifar:resnet20"),
    Case("cifar_resnet56", _cifar("resnet56"), (1, 3, 32, 32), "cifar:resnet56"),
]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so that every channel matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()
