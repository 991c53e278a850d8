"""Images for calibration and validation of exported models, as normalized float32 NCHW arrays.

Accepts an image folder (an ImageFolder tree ``root/<class>/*.jpg`` gives labels too; a flat folder gives none),
a zip with the same layout (the shipped CIFAR-10 sample), a ``.npy``/``.npz`` array already normalized, or the
word ``"sample"`` (the 5,000-image CIFAR-10 sample shipped in the package). Images must already have the model's
input size unless ``resize=True``: silently resizing calibration images would calibrate on a different
distribution from the one the model will see, so a mismatch is an error naming the data and both sizes.
Folders and archives are read through :func:`lightnn.data.load_dataset` (decoded once, cached); a flat folder of
images is read here.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError

__all__ = ["ImageSet", "load_images", "SAMPLE_ZIP", "IMAGENET_MEAN", "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD",
           "default_norm"]

SAMPLE_ZIP = Path(__file__).resolve().parents[1] / "data" / "sample" / "cifar10_sample.zip"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def default_norm(input_size: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalization :class:`lightnn.data.BatchLoader` applies by default (ImageNet statistics, also for
    CIFAR), so an exported model sees inputs scaled like the ones it was trained on."""
    return IMAGENET_MEAN, IMAGENET_STD


@dataclass
class ImageSet:
    """Normalized images (N, C, H, W) float32, labels (N,) int64 or None, class names, and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for i in range(0, len(self.images), batch_size):
            yield self.images[i:i + batch_size]


def _entries(source: str) -> tuple[list[tuple[str, bytes | Path]], str]:
    """(relative name, bytes or path) for every image file under ``source``."""
    if source == "sample":
        source = str(SAMPLE_ZIP)
    p = Path(source)
    if not p.exists():
        raise DataError(f"calibration data {source!r} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        return [(str(f.relative_to(p)), f) for f in files], str(p)
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = sorted(n for n in z.namelist() if Path(n).suffix.lower() in IMAGE_EXTS)
            return [(n, z.read(n)) for n in names], str(p)
    raise DataError(f"calibration data {source!r} is not a folder of images, a zip of images or a .npy/.npz array")


def _label_of(name: str) -> str | None:
    parts = Path(name).parts
    return parts[-2] if len(parts) >= 2 else None


def load_images(source: str | os.PathLike, input_size: Sequence[int], limit: int | None = 500,
                resize: bool = False, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                split: str = "all", seed: int = 0) -> ImageSet:
    """Load up to ``limit`` images from ``source`` as a normalized (N, C, H, W) float32 array.

    ``input_size`` is (C, H, W). ImageFolder trees, archives and CIFAR pickles are read (and cached) by
    :func:`lightnn.data.load_dataset`; ``split`` is its split (``"train"``, ``"val"``: the seeded validation split
    the trainer reports, ``"all"``). A flat folder of images (no class folders) is read directly, without labels.
    The ``limit`` images are a seeded random subset, resized only when ``resize=True``.
    """
    c, h, w = (int(s) for s in input_size)
    src = str(source)
    if src.endswith((".npy", ".npz")):
        return _load_array(src, (c, h, w), limit)
    from ..data import load_dataset

    try:
        data = load_dataset(src, split=split)
        x, labels, classes, where = data.images, data.labels.numpy(), list(data.classes), data.source
    except DataError as e:
        if "no class folders" not in str(e) and "contains no files" not in str(e):
            raise DataError(f"calibration data {src!r}: {e}") from None
        x, labels, classes, where = _flat_folder(src), None, [], src
    if len(x) == 0:
        raise DataError(f"calibration data {where!r} contains no images")
    if x.shape[1] != c:
        raise DataError(f"images in {where!r} have {x.shape[1]} channels but the model takes {c}")
    order = np.random.default_rng(seed).permutation(len(x))[:limit] if limit else np.arange(len(x))
    import torch

    sub = torch.as_tensor(np.asarray(x[torch.as_tensor(order)] if isinstance(x, torch.Tensor) else x[order]))
    if tuple(sub.shape[2:]) != (h, w):
        if not resize:
            raise DataError(f"images in {where!r} are {sub.shape[3]}x{sub.shape[2]} but the model takes {w}x{h}; "
                            "pass resize=True (--resize) to resize calibration images")
        sub = torch.nn.functional.interpolate(sub.float(), size=(h, w), mode="bilinear", antialias=True,
                                              align_corners=False).clamp_(0, 255)
    if mean is None or std is None:
        mean, std = default_norm((c, h, w))
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)[:, :c]
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)[:, :c]
    out = ((sub.float() / 255.0 - m) / s).numpy()
    return ImageSet(np.ascontiguousarray(out), None if labels is None else labels[order].astype(np.int64),
                    classes, where)


def _flat_folder(src: str) -> np.ndarray:
    """uint8 (N, C, H, W) from a folder or zip of same-size images without class folders."""
    from PIL import Image

    entries, where = _entries(src)
    if not entries:
        raise DataError(f"calibration data {where!r} contains no images ({', '.join(sorted(IMAGE_EXTS))})")
    arrs, first = [], None
    for name, data in entries:
        try:
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
                a = np.asarray(im.convert("RGB"), np.uint8)
        except Exception as e:
            raise DataError(f"image {name!r} in {where!r} cannot be decoded: {e}") from None
        if first is None:
            first = (a.shape, name)
        elif a.shape != first[0]:
            raise DataError(f"images in {where!r} differ in size ({first[1]} is {first[0][1]}x{first[0][0]}, "
                            f"{name} is {a.shape[1]}x{a.shape[0]})")
        arrs.append(a)
    return np.stack(arrs).transpose(0, 3, 1, 2).copy()


def _load_array(src: str, size: tuple[int, int, int], limit: int | None) -> ImageSet:
    p = Path(src)
    if not p.is_file():
        raise DataError(f"calibration data {src!r} does not exist")
    obj = np.load(p)
    labels = None
    if isinstance(obj, np.lib.npyio.NpzFile):
        keys = list(obj.keys())
        x = obj["images"] if "images" in keys else obj[keys[0]]
        labels = obj["labels"] if "labels" in keys else None
    else:
        x = obj
    if x.ndim != 4 or tuple(x.shape[1:]) != size:
        raise DataError(f"array in {src!r} has shape {tuple(x.shape)}, expected (N, {size[0]}, {size[1]}, {size[2]})")
    if len(x) == 0:
        raise DataError(f"array in {src!r} holds no images")
    n = limit or len(x)
    return ImageSet(np.ascontiguousarray(x[:n], np.float32), None if labels is None else labels[:n].astype(np.int64),
                    [], src)
