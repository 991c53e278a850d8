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
import lzma
import math
import os
import random
import shutil
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from .datasets import (IMAGE_EXTENSIONS, SAMPLE_PATH, SPLIT_NAMES, _check_declared_size, _check_name, _open_rgb,
                       _read_file, _shown, _walk, cache_dir, split_indices)
from .loader import IMAGENET_MEAN, IMAGENET_STD, _EpochLoader, dist_info, normalize_affine

__all__ = ["StreamingImageFolder", "StreamLoader", "stream_image_folder"]

_EXTRACT_ERRORS = (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError,
                   RuntimeError, NotImplementedError)


def _bounded_data_filter(archive: Path):
    """tarfile's ``data`` filter (nothing lands outside the destination, no device files, no links out) plus the
    per-file bound of :func:`lightnn.data.load_dataset`, checked on each member's header before it is written."""
    def filt(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        member = tarfile.data_filter(member, dest)
        if member is not None and member.isfile():
            _check_declared_size(member.size, member.name, f"{archive}:{_shown(member.name)}")
        return member
    return filt


def _extract_once(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = cache_dir() / "extracted" / f"{path.name}-{key}"
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():  # declared sizes, before anything is written
                    _check_declared_size(info.file_size, info.filename, f"{path}:{info.filename}")
                z.extractall(tmp)  # zipfile drops absolute and ".." parts of names
        else:
            with tarfile.open(path, "r:*") as t:
                t.extractall(tmp, filter=_bounded_data_filter(path))
        (tmp / ".complete").touch()
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or a refused member leaves no half-extracted tree
        if isinstance(e, _EXTRACT_ERRORS):
            reason = getattr(e, "strerror", None) or e
            raise DataError(f"archive {str(path)!r} cannot be extracted into the cache {dest.parent} ({reason}); "
                            "set LIGHTNN_CACHE to a writable folder with room, or extract it and pass the "
                            "folder") from None
        raise
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _list_dir(root: Path) -> list[Path]:
    try:
        return sorted(root.iterdir())
    except OSError as e:
        raise DataError(f"dataset folder {_shown(root)} cannot be listed: {e.strerror or e}") from None


def _find_root(root: Path, split: str) -> tuple[Path, bool]:
    """The class-folder root of ``split`` and whether it is used whole (False: train/val are carved from it)."""
    seen: set[tuple[int, int]] = set()
    while True:
        entries = _list_dir(root)
        st = root.stat()
        if (st.st_dev, st.st_ino) in seen:
            raise DataError(f"{_shown(root)} is a symlink loop: it leads back to a folder it is in")
        seen.add((st.st_dev, st.st_ino))
        subs = [d for d in entries if not d.name.startswith(".") and d.is_dir()]
        named = {SPLIT_NAMES[d.name.lower()]: d for d in subs if d.name.lower() in SPLIT_NAMES}
        if named:
            if split in named:
                return named[split], split != "train" or "val" in named
            if split == "val" and "train" in named:
                return named["train"], False
            raise DataError(f"dataset {str(root)!r} has no {split!r} folder (it has {sorted(named)})")
        if len(subs) == 1 and not any(f.is_file() for f in entries if not f.name.startswith(".")):
            root = subs[0]  # a wrapper folder
            continue
        return root, False


class _Failure:
    """A sample that could not be read, carried back as data: an exception raised in a DataLoader worker reaches
    the parent as the worker's whole traceback, so :class:`StreamLoader` raises this message itself."""

    def __init__(self, message: str):
        self.message = message


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
        rel, label = self.samples[i]
        path = str(self.root / rel)
        try:  # read and decoded with load_dataset's bounds and checks (size, pixels, bit depth)
            img = self._transform(_open_rgb(_read_file(path, rel), _shown(path)))
        except DataError as e:
            return None if self.skip_corrupt else _Failure(str(e))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1), label


def _collate(batch):
    """(images, labels, how many samples were skipped, the message of a failed sample or None)."""
    failed = next((b.message for b in batch if isinstance(b, _Failure)), None)
    good = [b for b in batch if b is not None and not isinstance(b, _Failure)]
    dropped = len(batch) - len(good)
    if failed is not None or not good:
        return None, None, dropped, failed
    return torch.stack([b[0] for b in good]), torch.tensor([b[1] for b in good], dtype=torch.long), dropped, None


def _worker_error(e: Exception, source: str) -> DataError | None:
    """A DataLoader worker's failure (a crash, or an exception wrapped with its traceback) as one line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines or "DataLoader worker" not in lines[0]:
        return None
    return DataError(f"a DataLoader worker reading {source} failed: {lines[-1]} (with --workers 0 the images are "
                     "read in this process)")


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
        it = iter(dl)
        try:
            while True:
                try:
                    x, y, dropped, failed = next(it)
                except StopIteration:
                    break
                except Exception as e:
                    err = _worker_error(e, self.data.source)
                    if err is None:
                        raise
                    raise err from None
                if failed is not None:
                    raise DataError(failed)
                skipped += dropped
                if x is None:
                    continue
                x = x.to(self.device, non_blocking=True).float().mul_(self._scale).add_(self._shift)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y.to(self.device, non_blocking=True)
        finally:
            del it  # dropping the iterator stops its workers, which a traceback holding it would keep alive
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
    classes = sorted(d.name for d in _list_dir(class_root) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"dataset {str(class_root)!r} has no class folders (expected <class>/<image> files)")
    samples: list[tuple[str, int]] = []
    for ci, c in enumerate(classes):
        _check_name(c, str(class_root / c))
        # load_dataset's walk: follows symlinks, refuses loops and names that are not UTF-8, skips hidden files
        files = sorted(_walk(class_root / c)[0], key=lambda f: PurePosixPath(f[0]))
        if not files:
            raise DataError(f"class folder {str(class_root / c)!r} is empty")
        for name, full, _ in files:
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                if skip_corrupt:
                    continue
                raise DataError(f"{_shown(full)} is not an image file (extension "
                                f"{PurePosixPath(name).suffix or 'none'!r})")
            samples.append((f"{c}/{name}", ci))
    if not real and split in ("train", "val") and val_fraction > 0:
        labels = torch.tensor([s[1] for s in samples])
        tr, va = split_indices(labels, val_fraction, seed)
        samples = [samples[i] for i in (tr if split == "train" else va).tolist()]
    train = split == "train"
    ds = StreamingImageFolder(class_root, samples, classes, image_size, train, skip_corrupt)
    return StreamLoader(ds, batch_size, shuffle=train, workers=workers, device=device, mean=mean, std=std,
                        seed=seed, drop_last=train and len(ds) > batch_size, channels_last=channels_last)
