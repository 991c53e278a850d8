"""Images for calibration and validation of exported models, as normalized float32 NCHW arrays.

Accepts an image folder (an ImageFolder tree ``root/<class>/*.jpg`` gives labels too; a flat folder gives none),
a zip or tar with the same layout (the shipped CIFAR-10 sample), CIFAR pickles, a ``.npy``/``.npz`` array already
normalized, or the word ``"sample"`` (the 5,000-image CIFAR-10 sample shipped in the package). Images must already
have the model's input size unless ``resize=True``: silently resizing calibration images would calibrate on a
different distribution from the one the model will see, so a mismatch is an error naming the data and both sizes.
Reading and decoding is :mod:`lightnn.data`'s (:func:`~lightnn.data.load_dataset`, decoded once and cached; a flat
folder through :func:`~lightnn.data.datasets.load_unlabeled`), with its error messages.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..data.datasets import NoClassFoldersError, load_dataset, load_unlabeled
from ..data.loader import IMAGENET_MEAN, IMAGENET_STD
from ..errors import DataError

__all__ = ["ImageSet", "load_images"]


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


def load_images(source: str | os.PathLike, input_size: Sequence[int], limit: int | None = 500,
                resize: bool = False, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                split: str = "all", seed: int = 0) -> ImageSet:
    """Load up to ``limit`` images from ``source`` as a normalized (N, C, H, W) float32 array.

    ``input_size`` is (C, H, W). ImageFolder trees, archives and CIFAR pickles are read (and cached) by
    :func:`lightnn.data.load_dataset`; ``split`` is its split (``"train"``, ``"val"``: the seeded validation split
    the trainer reports, ``"all"``). A flat folder of images (no class folders) gives no labels. The ``limit``
    images are a seeded random subset, resized (bilinear, antialiased) only when ``resize=True``. ``mean``/``std``
    must be the statistics the model was trained with (its record's ``normalize``); without them ImageNet's are
    used, with a warning naming the data, since calibrating with the wrong statistics quietly skews every int8
    range.
    """
    c, h, w = (int(s) for s in input_size)
    src = str(source)
    if src.endswith((".npy", ".npz")):
        return _load_array(src, (c, h, w), limit)
    try:
        data = load_dataset(src, split=split)
        x, labels, classes, where = data.images, data.labels.numpy(), list(data.classes), data.source
    except NoClassFoldersError:
        # a flat folder of any image sizes can be resized while decoding; the cached datasets are resized below
        x, labels, classes, where = load_unlabeled(src, (h, w) if resize else None), None, [], src
    if len(x) == 0:
        raise DataError(f"calibration data {where!r} contains no images")
    if x.shape[1] != c:
        raise DataError(f"images in {where!r} have {x.shape[1]} channels but the model takes {c}")
    order = np.random.default_rng(seed).permutation(len(x))[:limit] if limit else np.arange(len(x))
    sub = x[torch.from_numpy(order)]
    if tuple(sub.shape[2:]) != (h, w):
        if not resize:
            raise DataError(f"images in {where!r} are {sub.shape[3]}x{sub.shape[2]} but the model takes {w}x{h}; "
                            "pass resize=True (--resize) to resize calibration images")
        sub = torch.nn.functional.interpolate(sub.float(), size=(h, w), mode="bilinear", antialias=True,
                                              align_corners=False).clamp_(0, 255)
    if mean is None or std is None:
        warnings.warn(f"no input normalization given for the images of {where!r}: using ImageNet's mean/std; pass "
                      f"the model's own (its checkpoint's normalize, or --mean/--std) if it was trained with others",
                      stacklevel=2)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if len(mean) != c or len(std) != c:
        raise DataError(f"mean/std have {len(mean)}/{len(std)} values but the model takes {c} channels")
    m, s = (torch.tensor(v, dtype=torch.float32).view(1, c, 1, 1) for v in (mean, std))
    out = ((sub.float() / 255.0 - m) / s).numpy()
    return ImageSet(np.ascontiguousarray(out), None if labels is None else labels[order].astype(np.int64),
                    classes, where)


def _load_array(src: str, size: tuple[int, int, int], limit: int | None) -> ImageSet:
    p = Path(src)
    if not p.is_file():
        raise DataError(f"calibration data {src!r} does not exist")
    try:  # allow_pickle=False: an object array (pickled code) is refused, never unpickled
        obj = np.load(p, allow_pickle=False)
        x, labels = obj, None
        if isinstance(obj, np.lib.npyio.NpzFile):
            keys = list(obj.keys())
            x = obj["images"] if "images" in keys else (obj[keys[0]] if keys else None)
            labels = obj["labels"] if "labels" in keys else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"calibration data {src!r} is not a readable numeric .npy/.npz array: {e}") from None
    if x is None:
        raise DataError(f"calibration data {src!r} holds no arrays")
    if x.dtype.kind not in "biuf" or (labels is not None and labels.dtype.kind not in "iu"):
        raise DataError(f"calibration data {src!r} holds {x.dtype} images"
                        f"{'' if labels is None else f' and {labels.dtype} labels'}; expected numbers")
    if x.ndim != 4 or tuple(x.shape[1:]) != size:
        raise DataError(f"array in {src!r} has shape {tuple(x.shape)}, expected (N, {size[0]}, {size[1]}, {size[2]})")
    if len(x) == 0:
        raise DataError(f"array in {src!r} holds no images")
    n = limit or len(x)
    return ImageSet(np.ascontiguousarray(x[:n], np.float32), None if labels is None else labels[:n].astype(np.int64),
                    [], src)
