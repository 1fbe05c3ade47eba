"""The embedded default: a small residual CNN on scikit-learn's handwritten digits.

The first use trains it (a few seconds on 2 cores) and caches the weights under
the cache directory; later uses load the cache.

Environment:
    DEPLOYKIT_DIGITS_SEED: the seed the model is trained from (an integer, default 0).
        Its weights, and so every number measured on it, depend on the seed and on
        the CPU's float rounding; the test suite is run under other seeds to check
        that no test depends on one particular set of trained weights. The cache
        file name holds the seed, so models trained from different seeds never
        share a cache entry.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.atomic import atomic_file
from deploykit.errors import DeployKitError

DIGITS_SIZE = (16, 16)
TRAIN_EPOCHS = 8
SEED = 0  # the default of $DEPLOYKIT_DIGITS_SEED
SEED_ENV = "DEPLOYKIT_DIGITS_SEED"


def seed() -> int:
    """The training seed: ``$DEPLOYKIT_DIGITS_SEED`` when set (and not empty), else :data:`SEED`.

    Raises:
        DeployKitError: the variable is not an integer.
    """
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return SEED
    try:
        return int(raw)
    except ValueError:
        raise DeployKitError(f"{SEED_ENV}={raw!r} is not an integer; give a seed such as 0 or 1") from None


def cache_dir() -> Path:
    """``$DEPLOYKIT_CACHE``, else ``$XDG_CACHE_HOME/deploykit``, else ``~/.cache/deploykit``."""
    if os.environ.get("DEPLOYKIT_CACHE"):
        return Path(os.environ["DEPLOYKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deploykit"


class Block(nn.Module):
    """Residual block with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Stem 1→32, two blocks at 32 channels (16x16), two at 64 (8x8), pool, linear."""

    def __init__(self, widths: tuple[int, int] = (32, 64), num_classes: int = 10) -> None:
        super().__init__()
        w1, w2 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.layer1 = nn.Sequential(Block(w1, w1, 1), Block(w1, w1, 1))
        self.layer2 = nn.Sequential(Block(w1, w2, 2), Block(w2, w2, 1))
        self.fc = nn.Linear(w2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def pretrained_path() -> Path:
    """Where the trained demo weights are cached."""
    return cache_dir() / f"digits-demo-e{TRAIN_EPOCHS}-s{seed()}.safetensors"


def ensure_pretrained(model: nn.Module, log=print) -> Path:
    """Return the cached weights, training ``model`` on the digits train split first if absent."""
    path = pretrained_path()
    if path.is_file():
        return path
    from safetensors.torch import save_file

    from deploykit.data import load_dataset
    from deploykit.train.loop import TrainConfig, train
    from deploykit.zoo.base import Preprocess

    s = seed()
    from_seed = "" if s == SEED else f", seed {s} from ${SEED_ENV}"
    log(f"training the digits demo model once ({TRAIN_EPOCHS} epochs{from_seed}); cached at {path}")
    torch.manual_seed(s)
    for m in model.modules():  # the same start every time: the demo's numbers must not depend on the caller's RNG
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    pre = digits_preprocess()
    train(model, load_dataset("digits:train"), pre, TrainConfig(epochs=TRAIN_EPOCHS, lr=0.05, batch_size=64, seed=s))
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return path


def digits_preprocess():
    """Gray 8x8 digits upsampled to 16x16, scaled to [0, 1], centred."""
    from deploykit.zoo.base import Preprocess

    return Preprocess(size=DIGITS_SIZE, mean=(0.5,), std=(0.5,), scale=255.0, channels=1, color="GRAY")
