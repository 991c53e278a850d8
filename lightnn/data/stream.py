"""Streaming large ImageFolder trees (the ImageNet layout) through a ``DataLoader`` with workers.

Images are decoded per sample with PIL in the workers and augmented with the standard ImageNet pipeline
(Szegedy et al. 2015's random-resized crop: area 8%-100%, aspect 3/4-4/3, plus a horizontal flip; evaluation:
resize the shorter side to size/0.875 and take the centre crop), written with PIL + torch only. Batches arrive as
uint8 and are normalized on the device, like :class:`~lightnn.data.BatchLoader`, whose interface
(``set_epoch``, ``len``, iteration of ``(x, y)``) :class:`StreamLoader` shares, so :func:`lightnn.train.fit`
takes either. Archives (.zip/.tar) are extracted once into :func:`~lightnn.data.cache_dir`.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from .datasets import IMAGE_EXTENSIONS, SAMPLE_PATH, SPLIT_NAMES, _is_hidden, split_indices, cache_dir
from .loader import IMAGENET_MEAN, IMAGENET_STD, _EpochLoader, dist_info, normalize_affine

__all__ = ["StreamingImageFolder", "StreamLoader", "stream_image_folder"]


def _extract_once(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache_dir() / "extracted" / f"{path.name}-{key}"
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(path, "r:*") as t:
                t.extractall(tmp, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"archive {str(path)!r} cannot be extracted: {e}") from None
    (tmp / ".complete").touch()
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        pass
    return dest


def _find_root(root: Path, split: str) -> tuple[Path, bool]:
    """The class-folder root of ``split`` and whether it is used whole (False: train/val are carved from it)."""
    while True:
        subs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        named = {SPLIT_NAMES[d.name.lower()]: d for d in subs if d.name.lower() in SPLIT_NAMES}
        if named:
            if split in named:
                return named[split], split != "train" or "val" in named
            if split == "val" and "train" in named:
                return named["train"], False
            raise DataError(f"dataset {str(root)!r} has no {split!r} folder (it has {sorted(named)})")
        if len(subs) == 1 and not any(f.is_file() for f in root.iterdir() if not f.name.startswith(".")):
            root = subs[0]  # a wrapper folder
            continue
        return root, False


class StreamingImageFolder(torch.utils.data.Dataset):
    """``<class>/<image>`` files decoded on access; ``train`` uses random-resized-crop + flip, else centre crop."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], classes: list[str], size: int, train: bool,
                 skip_corrupt: bool = False):
        self.root, self.samples, self.classes = root, samples, classes
        self.size, self.train, self.skip_corrupt = int(size), train, skip_corrupt

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def source(self) -> str:
        return str(self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def _transform(self, img):
        from PIL import Image

        s = self.size
        if self.train:
            w, h = img.size
            area = w * h
            for _ in range(10):
                target = area * random.uniform(0.08, 1.0)
                ar = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
                cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
                if 0 < cw <= w and 0 < ch <= h:
                    x0, y0 = random.randint(0, w - cw), random.randint(0, h - ch)
                    break
            else:  # fall back to the whole (centre, aspect-clamped) image
                cw, ch = min(w, h), min(w, h)
                x0, y0 = (w - cw) // 2, (h - ch) // 2
            img = img.resize((s, s), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            if random.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            return img
        short = int(round(s / 0.875))
        w, h = img.size
        scale = short / min(w, h)
        img = img.resize((max(s, round(w * scale)), max(s, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        x0, y0 = (w - s) // 2, (h - s) // 2
        return img.crop((x0, y0, x0 + s, y0 + s))

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        rel, label = self.samples[i]
        path = self.root / rel
        try:
            with Image.open(path) as im:
                img = self._transform(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            if self.skip_corrupt:
                return None
            raise DataError(f"{path} is not a readable image: {type(e).__name__}: {e}") from None
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1), label


def _collate(batch):
    good = [b for b in batch if b is not None]
    dropped = len(batch) - len(good)
    if not good:
        return None, None, dropped
    return torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good], dtype=torch.long), dropped


class StreamLoader(_EpochLoader):
    """Sharded, seeded DataLoader over a :class:`StreamingImageFolder`, normalizing uint8 batches on ``device``."""

    def __init__(self, dataset: StreamingImageFolder, batch_size: int, *, shuffle: bool, workers: int,
                 device: str | torch.device = "cpu", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, seed: int = 0, drop_last: bool = False,
                 channels_last: bool = False):
        self.data = dataset
        self.batch_size, self.shuffle, self.workers = int(batch_size), shuffle, int(workers)
        self.device = torch.device(device)
        self.seed, self.epoch, self.drop_last, self.channels_last = int(seed), 0, drop_last, channels_last
        self.rank, self.world_size = dist_info()
        self._scale, self._shift = normalize_affine(mean, std, self.device)

    def _indices(self) -> list[int]:
        n = len(self.data)
        if not self.shuffle:
            return list(range(self.rank, n, self.world_size))
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)).tolist()
        total = math.ceil(n / self.world_size) * self.world_size
        idx += idx[: total - n]
        return idx[self.rank::self.world_size]

    def __len__(self) -> int:
        m = len(self._indices())
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def __iter__(self):
        base = (self.seed * 1_000_003 + self.epoch) * 4099 + self.rank

        def init(worker_id: int) -> None:
            random.seed(base * 97 + worker_id)

        random.seed(base)
        dl = torch.utils.data.DataLoader(self.data, batch_size=self.batch_size, sampler=self._indices(),
                                         num_workers=self.workers, collate_fn=_collate, drop_last=self.drop_last,
                                         pin_memory=self.device.type == "cuda", worker_init_fn=init)
        skipped = 0
        for x, y, dropped in dl:
            skipped += dropped
            if x is None:
                continue
            x = x.to(self.device, non_blocking=True).float().mul_(self._scale).add_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)
        if skipped:
            warnings.warn(f"skipped {skipped} unreadable image(s) in {self.data.source}", stacklevel=2)


def stream_image_folder(path: str | os.PathLike, split: str = "train", *, image_size: int = 224,
                        batch_size: int = 256, workers: int = 4, device: str | torch.device = "cpu",
                        val_fraction: float = 0.1, seed: int = 0, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, skip_corrupt: bool = False,
                        channels_last: bool = False) -> StreamLoader:
    """A :class:`StreamLoader` over one split of a large ImageFolder tree (folder, or an archive extracted once).

    ``split="train"`` shuffles and uses random-resized-crop + flip; ``"val"``/``"test"`` use the centre crop.
    Without a ``val`` folder, ``"val"`` is the same stratified ``val_fraction`` carve-out :func:`load_dataset` uses.
    """
    p = SAMPLE_PATH if str(path) == "sample" else Path(path).expanduser()
    if not p.exists():
        raise DataError(f"dataset path {str(p)!r} does not exist")
    root = p if p.is_dir() else _extract_once(p.resolve())
    class_root, real = _find_root(root, split)
    classes = sorted(d.name for d in class_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"dataset {str(class_root)!r} has no class folders (expected <class>/<image> files)")
    samples: list[tuple[str, int]] = []
    for ci, c in enumerate(classes):
        files = sorted(f for f in (class_root / c).rglob("*") if f.is_file() and not _is_hidden(f.name))
        if not files:
            raise DataError(f"class folder {str(class_root / c)!r} is empty")
        for f in files:
            if not f.name.lower().endswith(IMAGE_EXTENSIONS):
                if skip_corrupt:
                    continue
                raise DataError(f"{f} is not an image file (extension {f.suffix or 'none'!r})")
            samples.append((str(f.relative_to(class_root)), ci))
    if not real and split in ("train", "val") and val_fraction > 0:
        labels = torch.tensor([s[1] for s in samples])
        tr, va = split_indices(labels, val_fraction, seed)
        samples = [samples[i] for i in (tr if split == "train" else va).tolist()]
    train = split == "train"
    ds = StreamingImageFolder(class_root, samples, classes, image_size, train, skip_corrupt)
    return StreamLoader(ds, batch_size, shuffle=train, workers=workers, device=device, mean=mean, std=std,
                        seed=seed, drop_last=train and len(ds) > batch_size, channels_last=channels_last)
