"""A small *synthetic* detection set built from real CIFAR-10 photographs, in YOLO format.

No detection dataset is available offline, so one is composed: each canvas (e.g. 128²)
gets a background (a different CIFAR-10 image, upscaled, at reduced contrast, so the
background has real texture), then 1..max_objects CIFAR-10 images pasted at random
positions and scales (the whole 32² photo is the object; its class is its CIFAR-10
label; pasted objects overlap each other by at most ``max_overlap`` IoU). Boxes and
classes are exact by construction. Training canvases use the training shards, test
canvases the test shards, so no photograph appears in both.

It measures whether a detector localizes and classifies, and how much pruning and
fine-tuning change that; it is not a benchmark against published detection numbers.

    python -m deploykit.data.synthetic_det ../shared/data/cifar10 out/synth --train 2000 --test 400
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deploykit.errors import DeployKitError


def _cifar(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from deploykit.data import read_shard

    files = sorted(root.glob(f"cifar10_{split}_lossless_*.npz"))
    if not files:
        raise DeployKitError(f"no cifar10_{split}_lossless_*.npz shards in {root}")
    xs, ys = zip(*(read_shard(f, 10) for f in files))
    return np.concatenate(xs), np.concatenate(ys)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def compose(photos: np.ndarray, labels: np.ndarray, rng: np.random.Generator, canvas: int, max_objects: int,
            min_side: int, max_side: int, max_overlap: float) -> tuple[np.ndarray, list[list[float]]]:
    """One canvas (uint8 HWC) and its YOLO label rows ``[class, cx, cy, w, h]`` (normalized)."""
    from PIL import Image

    bg = photos[rng.integers(len(photos))]
    back = np.asarray(Image.fromarray(bg).resize((canvas, canvas), Image.BILINEAR), np.float32)
    img = (back * 0.4 + 0.6 * 114).astype(np.uint8)  # real texture, low contrast: objects must stand out by content
    placed: list[np.ndarray] = []
    rows: list[list[float]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):
            w = int(rng.integers(min_side, max_side + 1))
            h = int(np.clip(round(w * rng.uniform(0.75, 1.33)), min_side, max_side))
            x0, y0 = int(rng.integers(0, canvas - w + 1)), int(rng.integers(0, canvas - h + 1))
            box = np.float32([x0, y0, x0 + w, y0 + h])
            if all(_iou(box, p) <= max_overlap for p in placed):
                break
        else:
            continue
        k = int(rng.integers(len(photos)))
        img[y0 : y0 + h, x0 : x0 + w] = np.asarray(Image.fromarray(photos[k]).resize((w, h), Image.BILINEAR))
        placed.append(box)
        rows.append([int(labels[k]), (x0 + w / 2) / canvas, (y0 + h / 2) / canvas, w / canvas, h / canvas])
    return img, rows


def make_synthetic_detection(cifar_dir: str | Path, out: str | Path, n_train: int = 2000, n_test: int = 400,
                             canvas: int = 128, max_objects: int = 3, min_side: int = 24, max_side: int = 64,
                             max_overlap: float = 0.1, seed: int = 0) -> Path:
    """Write ``out/images/{train,val}``, ``out/labels/{train,val}``, ``classes.txt`` and ``data.yaml``.

    Returns:
        ``out`` (read it with the data spec ``yolo:OUT``).

    Raises:
        DeployKitError: missing CIFAR-10 shards, or sizes that do not fit the canvas.
    """
    from PIL import Image

    from deploykit.zoo.cifar_resnet import CIFAR10_LABELS

    if not 1 <= min_side <= max_side <= canvas:
        raise DeployKitError(f"object sides {min_side}..{max_side} must fit the {canvas}² canvas")
    root, out = Path(cifar_dir), Path(out)
    for split, n, folder in (("train", n_train, "train"), ("test", n_test, "val")):
        photos, labels = _cifar(root, split)
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        (out / "images" / folder).mkdir(parents=True, exist_ok=True)
        (out / "labels" / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, rows = compose(photos, labels, rng, canvas, max_objects, min_side, max_side, max_overlap)
            Image.fromarray(img).save(out / "images" / folder / f"{i:06d}.png")
            (out / "labels" / folder / f"{i:06d}.txt").write_text(
                "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in rows))
    (out / "classes.txt").write_text("\n".join(CIFAR10_LABELS) + "\n")
    # Ultralytics' own trainer can read the same folder.
    (out / "data.yaml").write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\n"
                                   f"names: {json.dumps(list(CIFAR10_LABELS))}\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m deploykit.data.synthetic_det CIFAR_DIR OUT [--train N] [--test N] [--canvas S]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cifar_dir")
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--canvas", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        make_synthetic_detection(args.cifar_dir, args.out, args.train, args.test, args.canvas, seed=args.seed)
    except DeployKitError as e:
        print(f"synthetic_det: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
