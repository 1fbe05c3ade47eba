"""Data specs → datasets of uint8 HWC images with labels.

Specs: ``cifar10:DIR[:train|test][:lossless|jpeg75]``, ``digits[:train|test]``,
``imagefolder:DIR``. Every dataset holds raw images; the model's
:class:`~deploykit.zoo.base.Preprocess` turns them into tensors, so the same
images feed PyTorch, ONNX Runtime and the edge Engine.

Bad data is a user error: every loader checks what it reads (shapes, dtypes,
label ranges, shard agreement) and :func:`check_compatible` checks data against
a model before any work, so a bad file costs one line and writes nothing.
"""

from __future__ import annotations

import math
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import torch

from deploykit.errors import DeployKitError
from deploykit.registry import Registry
from deploykit.zoo.base import Preprocess

Loader = Callable[[list[str]], "ImageDataset"]


@dataclass(frozen=True)
class DataSource:
    """A kind of DATA spec: its loader and the form its fields take.

    Attributes:
        form: the spec's valid form, shown when a spec is wrong.
        max_fields: how many ``:``-separated fields may follow the kind (None: any, e.g. a path with colons).
        load: turns the fields into a dataset.
    """

    form: str
    max_fields: int | None
    load: Loader


DATASETS: Registry[DataSource] = Registry("data spec")


def data_source(name: str, form: str, max_fields: int | None) -> Callable[[Loader], Loader]:
    """Register a loader as the DATA spec kind ``name``."""

    def add(load: Loader) -> Loader:
        DATASETS.register(name, DataSource(form, max_fields, load))
        return load

    return add


def valid_forms() -> str:
    """Every spec form, comma-separated, for error messages."""
    return ", ".join(DATASETS.get(n).form for n in DATASETS.names())


@dataclass
class ImageDataset:
    """Images (uint8, N×H×W×C) with int64 labels and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    spec: str
    task: ClassVar[str] = "classification"  # what the labels are (data.detection holds boxes)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray, pre: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the images at ``idx``: preprocessed inputs and their labels."""
        return pre.apply(torch.from_numpy(self.images[idx])), torch.from_numpy(self.labels[idx])

    def subset(self, n: int | None) -> ImageDataset:
        """The first ``n`` images (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return ImageDataset(self.images[:n], self.labels[:n], self.classes, self.spec)


def load_dataset(spec: str) -> ImageDataset:
    """Load the dataset a DATA spec names.

    Raises:
        DeployKitError: unknown spec, too many fields, missing directory or files, bad data.
    """
    kind, *args = spec.split(":")
    if kind not in DATASETS:
        raise DeployKitError(f"unknown data spec {spec!r}; valid: {valid_forms()}")
    source = DATASETS.get(kind)
    if source.max_fields is not None and len(args) > source.max_fields:
        # Extra fields were silently ignored before; they are almost always a typo.
        raise DeployKitError(f"data spec {spec!r} has too many ':' fields; valid: {source.form}")
    return source.load(args)


def _choice(value: str, options: tuple[str, ...], what: str, spec: str) -> str:
    if value not in options:
        raise DeployKitError(f"data spec {spec!r}: {what} {value!r} is not one of {', '.join(options)}")
    return value


# -- .npz shards ---------------------------------------------------------------------------------

SHARD_FORM = "an .npz (as numpy.savez writes) of x: uint8 N×H×W×C images with C 1 or 3, and y: N integer labels"
# What reading a damaged zip or .npy header can raise: all mean "this file is not a readable shard".
# (RuntimeError covers encrypted members and NotImplementedError's unsupported compression; numpy parses
# headers with tokenize and ast.literal_eval, hence TokenError and SyntaxError.)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError, struct.error,
                OverflowError, SyntaxError, tokenize.TokenError)


def _bad_shard(path: Path, what: str, valid: str = SHARD_FORM) -> DeployKitError:
    return DeployKitError(f"{path}: {what}; valid: {valid}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:120]}" if text else type(e).__name__


def read_shard(path: Path, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one ``.npz`` shard: ``(x, y)`` with x uint8 N×H×W×C and y int64 of length N.

    The ``.npy`` members are parsed here rather than by ``np.load``: object arrays
    are refused from their header (nothing is ever unpickled), and a header whose
    shape declares more bytes than the member holds is refused before anything is
    allocated. Extra members (e.g. an index array) are ignored.

    Args:
        num_classes: labels must lie in ``0..num_classes-1`` (only ``>= 0`` when None).

    Raises:
        DeployKitError: one line naming the file, what is wrong and what is valid.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic[:2] != b"PK":
            # np.load would report this as "pickled data"; say what the file is not.
            raise _bad_shard(path, "is not a zip archive (an .npz is a zip of .npy arrays)")
        with zipfile.ZipFile(path) as zf:
            x = _read_member(zf, "x", path, _image_dtype)
            _check_images(x, path)
            y = _read_member(zf, "y", path, _label_dtype)
    except _READ_ERRORS as e:
        raise _bad_shard(path, f"is not a readable .npz archive ({_first_line(e)})") from None
    _check_labels(y, len(x), path, num_classes)
    return x, y.astype(np.int64)


DtypeCheck = Callable[[np.dtype], str | None]


def _read_member(zf: zipfile.ZipFile, key: str, path: Path, dtype_problem: DtypeCheck) -> np.ndarray:
    """The array ``key`` of an open npz, its header checked before its data is read.

    Args:
        dtype_problem: what is wrong with a dtype for this array, None when nothing.
    """
    try:
        info = zf.getinfo(f"{key}.npy")
    except KeyError:
        held = ", ".join(n.removesuffix(".npy") for n in zf.namelist()) or "nothing"
        raise _bad_shard(path, f"has no array {key!r} (it holds {held})") from None
    with zf.open(info) as fp:
        dtype, shape, fortran = _read_header(fp, key, path)
        problem = dtype_problem(dtype)
        if problem:
            raise _bad_shard(path, problem)
        nbytes = math.prod(shape) * dtype.itemsize
        declared = f"array {key!r} declares {'×'.join(map(str, shape)) or 'a scalar'} {dtype} ({nbytes} bytes)"
        if nbytes > info.file_size:  # a lying header: refuse before allocating what it declares
            raise _bad_shard(path, f"{declared} but holds {info.file_size} bytes (truncated or damaged)")
        # Read one byte past the declared size: reaching the member's end makes zipfile check its CRC,
        # and a member longer or shorter than its header says is damaged.
        data = fp.read(nbytes + 1)
    if len(data) != nbytes:
        raise _bad_shard(path, f"{declared} but holds {len(data)} bytes (truncated or damaged)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_header(fp: IO[bytes], key: str, path: Path) -> tuple[np.dtype, tuple[int, ...], bool]:
    version = np.lib.format.read_magic(fp)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise _bad_shard(path, f"array {key!r} has .npy format version {version[0]}.{version[1]}",
                         ".npy format 1.0 or 2.0, as numpy.savez writes")
    shape, fortran, dtype = readers[version](fp)
    if any(d < 0 for d in shape):  # numpy's header parser lets these through
        raise _bad_shard(path, f"array {key!r} declares the negative shape {shape}")
    return dtype, tuple(int(d) for d in shape), bool(fortran)


def _image_dtype(dtype: np.dtype) -> str | None:
    if dtype == np.uint8:
        return None
    return f"images x are {dtype}, not uint8 (floats in [0, 1]: convert with (x * 255).round().astype(np.uint8))"


def _label_dtype(dtype: np.dtype) -> str | None:
    if dtype.kind in "iu":
        return None
    what = "strings" if dtype.kind in "US" else "objects" if dtype.hasobject else str(dtype)
    return f"labels y are {what}, not integers (class indices 0..K-1)"


def _check_images(x: np.ndarray, path: Path) -> None:
    shape = "×".join(map(str, x.shape)) or "a scalar"
    if x.ndim != 4:
        raise _bad_shard(path, f"images x have shape {shape}, not N×H×W×C")
    if x.shape[-1] not in (1, 3):
        hint = " (it looks like N×C×H×W: use x.transpose(0, 2, 3, 1))" if x.shape[1] in (1, 3) else ""
        raise _bad_shard(path, f"images x have shape {shape}: {x.shape[-1]} channels{hint}")
    if len(x) == 0:
        raise _bad_shard(path, "holds no images")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise _bad_shard(path, f"images x have shape {shape}: empty images")


def _check_labels(y: np.ndarray, n: int, path: Path, num_classes: int | None) -> None:
    if y.ndim != 1:
        shape = "×".join(map(str, y.shape)) or "a scalar"
        raise _bad_shard(path, f"labels y have shape {shape}, not N (one per image)")
    if len(y) != n:
        raise _bad_shard(path, f"{len(y)} labels y for {n} images x (one label per image)")
    low, high = int(y.min()), int(y.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        bad = low if low < 0 else high
        valid = f"labels 0..{num_classes - 1}" if num_classes is not None else "labels >= 0"
        raise _bad_shard(path, f"label {bad} is out of range", valid)


@data_source("cifar10", "cifar10:DIR[:train|test][:lossless|jpeg75]", 3)
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
        x, y = read_shard(f, len(CIFAR10_LABELS))
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise DeployKitError(f"{f}: images are {'×'.join(map(str, x.shape[1:]))} (H×W×C) but {files[0]}'s are "
                                 f"{'×'.join(map(str, xs[0].shape[1:]))}; every shard of a split must hold one size")
        xs.append(x)
        ys.append(y)
    return ImageDataset(np.concatenate(xs), np.concatenate(ys), CIFAR10_LABELS, spec)


@data_source("digits", "digits[:train|test]", 1)
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


# A path may hold ':' (imagefolder:C:/x), so any number of fields joins back into the directory.
@data_source("imagefolder", "imagefolder:DIR", None)
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
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = _read_image(f)
            side = side or min(img.size)
            images.append(np.asarray(_center_square(img).resize((side, side), Image.BILINEAR)))
            labels.append(label)
    if not images:
        raise DeployKitError(f"data spec {spec!r}: no {', '.join(IMAGE_SUFFIXES)} images under {root}")
    return ImageDataset(np.stack(images), np.array(labels, dtype=np.int64), classes, spec)


def _read_image(f: Path) -> Any:
    """Decode an image file to RGB; a file PIL cannot decode is a user error naming it."""
    from PIL import Image

    # PIL's decoders signal damaged files with many exception types (truncated data, bad chunks, bombs).
    errors = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
              zlib.error, Image.DecompressionBombError)
    try:
        with Image.open(f) as img:
            return img.convert("RGB")
    except errors as e:
        raise DeployKitError(f"{f}: cannot read this image ({_first_line(e)}); want a readable "
                             f"{', '.join(IMAGE_SUFFIXES)} file, or remove it") from None


def _center_square(img):
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


# -- data against a model ------------------------------------------------------------------------


def model_classes(model: Any, example: torch.Tensor | None = None) -> int | None:
    """How many classes a classifier scores: K of its N×K output, None when that is unknown.

    Args:
        model: an ``nn.Module`` (run once on ``example``) or an ONNX Runtime session
            (read from its first output's declared shape).
        example: the module's input, batch 1.
    """
    if isinstance(model, torch.nn.Module):
        if example is None:
            return None
        was_training = model.training
        model.eval()  # a probe must not move BatchNorm statistics
        try:
            with torch.no_grad():
                out = model(example)
        except Exception:  # noqa: BLE001 - a probe only; check_input reports inputs the model rejects
            return None
        finally:
            model.train(was_training)
        return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim == 2 else None
    shape = model.get_outputs()[0].shape
    return shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None


def check_compatible(num_classes: int | None, pre: Preprocess, *datasets: ImageDataset | None) -> None:
    """Check, before any work, that a model can take each dataset and score its labels.

    Args:
        num_classes: the model's output width (see :func:`model_classes`); None skips the label check.
        pre: the model's preprocessing (its channel count).
        datasets: the datasets it will see; None entries are skipped.

    Raises:
        DeployKitError: images of a channel count the model cannot take, or labels it has no output for.
    """
    for ds in datasets:
        if ds is None:
            continue
        c = ds.images.shape[-1]
        # Gray images feed an RGB model (replicated, as the kernels do); otherwise the counts must match.
        if c != pre.channels and not (c == 1 and pre.channels == 3):
            takes = f"{pre.channels}-channel{' or 1-channel' if pre.channels == 3 else ''}"
            raise DeployKitError(f"data {ds.spec}: cannot feed {c}-channel images to a {pre.channels}-channel model; "
                                 f"it takes {takes} images")
        if num_classes is not None and len(ds) and int(ds.labels.max()) >= num_classes:
            raise DeployKitError(f"data {ds.spec}: label {int(ds.labels.max())} is out of range for a model with "
                                 f"{num_classes} outputs (valid labels: 0..{num_classes - 1})")


# -- batches -------------------------------------------------------------------------------------
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
        x, y = ds.batch(idx, pre)
        if augment:
            x = random_crop_flip(x, generator=gen)
        yield x, y
        count += 1


from deploykit.data import detection  # noqa: E402,F401  (registers yolo:DIR)
