"""Small image datasets decoded once into uint8 tensors, cached with a fingerprint of their source.

Sources (``load_dataset(path)``):

- an ImageFolder tree (``<class>/<image>`` or ``train|val|test/<class>/<image>``) as a folder, a ``.zip`` or a
  ``.tar[.gz|.bz2|.xz]`` archive (read directly, no extraction needed);
- torchvision's CIFAR-10/100 python-pickle layout (``cifar-10-batches-py/data_batch_1..5, test_batch`` or
  ``cifar-100-python/train, test, meta``), as a folder or the original ``.tar.gz``;
- ``"sample"``: the 5,000-image CIFAR-10 sample shipped in the package.

Decoded images land in a uint8 cache (``$LIGHTNN_CACHE`` or ``~/.cache/lightnn``, outside the repository) that
records a fingerprint of the source (paths, sizes, modification times), so a changed source is re-read and a
cache built from other data is refused with :class:`~lightnn.errors.DataError`. When the data has no validation
split, one is carved from train with a fixed seed, stratified per class (CIFAR-10: 45,000 / 5,000).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import DataError
from ..utils.io import atomic_torch_save

__all__ = ["ImageData", "load_dataset", "load_unlabeled", "cache_dir", "SAMPLE_PATH", "IMAGE_EXTENSIONS", "SPLIT_NAMES",
           "NoClassFoldersError"]

SAMPLE_PATH = Path(__file__).resolve().parent / "sample" / "cifar10_sample.zip"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".webp", ".tif", ".tiff")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_JUNK = {"thumbs.db", "desktop.ini"}
_CACHE_FORMAT = "lightnn-data-cache"
_CACHE_VERSION = 1


class NoClassFoldersError(DataError):
    """A source without the ``<class>/<image>`` layout (no files, or images not in class folders): it has no labels,
    but may still be read with :func:`load_unlabeled`."""


def cache_dir() -> Path:
    """Where decoded datasets and extracted archives are cached: ``$LIGHTNN_CACHE`` or ``~/.cache/lightnn``."""
    return Path(os.environ.get("LIGHTNN_CACHE") or Path.home() / ".cache" / "lightnn")


@dataclass
class ImageData:
    """An in-memory image classification split: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str = ""
    split: str = "train"
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor | Iterable[int], split: str | None = None) -> "ImageData":
        idx = torch.as_tensor(index, dtype=torch.long)
        return ImageData(self.images[idx], self.labels[idx], list(self.classes), self.source, split or self.split)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units (computed in chunks to keep memory flat)."""
        c = self.images.shape[1]
        s = torch.zeros(c, dtype=torch.float64)
        s2 = torch.zeros(c, dtype=torch.float64)
        for i in range(0, len(self), 4096):
            x = self.images[i:i + 4096].double().div_(255.0)
            s += x.sum((0, 2, 3))
            s2 += (x * x).sum((0, 2, 3))
        n = max(1, len(self)) * self.images.shape[2] * self.images.shape[3]
        mean = s / n
        std = (s2 / n - mean * mean).clamp_min(1e-12).sqrt()
        return mean.tolist(), std.tolist()

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def __repr__(self) -> str:
        return (f"ImageData({self.split}: {len(self)} images {'x'.join(map(str, self.image_size))}, "
                f"{self.num_classes} classes, from {self.source})")


# ----------------------------------------------------------------------------------------------------------------
# Reading sources: a folder, a zip or a tar archive all become {posix relative name: reader}


class _Source:
    """Uniform access to the files of a folder, zip or tar archive."""

    def __init__(self, path: Path):
        self.path = path
        self.files: dict[str, Callable[[], bytes]] = {}
        self.dirs: set[str] = set()
        if path.is_dir():
            self._walk_dir()
        elif zipfile.is_zipfile(path):
            self._read_zip()
        elif _is_tar(path):
            self._read_tar()
        else:
            raise DataError(f"dataset {str(path)!r} is neither a folder, a .zip nor a .tar archive")

    def _walk_dir(self) -> None:
        root = self.path
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(root).as_posix()
            if rel != ".":
                self.dirs.add(rel)
            for f in filenames:
                full = os.path.join(dirpath, f)
                name = f if rel == "." else f"{rel}/{f}"
                self.files[name] = (lambda p=full: Path(p).read_bytes())

    def _read_zip(self) -> None:
        try:
            zf = zipfile.ZipFile(self.path)
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"zip archive {str(self.path)!r} cannot be read: {e}") from None
        for info in infos:
            name = info.filename.rstrip("/")
            if info.is_dir():
                self.dirs.add(name)
            else:
                self.files[name] = (lambda n=info.filename: _zip_read(zf, self.path, n))
                self._add_parents(name)

    def _read_tar(self) -> None:
        # Tar members can only be read in order; small datasets fit in memory, so read them all once.
        data: dict[str, bytes] = {}
        try:
            with tarfile.open(self.path, "r:*") as tf:
                for m in tf:
                    name = m.name.lstrip("./").rstrip("/")
                    if not name:
                        continue
                    if m.isdir():
                        self.dirs.add(name)
                    elif m.isfile():
                        f = tf.extractfile(m)
                        data[name] = f.read() if f is not None else b""
                        self._add_parents(name)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"tar archive {str(self.path)!r} cannot be read: {e}") from None
        self.files = {k: (lambda v=v: v) for k, v in data.items()}

    def _add_parents(self, name: str) -> None:
        for p in PurePosixPath(name).parents:
            if str(p) != ".":
                self.dirs.add(str(p))

    def describe(self, name: str) -> str:
        if self.path.is_dir():
            return str(self.path / name)
        return f"{self.path}:{name}"


def _zip_read(zf: zipfile.ZipFile, path: Path, name: str) -> bytes:
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # e.g. CRC error in a damaged member
        raise DataError(f"{path}:{name} cannot be read from the zip: {e}") from None


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _fingerprint(path: Path) -> str:
    """Paths, sizes and modification times of everything under ``path`` (one file: that file)."""
    h = hashlib.sha1()
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                full = os.path.join(dirpath, f)
                st = os.stat(full)
                h.update(f"{os.path.relpath(full, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        st = path.stat()
        h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Layouts


def _is_hidden(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(p.startswith(".") or p.startswith("__MACOSX") for p in parts) or parts[-1].lower() in _JUNK


def _strip_common_prefix(files: list[str], dirs: set[str]) -> str:
    """The wrapper folder(s) every file sits in (``cifar10/`` in ``cifar10/train/cat/1.jpg``), if any."""
    prefix = ""
    while True:
        rel = [f[len(prefix):] for f in files]
        heads = {r.split("/", 1)[0] for r in rel}
        if len(heads) != 1 or not all(r.count("/") >= 2 for r in rel):
            return prefix
        head = heads.pop()
        if head.lower() in SPLIT_NAMES:
            return prefix
        prefix += head + "/"


def _decode(raw: bytes, where: str, image_size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
            if image_size is not None and im.size != (image_size[1], image_size[0]):
                im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{where} is not a readable image: {type(e).__name__}: {e}") from None


def _read_image_folder(src: _Source, skip_corrupt: bool,
                       image_size: tuple[int, int] | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], list[str]]:
    files = sorted(f for f in src.files if not _is_hidden(f))
    if not files:
        raise NoClassFoldersError(f"dataset {str(src.path)!r} contains no files")
    prefix = _strip_common_prefix(files, src.dirs)
    rel = {f: f[len(prefix):] for f in files}
    top_dirs = {d[len(prefix):] for d in src.dirs if d.startswith(prefix) and d[len(prefix):] and "/" not in d[len(prefix):]}
    split_dirs = {d for d in top_dirs if d.lower() in SPLIT_NAMES}
    if split_dirs:
        roots = {SPLIT_NAMES[d.lower()]: prefix + d + "/" for d in sorted(split_dirs)}
    else:
        roots = {"train": prefix}
    if "train" not in roots:
        raise DataError(f"dataset {str(src.path)!r} has {sorted(split_dirs)} folders but no 'train' folder")

    # Classes come from the train split's folders; other splits must use the same names.
    def class_dirs(root: str) -> list[str]:
        out = set()
        for d in src.dirs:
            if d.startswith(root) and d[len(root):] and "/" not in d[len(root):] and not _is_hidden(d):
                out.add(d[len(root):])
        return sorted(out)

    classes = class_dirs(roots["train"])
    if not classes:
        raise NoClassFoldersError(f"dataset {src.describe(roots['train'].rstrip('/') or '.')!r} has no class folders "
                                  "(expected <class>/<image> files)")
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: list[str] = []
    for split, root in roots.items():
        names = class_dirs(root)
        extra = sorted(set(names) - set(classes))
        if extra:
            raise DataError(f"{src.describe(root.rstrip('/'))!r} has class folder(s) {extra} that train does not have")
        per_class: dict[str, list[str]] = {c: [] for c in classes}
        for f in files:
            r = f[len(root):] if f.startswith(root) else None
            if r is None or "/" not in r:
                continue  # loose files next to the class folders (README, LICENSE) are not samples
            per_class[r.split("/", 1)[0]].append(f)
        for c in names:
            if not per_class[c]:
                raise DataError(f"class folder {src.describe(root + c)!r} is empty")
        names = [f for c in classes for f in per_class[c]]
        labels = np.asarray([ci for ci, c in enumerate(classes) for _ in per_class[c]], dtype=np.int64)
        x, kept, bad = _decode_files(src, names, skip_corrupt, image_size)
        skipped += bad
        if not kept:
            raise DataError(f"split {split!r} of {str(src.path)!r} has no readable images")
        splits[split] = (x, labels[kept])
    del rel
    return splits, classes, skipped


def _decode_files(src: _Source, names: list[str], skip_corrupt: bool,
                  image_size: tuple[int, int] | None) -> tuple[np.ndarray | None, list[int], list[str]]:
    """Decode the files ``names`` of ``src``: uint8 (N, C, H, W) (None when none is readable), the indices of the
    names decoded, and the files skipped (unreadable or not images; only with ``skip_corrupt``, else they raise).
    Every image must have the size of the first one."""
    imgs: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[str] = []
    first_shape: tuple[tuple[int, ...], str] | None = None
    for i, f in enumerate(names):
        where = src.describe(f)
        try:
            if not f.lower().endswith(IMAGE_EXTENSIONS):
                raise DataError(f"{where} is not an image file (extension {PurePosixPath(f).suffix or 'none'!r})")
            a = _decode(src.files[f](), where, image_size)
        except DataError:
            if not skip_corrupt:
                raise
            skipped.append(where)
            continue
        if first_shape is None:
            first_shape = (a.shape, where)
        elif a.shape != first_shape[0]:
            raise DataError(
                f"images differ in size ({first_shape[1]} is {first_shape[0][1]}x{first_shape[0][0]}, {where} is "
                f"{a.shape[1]}x{a.shape[0]}): pass image_size=(H, W) to resize, or stream large images with "
                "lightnn.data.stream_image_folder")
        imgs.append(a)
        kept.append(i)
    x = np.stack(imgs).transpose(0, 3, 1, 2).copy() if imgs else None
    return x, kept, skipped


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        return pickle.loads(raw, encoding="bytes")
    except Exception as e:
        raise DataError(f"{where} is not a readable CIFAR pickle: {type(e).__name__}: {e}") from None


def _cifar_layout(src: _Source) -> str | None:
    base = {PurePosixPath(f).name: f for f in src.files}
    if "data_batch_1" in base:
        return "cifar10"
    if {"train", "test", "meta"} <= set(base):
        return "cifar100"
    return None


def _read_cifar_pickle(src: _Source, kind: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], list[str]]:
    base = {PurePosixPath(f).name: f for f in src.files}

    def load(name: str) -> dict:
        if name not in base:
            raise DataError(f"CIFAR folder {str(src.path)!r} lacks {name!r}")
        return _unpickle(src.files[base[name]](), src.describe(base[name]))

    def arrays(d: dict, key: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[key], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise DataError(f"{where} does not hold CIFAR arrays: {e}") from None
        return x, y

    if kind == "cifar10":
        meta = load("batches.meta")
        classes = [c.decode() for c in meta[b"label_names"]]
        parts = [arrays(load(f"data_batch_{i}"), b"labels", f"data_batch_{i}") for i in range(1, 6)]
        splits = {"train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))}
        if "test_batch" in base:
            splits["test"] = arrays(load("test_batch"), b"labels", "test_batch")
    else:
        meta = load("meta")
        classes = [c.decode() for c in meta[b"fine_label_names"]]
        splits = {"train": arrays(load("train"), b"fine_labels", "train"),
                  "test": arrays(load("test"), b"fine_labels", "test")}
    return splits, classes, []


# ----------------------------------------------------------------------------------------------------------------
# Cache


def _resolve(path: str | os.PathLike) -> Path:
    if str(path) == "sample":
        return SAMPLE_PATH
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"dataset path {str(p)!r} does not exist")
    return p.resolve()


def _cache_file(src: Path, image_size: tuple[int, int] | None) -> Path:
    key = hashlib.sha1(f"{src}\0{image_size}".encode()).hexdigest()[:16]
    return cache_dir() / "datasets" / f"{src.name}-{key}.pt"


def _read_cache(cache: Path, src: Path, fingerprint: str, image_size, explicit: bool) -> dict | None:
    if not cache.exists():
        return None
    try:
        obj = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as e:
        if explicit:
            raise DataError(f"cache {str(cache)!r} cannot be read ({type(e).__name__}); delete it") from None
        return None  # a damaged automatic cache is simply rebuilt
    if not (isinstance(obj, dict) and obj.get("format") == _CACHE_FORMAT):
        raise DataError(f"cache {str(cache)!r} is not a lightnn dataset cache")
    if obj.get("source") != str(src) or obj.get("image_size") != (list(image_size) if image_size else None):
        raise DataError(f"cache {str(cache)!r} was built from other data ({obj.get('source')!r}, image_size "
                        f"{obj.get('image_size')}), not {str(src)!r}; delete it or choose another cache path")
    if obj.get("version") != _CACHE_VERSION or obj.get("fingerprint") != fingerprint:
        return None  # the source changed since the cache was written: re-read it
    return obj


def load_dataset(path: str | os.PathLike = "sample", split: str = "train", *, val_fraction: float = 0.1,
                 seed: int = 0, image_size: tuple[int, int] | None = None, skip_corrupt: bool = False,
                 cache: str | os.PathLike | bool | None = True) -> ImageData:
    """Load one split of a small image dataset as uint8 tensors, decoding it once into a cache.

    Args:
        path: an ImageFolder folder/.zip/.tar(.gz), a CIFAR-10/100 python-pickle folder or .tar.gz, or ``"sample"``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every train image, no validation carved out).
            Without a ``val`` folder, ``"val"`` is a stratified ``val_fraction`` of train drawn with ``seed`` and
            ``"train"`` is the rest (CIFAR-10, 0.1: 45,000 / 5,000); the same seed always gives the same split.
        image_size: (H, W) to resize every image to; needed when images differ in size.
        skip_corrupt: skip unreadable or non-image files with a warning and a count instead of raising.
        cache: ``True`` (default: ``$LIGHTNN_CACHE`` or ``~/.cache/lightnn``), a file path, or ``False``/``None``
            to decode without caching. The cache holds a fingerprint of the source (paths, sizes, mtimes): a
            changed source is re-read; a cache file built from other data raises :class:`DataError`.

    Returns:
        :class:`ImageData` with ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), ``classes`` (names).
    """
    if split not in ("train", "val", "test", "all"):
        raise DataError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    src_path = _resolve(path)
    size = tuple(int(s) for s in image_size) if image_size is not None else None
    fp = _fingerprint(src_path)
    explicit = cache not in (True, False, None)
    cache_path = Path(cache).expanduser() if explicit else (_cache_file(src_path, size) if cache else None)
    obj = _read_cache(cache_path, src_path, fp, size, explicit) if cache_path is not None else None
    if obj is None:
        src = _Source(src_path)
        kind = _cifar_layout(src)
        splits, classes, skipped = (_read_cifar_pickle(src, kind) if kind else
                                    _read_image_folder(src, skip_corrupt, size))
        obj = {"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "source": str(src_path), "fingerprint": fp,
               "image_size": list(size) if size else None, "classes": classes, "skipped": skipped,
               "splits": {k: {"images": torch.from_numpy(x), "labels": torch.from_numpy(y)}
                          for k, (x, y) in splits.items()}}
        if cache_path is not None:
            try:
                atomic_torch_save(obj, cache_path)
            except OSError as e:
                warnings.warn(f"could not write dataset cache {cache_path}: {e}", stacklevel=2)
    skipped = list(obj.get("skipped", []))
    if skipped and not skip_corrupt:
        raise DataError(f"{skipped[0]} is not a readable image ({len(skipped)} such file(s) in {str(src_path)!r}); "
                        "pass skip_corrupt=True (--skip-corrupt) to skip them")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable file(s) in {src_path}, e.g. {skipped[0]}", stacklevel=2)

    classes = list(obj["classes"])
    name = "sample" if src_path == SAMPLE_PATH else str(src_path)

    def make(k: str, idx: torch.Tensor | None = None, as_split: str | None = None) -> ImageData:
        s = obj["splits"][k]
        x, y = s["images"], s["labels"]
        if idx is not None:
            x, y = x[idx], y[idx]
        return ImageData(x, y, classes, name, as_split or k, skipped)

    have = obj["splits"]
    if split == "all":
        return make("train", as_split="all")
    if split == "test":
        if "test" not in have:
            raise DataError(f"dataset {name!r} has no test split (it has {sorted(have)})")
        return make("test")
    if "val" in have:
        return make(split)
    if val_fraction == 0.0:
        if split == "val":
            raise DataError(f"dataset {name!r} has no val split and val_fraction is 0")
        return make("train")
    train_idx, val_idx = split_indices(have["train"]["labels"], val_fraction, seed)
    return make("train", train_idx if split == "train" else val_idx, split)


def load_unlabeled(path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Every image file under ``path`` (a folder, .zip or .tar; class folders or not), uint8 (N, C, H, W) in name
    order, without labels and without caching: for calibration images in a flat folder. Files that are not images
    (by extension) and hidden files are passed over; the decoding and its errors are :func:`load_dataset`'s."""
    src = _Source(_resolve(path))
    names = sorted(f for f in src.files if not _is_hidden(f) and f.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DataError(f"{str(src.path)!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    x, _, _ = _decode_files(src, names, False, None if image_size is None else tuple(int(s) for s in image_size))
    return torch.from_numpy(x)


def split_indices(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded train/val index split: ``round(n_c * val_fraction)`` of each class goes to val."""
    g = torch.Generator().manual_seed(int(seed))
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(round(idx.numel() * val_fraction))
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values
