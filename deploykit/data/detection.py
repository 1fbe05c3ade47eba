"""Detection data: ``yolo:DIR[:train|test]``, folders in Ultralytics' YOLO format.

    DIR/images/train/*.jpg|png     DIR/labels/train/*.txt   (same stem; no file: no objects)
    DIR/images/val/...             DIR/labels/val/...       (the test split; ``test/`` also read)
    DIR/classes.txt                one class name per line (else ``names:`` of DIR/data.yaml)

A label line is ``class cx cy w h``: an integer class, then the box centre and size
normalized to the image (0..1). A folder without ``train``/``val`` subfolders
(``DIR/images``, ``DIR/labels``) is one split, used for both. Every file is checked: a
bad line, class or coordinate is one line naming the file and line, exit 2.

Images are held as one uint8 N×H×W×3 array: images of different sizes are letterboxed
at load time to a square of the largest side (boxes follow), so batches stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deploykit.data import IMAGE_SUFFIXES, _read_image, data_source
from deploykit.errors import DeployKitError
from deploykit.zoo.base import Preprocess

YOLO_FORM = "yolo:DIR[:train|test]"
SPLIT_DIRS = {"train": ("train",), "test": ("val", "test")}
MAX_SIDE = 2048  # a larger image is refused: the whole set is held in memory at its largest side
COORD_SLACK = 1e-3  # labels written by tools round; a box edge a hair past the image is still valid


@dataclass
class DetectionDataset:
    """Images with boxes: ``boxes[i]`` is ``[k, 5]`` float32 rows ``class, cx, cy, w, h``
    normalized to image ``i`` (as stored in ``images``)."""

    images: np.ndarray
    boxes: list[np.ndarray]
    classes: list[str]
    spec: str
    task: str = field(default="detection", init=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        """Every object's class, all images together (the class range check reads it)."""
        cls = [b[:, 0] for b in self.boxes if len(b)]
        return np.concatenate(cls).astype(np.int64) if cls else np.zeros(0, np.int64)

    def subset(self, n: int | None) -> DetectionDataset:
        """The first ``n`` images (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return DetectionDataset(self.images[:n], self.boxes[:n], self.classes, self.spec)

    def batch(self, idx: np.ndarray, pre: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, targets)``: the model inputs and ``[M, 6]`` rows ``image, class, cx, cy, w, h``
        normalized to the model input (the letterbox, if the preprocessing has one, applied to the boxes)."""
        x = pre.apply(torch.from_numpy(self.images[idx]))
        h, w = self.images.shape[1:3]
        out_h, out_w = pre.size
        if getattr(pre, "resize", "stretch") == "letterbox":
            # The geometry of zoo.base.letterbox and the preprocessing kernels.
            r = min(out_h / h, out_w / w)
            ch, cw = max(1, min(out_h, round(h * r))), max(1, min(out_w, round(w * r)))
            top, left = (out_h - ch) // 2, (out_w - cw) // 2
        else:
            ch, cw, top, left = out_h, out_w, 0, 0
        rows = []
        for j, i in enumerate(idx):
            b = self.boxes[int(i)]
            if len(b):
                t = np.empty((len(b), 6), np.float32)
                t[:, 0], t[:, 1] = j, b[:, 0]
                t[:, 2] = (b[:, 1] * cw + left) / out_w
                t[:, 3] = (b[:, 2] * ch + top) / out_h
                t[:, 4] = b[:, 3] * cw / out_w
                t[:, 5] = b[:, 4] * ch / out_h
                rows.append(t)
        targets = np.concatenate(rows) if rows else np.zeros((0, 6), np.float32)
        return x, torch.from_numpy(targets)


def _bad(path: Path, line: int | None, what: str) -> DeployKitError:
    where = f"{path}:{line}" if line is not None else str(path)
    return DeployKitError(f"{where}: {what}; valid: one 'class cx cy w h' line per object, class an integer "
                          "0..K-1, coordinates normalized to the image (0..1), w and h > 0")


def read_labels(path: Path, num_classes: int) -> np.ndarray:
    """One YOLO label file → ``[k, 5]`` float32, checked line by line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(path, None, f"cannot read it as UTF-8 text ({type(e).__name__})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise _bad(path, n, f"{len(parts)} fields (segments and keypoints are not boxes)")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise _bad(path, n, f"{line.strip()[:60]!r} is not numbers") from None
        cls, cx, cy, w, h = values
        if not all(math.isfinite(v) for v in values):
            raise _bad(path, n, "a value is not finite")
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise _bad(path, n, f"class {parts[0]} is not one of 0..{num_classes - 1} ({num_classes} class names)")
        if w <= 0 or h <= 0:
            raise _bad(path, n, f"box size {w:g}x{h:g} is not positive")
        lo, hi = -COORD_SLACK, 1 + COORD_SLACK
        if not (lo <= cx - w / 2 and cx + w / 2 <= hi and lo <= cy - h / 2 and cy + h / 2 <= hi):
            raise _bad(path, n, f"box {cx:g} {cy:g} {w:g} {h:g} reaches outside the image")
        rows.append(values)
    return np.asarray(rows, np.float32).reshape(-1, 5)


def _class_names(root: Path) -> list[str]:
    txt = root / "classes.txt"
    if txt.is_file():
        names = [ln.strip() for ln in txt.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if names:
            return names
    yml = root / "data.yaml"
    if yml.is_file():
        names = _yaml_names(yml)
        if names:
            return names
    raise DeployKitError(f"{root}: no class names; write {txt} (one name per line) or names: in {yml}")


def _yaml_names(path: Path) -> list[str]:
    """``names:`` of an Ultralytics data.yaml: a list, or a ``{index: name}`` mapping (safe YAML only)."""
    try:
        import yaml
    except ImportError:  # without PyYAML, read the two simple forms by hand
        m = re.search(r"^names:\s*\[(.*)\]\s*$", path.read_text(encoding="utf-8", errors="replace"), re.M)
        return [n.strip().strip("'\"") for n in m.group(1).split(",")] if m else []
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DeployKitError(f"{path}: not readable YAML ({type(e).__name__})") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DeployKitError(f"{path}: names must be indexed 0..K-1, got {keys[:5]}")
        return [str(names[k]) for k in keys]
    return [str(n) for n in names] if isinstance(names, list) else []


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    for name in SPLIT_DIRS[split]:
        if (root / "images" / name).is_dir():
            return root / "images" / name, root / "labels" / name
    if (root / "images").is_dir() and not any((root / "images" / n).is_dir() for s in SPLIT_DIRS.values() for n in s):
        return root / "images", root / "labels"  # one folder: both splits
    want = " or ".join(f"{root / 'images' / n}" for n in SPLIT_DIRS[split])
    raise DeployKitError(f"data spec yolo:{root}:{split}: no {want} (nor a single {root / 'images'} folder)")


def _letterbox_np(img: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``img`` letterboxed onto a ``side``² gray canvas; ``(scale_x, scale_y, left, top)`` in normalized units."""
    from PIL import Image

    h, w = img.shape[:2]
    r = side / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    top, left = (side - nh) // 2, (side - nw) // 2
    canvas = np.full((side, side, 3), 114, np.uint8)
    canvas[top : top + nh, left : left + nw] = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    return canvas, (nw / side, nh / side, left / side, top / side)


@data_source("yolo", YOLO_FORM, 2)
def _yolo(args: list[str]) -> DetectionDataset:
    spec = ":".join(["yolo", *args])
    if not args or not args[0]:
        raise DeployKitError(f"data spec yolo needs a directory: {YOLO_FORM}")
    root = Path(args[0])
    if not root.is_dir():
        raise DeployKitError(f"data spec {spec!r}: {root} is not a directory (images/ and labels/ inside)")
    split = args[1] if len(args) > 1 else "test"
    if split not in SPLIT_DIRS:
        raise DeployKitError(f"data spec {spec!r}: split {split!r} is not one of train, test")
    names = _class_names(root)
    img_dir, lab_dir = _split_dirs(root, split)
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DeployKitError(f"data spec {spec!r}: no {', '.join(IMAGE_SUFFIXES)} images in {img_dir}")
    images, boxes = [], []
    for f in files:
        img = np.asarray(_read_image(f))
        if max(img.shape[:2]) > MAX_SIDE:
            raise DeployKitError(f"{f}: {img.shape[1]}x{img.shape[0]} pixels; valid: sides up to {MAX_SIDE}")
        lab = lab_dir / f"{f.stem}.txt"
        images.append(img)
        boxes.append(read_labels(lab, len(names)) if lab.is_file() else np.zeros((0, 5), np.float32))
    if len({im.shape for im in images}) > 1:
        side = max(max(im.shape[:2]) for im in images)
        for i, im in enumerate(images):
            images[i], (sx, sy, left, top) = _letterbox_np(im, side)
            b = boxes[i]
            b[:, 1], b[:, 2] = b[:, 1] * sx + left, b[:, 2] * sy + top
            b[:, 3], b[:, 4] = b[:, 3] * sx, b[:, 4] * sy
    return DetectionDataset(np.stack(images), boxes, names, spec)
