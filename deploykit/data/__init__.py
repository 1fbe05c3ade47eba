"""Data specs → datasets of uint8 HWC images with labels.

Specs: ``cifar10:DIR[:train|test][:lossless|jpeg75]``, ``digits[:train|test]``,
``imagefolder:DIR``. Every dataset holds raw images; the model's
:class:`~deploykit.zoo.base.Preprocess` turns them into tensors, so the same
images feed PyTorch, ONNX Runtime and the edge Engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deploykit.errors import DeployKitError
from deploykit.registry import Registry
from deploykit.zoo.base import Preprocess

Loader = Callable[[list[str]], "ImageDataset"]
DATASETS: Registry[Loader] = Registry("data spec")


@dataclass
class ImageDataset:
    """Images (uint8, N×H×W×C) with int64 labels and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    spec: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> ImageDataset:
        """The first ``n`` images (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return ImageDataset(self.images[:n], self.labels[:n], self.classes, self.spec)


def load_dataset(spec: str) -> ImageDataset:
    """Load the dataset a DATA spec names.

    Raises:
        DeployKitError: unknown spec, missing directory or files.
    """
    kind, *args = spec.split(":")
    if kind not in DATASETS:
        raise DeployKitError(
            f"unknown data spec {spec!r}; valid: cifar10:DIR[:train|test][:lossless|jpeg75], "
            "digits[:train|test], imagefolder:DIR"
        )
    return DATASETS.get(kind)(args)


def _choice(value: str, options: tuple[str, ...], what: str, spec: str) -> str:
    if value not in options:
        raise DeployKitError(f"data spec {spec!r}: {what} {value!r} is not one of {', '.join(options)}")
    return value


@DATASETS.register("cifar10")
def _cifar10(args: list[str]) -> ImageDataset:
    from deploykit.zoo.cifar_resnet import CIFAR10_LABELS

    spec = ":".join(["cifar10", *args])
    if not args or not args[0]:
        raise DeployKitError("data spec cifar10 needs a directory: cifar10:DIR[:train|test][:lossless|jpeg75]")
    root = Path(args[0])
    split = _choice(args[1] if len(args) > 1 else "test", ("train", "test"), "split", spec)
    variant = _choice(args[2] if len(args) > 2 else "lossless", ("lossless", "jpeg75"), "variant", spec)
    files = sorted(root.glob(f"cifar10_{split}_{variant}_*.npz"))
    if not files:
        raise DeployKitError(f"no cifar10_{split}_{variant}_*.npz shards in {root}")
    xs, ys = [], []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            xs.append(z["x"])
            ys.append(z["y"])
    return ImageDataset(np.concatenate(xs), np.concatenate(ys).astype(np.int64), CIFAR10_LABELS, spec)


@DATASETS.register("digits")
def _digits(args: list[str]) -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = ":".join(["digits", *args])
    split = _choice(args[0] if args else "test", ("train", "test"), "split", spec)
    d = load_digits()
    # Pixel values are 0..16; store them as 8-bit gray images like any other source.
    imgs = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    tr, te = train_test_split(np.arange(len(imgs)), test_size=0.2, random_state=0, stratify=d.target)
    idx = tr if split == "train" else te
    return ImageDataset(imgs[idx], d.target[idx].astype(np.int64), [str(i) for i in range(10)], spec)


@DATASETS.register("imagefolder")
def _imagefolder(args: list[str]) -> ImageDataset:
    from PIL import Image

    spec = ":".join(["imagefolder", *args])
    root = Path(":".join(args))
    if not root.is_dir():
        raise DeployKitError(f"data spec {spec!r}: {root} is not a directory of class folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DeployKitError(f"data spec {spec!r}: {root} has no class folders")
    images, labels = [], []
    side = None
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".ppm"):
                continue
            img = Image.open(f).convert("RGB")
            side = side or min(img.size)
            images.append(np.asarray(_center_square(img).resize((side, side), Image.BILINEAR)))
            labels.append(label)
    if not images:
        raise DeployKitError(f"data spec {spec!r}: no images under {root}")
    return ImageDataset(np.stack(images), np.array(labels, dtype=np.int64), classes, spec)


def _center_square(img):
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def random_crop_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard CIFAR augmentation on a normalized NCHW batch: pad-4 random crop, horizontal flip."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def batches(
    ds: ImageDataset,
    pre: Preprocess,
    batch_size: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    augment: bool = False,
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield preprocessed ``(x, y)`` batches.

    Args:
        limit: stop after this many batches.
        shard: ``(rank, world)``: this process takes every world-th sample of each
            global batch, so N processes see the same global batches as one.
    """
    n = len(ds)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    gen = torch.Generator().manual_seed(seed + 1)
    rank, world = shard
    count = 0
    for start in range(0, n, batch_size):
        if limit is not None and count >= limit:
            return
        idx = order[start : start + batch_size][rank::world].numpy()
        x = pre.apply(torch.from_numpy(ds.images[idx]))
        if augment:
            x = random_crop_flip(x, generator=gen)
        yield x, torch.from_numpy(ds.labels[idx])
        count += 1
