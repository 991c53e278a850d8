"""Small image datasets decoded once into uint8 tensors, cached with a fingerprint of their source.

Sources (``load_dataset(path)``):

- an ImageFolder tree (``<class>/<image>`` or ``train|val|test/<class>/<image>``) as a folder, a ``.zip`` or a
  ``.tar[.gz|.bz2|.xz]`` archive (read directly, no extraction needed);
- torchvision's CIFAR-10/100 python-pickle layout (``cifar-10-batches-py/data_batch_1..5, test_batch`` or
  ``cifar-100-python/train, test, meta``), as a folder or the original ``.tar.gz``, recognized only at the top of
  the source (its root, or that one folder directly under it) and read with an unpickler that admits plain data
  only (:mod:`lightnn.data.cifar_pickle`);
- ``"sample"``: the 5,000-image CIFAR-10 sample shipped in the package.

Bad input is a :class:`~lightnn.errors.DataError` naming the file: files over ``MAX_IMAGE_FILE_BYTES`` (CIFAR
batches: ``MAX_PICKLE_FILE_BYTES``) are refused by their declared size before being read and are never read past
that bound; images over ``MAX_IMAGE_PIXELS`` are refused before decoding; symlink loops, names that are not
UTF-8 and unreadable folders are named instead of crashing or being passed over.

Decoded images land in a uint8 cache (``$LIGHTNN_CACHE`` or ``~/.cache/lightnn``, outside the repository) that
records a fingerprint of the source (paths, sizes, modification times), so a changed source is re-read and a
cache built from other data is refused with :class:`~lightnn.errors.DataError`. When the data has no validation
split, one is carved from train with a fixed seed, stratified per class (CIFAR-10: 45,000 / 5,000).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import stat
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterable

import numpy as np
import torch

from ..errors import DataError
from ..utils.io import atomic_torch_save
from .cifar_pickle import load_plain_pickle

__all__ = ["ImageData", "load_dataset", "load_unlabeled", "cache_dir", "SAMPLE_PATH", "IMAGE_EXTENSIONS", "SPLIT_NAMES", "SPLITS",
           "NoClassFoldersError", "MAX_IMAGE_FILE_BYTES", "MAX_PICKLE_FILE_BYTES", "MAX_IMAGE_PIXELS"]

SAMPLE_PATH = Path(__file__).resolve().parent / "sample" / "cifar10_sample.zip"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test", "all")  # what load_dataset(split=...) takes
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_JUNK = {"thumbs.db", "desktop.ini"}
_CACHE_FORMAT = "lightnn-data-cache"
_CACHE_VERSION = 1
# What one file may cost, checked before it is read or decoded (module constants: raise them for unusual data)
MAX_IMAGE_FILE_BYTES = 64 * 2**20  # one stored image, or any other file of a dataset
MAX_PICKLE_FILE_BYTES = 256 * 2**20  # one CIFAR batch (CIFAR-100's "train" is 155 MB)
MAX_IMAGE_PIXELS = 2**26  # one decoded image (8192 x 8192); Pillow only starts warning at 89 M pixels
_CIFAR_DIRS = ("cifar-10-batches-py", "cifar-100-python")
_CIFAR10_FILES = ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                  "test_batch")
_CIFAR100_FILES = ("meta", "train", "test")
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "GIF", "WEBP", "TIFF")  # Pillow's names for IMAGE_EXTENSIONS' formats


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


def _shown(path: str | os.PathLike) -> str:
    """``path`` printable even when a name in it is not UTF-8 (its undecodable bytes shown as ``\\xNN``)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _check_name(name: str, where: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{_shown(where)}: the name is not valid UTF-8; rename it") from None


def _is_cifar_member(name: str) -> bool:
    """Whether ``name`` sits where :func:`_cifar_layout` looks for CIFAR batches (the top of the source)."""
    p = PurePosixPath(name)
    return p.name in _CIFAR10_FILES + _CIFAR100_FILES and str(p.parent) in (".", *_CIFAR_DIRS)


def _check_declared_size(declared: int, name: str, where: str) -> int:
    """The most bytes lightnn reads for the source's file ``name`` (a CIFAR batch: ``MAX_PICKLE_FILE_BYTES``,
    anything else ``MAX_IMAGE_FILE_BYTES``), after refusing a file whose declared size is over it."""
    limit, const = (MAX_PICKLE_FILE_BYTES, "MAX_PICKLE_FILE_BYTES") if _is_cifar_member(name) else \
        (MAX_IMAGE_FILE_BYTES, "MAX_IMAGE_FILE_BYTES")
    if declared > limit:
        raise DataError(f"{where} is larger than lightnn reads for one file (lightnn.data.datasets.{const} = "
                        f"{limit:,} bytes): it declares {declared:,} bytes")
    return limit


def _read_bounded(f: BinaryIO, declared: int, name: str, where: str) -> bytes:
    """Read the file object ``f`` (the source's file ``name``): refused before reading when its declared size
    (tar header, zip entry, file size) is over its bound, and while reading when its data turns out longer."""
    limit = _check_declared_size(declared, name, where)
    data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{where} holds more than the {limit:,} bytes lightnn reads for one file (it declares "
                        f"{declared:,})")
    return data


def _walk(root: Path) -> tuple[list[tuple[str, str, os.stat_result | None]], set[str]]:
    """Every non-hidden file under the folder ``root``, following symlinks, as (relative posix name, path, stat;
    None when it cannot be stat'ed, e.g. a broken link, which reading then reports), and every folder.

    A symlink leading back to a folder it sits in, a folder that cannot be listed and a name that is not UTF-8 are
    a :class:`DataError` naming them (``os.walk`` would recurse through a loop until the path is too long and
    silently pass over folders it cannot list)."""
    files: list[tuple[str, str, os.stat_result | None]] = []
    dirs: set[str] = set()
    try:
        top = os.stat(root)
    except OSError as e:
        raise DataError(f"dataset folder {_shown(root)} cannot be read: {e.strerror or e}") from None
    stack = [(str(root), "", frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        path, rel, ancestors = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"dataset folder {_shown(path)} cannot be listed: {e.strerror or e}") from None
        subdirs = []
        for e in entries:
            name = rel + e.name
            if _is_hidden(name):
                continue
            _check_name(name, e.path)
            try:
                st: os.stat_result | None = e.stat()
            except OSError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    raise DataError(f"{_shown(e.path)} is a symlink loop: it leads back to a folder it is in")
                dirs.add(name)
                subdirs.append((e.path, name + "/", ancestors | {key}))
            else:
                files.append((name, e.path, st))
        stack.extend(reversed(subdirs))
    return files, dirs


def _read_file(path: str, name: str) -> bytes:
    where = _shown(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise DataError(f"{where} is not a regular file")
        with open(path, "rb") as f:
            return _read_bounded(f, os.fstat(f.fileno()).st_size, name, where)
    except OSError as e:
        raise DataError(f"{where} cannot be read: {e.strerror or e}") from None


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
        files, self.dirs = _walk(self.path)
        for name, full, _ in files:
            self.files[name] = (lambda p=full, n=name: _read_file(p, n))

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
                self.files[name] = (lambda i=info: _zip_read(zf, self.path, i))
                self._add_parents(name)

    def _read_tar(self) -> None:
        # Tar members can only be read in order, so the members a layout can use (images, CIFAR batches) are read
        # here, each within its bound; other members are listed (layouts need their names) but never read.
        data: dict[str, bytes | None] = {}
        try:
            with tarfile.open(self.path, "r:*") as tf:
                for m in tf:
                    name = _tar_name(m.name)
                    if not name or _is_hidden(name):
                        continue
                    _check_name(name, self.describe(name))
                    if m.isdir():
                        self.dirs.add(name)
                    elif m.isfile():
                        self._add_parents(name)
                        data[name] = None
                        if name.lower().endswith(IMAGE_EXTENSIONS) or _is_cifar_member(name):
                            f = tf.extractfile(m)
                            data[name] = _read_bounded(f, m.size, name, self.describe(name)) if f else b""
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise DataError(f"tar archive {str(self.path)!r} cannot be read: {e}") from None
        self.files = {k: (lambda k=k, v=v: v if v is not None else self._unread(k)) for k, v in data.items()}

    def _unread(self, name: str) -> bytes:
        raise DataError(f"{self.describe(name)} was not read: it is neither an image nor a CIFAR batch")

    def _add_parents(self, name: str) -> None:
        for p in PurePosixPath(name).parents:
            if str(p) != ".":
                self.dirs.add(str(p))

    def describe(self, name: str) -> str:
        if self.path.is_dir():
            return _shown(self.path / name)
        return f"{self.path}:{_shown(name)}"


def _tar_name(name: str) -> str:
    """A member name relative to the archive's root (``./a/b`` -> ``a/b``; ``lstrip("./")`` would also strip the
    dot of a hidden ``.a``)."""
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _zip_read(zf: zipfile.ZipFile, path: Path, info: zipfile.ZipInfo) -> bytes:
    where = f"{path}:{info.filename}"
    try:
        with zf.open(info) as f:
            return _read_bounded(f, info.file_size, info.filename, where)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, zlib.error) as e:
        # e.g. a CRC error in a damaged member, an encrypted member, an unsupported compression method
        raise DataError(f"{where} cannot be read from the zip: {e}") from None


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _fingerprint(path: Path) -> str:
    """Names, sizes and modification times of the files under ``path`` (one file: that file)."""
    h = hashlib.sha1()
    if path.is_dir():
        for name, _, st in _walk(path)[0]:
            size, mtime = (st.st_size, st.st_mtime_ns) if st is not None else (-1, -1)
            h.update(f"{name}\0{size}\0{mtime}\n".encode())
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
    from PIL import Image

    im = _open_rgb(raw, where)
    if image_size is not None and im.size != (image_size[1], image_size[0]):
        im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _open_rgb(raw: bytes, where: str):
    """The image in ``raw`` as 8-bit RGB (a ``PIL.Image``); images over ``MAX_IMAGE_PIXELS`` are refused from
    their header, before any pixel is decoded. Every failure is a :class:`DataError` naming ``where``."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # lightnn's own bound below is lower than the size where Pillow warns; Pillow's error (twice its
            # bound) still raises and is reported below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()
            # only the decoders of IMAGE_EXTENSIONS: Pillow identifies files by content, and a ".png" holding
            # PostScript would otherwise go to its EPS plugin, which runs Ghostscript
            im = Image.open(io.BytesIO(raw), formats=[f for f in _PIL_FORMATS if f in Image.OPEN])
        with im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise DataError(f"{where} is {w}x{h} = {w * h:,} pixels, more than lightnn decodes for one image "
                                f"(lightnn.data.datasets.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}): refused "
                                "before decoding")
            return _to_rgb(im, where)
    except DataError:
        raise
    except Image.UnidentifiedImageError:  # its message names the BytesIO, not the file
        raise DataError(f"{where} is not a readable image: UnidentifiedImageError: Pillow recognizes no image "
                        "format in it") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{where} is too large to decode, refused before decoding "
                        f"(lightnn.data.datasets.MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,}): {e}") from None
    except Exception as e:  # decoders of damaged or crafted files raise many types (OSError, SyntaxError, ...)
        raise DataError(f"{where} is not a readable image: {type(e).__name__}: {e}") from None


def _to_rgb(im, where: str):
    """``im`` as 8-bit RGB. High-bit-depth grey keeps its top 8 bits (``v >> 8``, so ``257 * v`` gives back ``v``),
    the reduction Pillow itself applies to 16-bit RGB(A) and grey+alpha PNGs: ``convert("RGB")`` would clip
    16-bit grey (Pillow modes ``I;16*``, and ``I`` from 16-bit PNG/PGM, which Pillow scales to 0..65535) to
    white. Other 32-bit integer (``I``) and floating-point (``F``) images have no defined 8-bit scale: refused."""
    from PIL import Image

    mode = im.mode
    if mode in _GREY16_MODES or (mode == "I" and im.format in ("PNG", "PPM")):
        a = np.asarray(im)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise DataError(f"{where} has pixel values outside 0..65535 (Pillow mode {mode!r}), not a 16-bit image")
        grey = (a.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        kind = "floating-point" if mode.startswith("F") else "32-bit integer"
        raise DataError(f"{where} has {kind} pixels (Pillow mode {mode!r}, format {im.format}), which have no "
                        "defined 8-bit scale; save it as an 8- or 16-bit image")
    return im.convert("RGB")


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


def _cifar_layout(src: _Source) -> tuple[str, str] | None:
    """``(kind, folder prefix)`` when CIFAR batches sit at the top of ``src``: in its root or in the
    ``cifar-10-batches-py`` / ``cifar-100-python`` folder directly under it. Files so named anywhere else (in a
    class folder of an ImageFolder tree, say) are no CIFAR batches: they are never unpickled."""
    for prefix in ("", *(d + "/" for d in _CIFAR_DIRS)):
        if prefix + "data_batch_1" in src.files:
            return "cifar10", prefix
        if all(prefix + n in src.files for n in _CIFAR100_FILES):
            return "cifar100", prefix
    return None


def _entry(d: dict, key: str, where: str) -> object:
    """``d[key]``; Python 2 pickles (the CIFAR originals) have byte-string keys, re-pickled ones may have str."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{where} has no {key!r} entry (it has {sorted(map(str, d))[:8]})")


def _class_names(meta: dict, where: str, key: str) -> list[str]:
    names = _entry(meta, key, where)
    if not (isinstance(names, list) and names and all(isinstance(n, (bytes, str)) for n in names)):
        raise DataError(f"{where}: {key!r} is not a list of class names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _cifar_arrays(d: dict, where: str, key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch, checked (values, sizes, label range)."""
    x, y = np.asarray(_entry(d, "data", where)), np.asarray(_entry(d, key, where))
    if x.dtype.kind not in "iu" or x.size == 0 or x.size % 3072 or int(x.min()) < 0 or int(x.max()) > 255:
        raise DataError(f"{where}: 'data' is not CIFAR pixels (a non-empty integer array of 0..255 and "
                        f"N x 3072 values; got {x.dtype} {x.shape})")
    n = x.size // 3072
    if y.shape != (n,) or y.dtype.kind not in "iu" or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DataError(f"{where}: {key!r} is not {n} labels in 0..{num_classes - 1} (got {y.dtype} {y.shape})")
    return x.astype(np.uint8).reshape(n, 3, 32, 32), y.astype(np.int64)


def _read_cifar_pickle(src: _Source, kind: str,
                       prefix: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], list[str]]:
    def load(name: str) -> tuple[dict, str]:
        if prefix + name not in src.files:
            raise DataError(f"CIFAR folder {src.describe(prefix.rstrip('/') or '.')!r} lacks {name!r}")
        where = src.describe(prefix + name)
        obj = load_plain_pickle(src.files[prefix + name](), where)
        if not isinstance(obj, dict):
            raise DataError(f"{where} does not hold a CIFAR dict (it holds a {type(obj).__name__})")
        return obj, where

    if kind == "cifar10":
        classes = _class_names(*load("batches.meta"), "label_names")
        parts = [_cifar_arrays(*load(f"data_batch_{i}"), "labels", len(classes)) for i in range(1, 6)]
        splits = {"train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))}
        if prefix + "test_batch" in src.files:
            splits["test"] = _cifar_arrays(*load("test_batch"), "labels", len(classes))
    else:
        classes = _class_names(*load("meta"), "fine_label_names")
        splits = {s: _cifar_arrays(*load(s), "fine_labels", len(classes)) for s in ("train", "test")}
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
    try:
        if not cache.is_file():
            return None
    except OSError:  # an unreadable cache folder: decode as if there were no cache
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


def _write_cache(obj: dict, cache: Path) -> None:
    """Save the decoded dataset; a cache that cannot be written (read-only folder, full disk) is a warning, and
    ``atomic_write`` removes its temporary file, so no partial cache remains."""
    try:
        atomic_torch_save(obj, cache)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write of its zip records as RuntimeError
        reason = e if isinstance(e, OSError) or not isinstance(e.__context__, OSError) else e.__context__
        warnings.warn(f"could not write the dataset cache {cache} ({reason}); continuing without it", stacklevel=3)


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
    if split not in SPLITS:
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
        layout = _cifar_layout(src)
        splits, classes, skipped = (_read_cifar_pickle(src, *layout) if layout else
                                    _read_image_folder(src, skip_corrupt, size))
        obj = {"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "source": str(src_path), "fingerprint": fp,
               "image_size": list(size) if size else None, "classes": classes, "skipped": skipped,
               "splits": {k: {"images": torch.from_numpy(x), "labels": torch.from_numpy(y)}
                          for k, (x, y) in splits.items()}}
        if cache_path is not None:
            _write_cache(obj, cache_path)
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
