"""Datasets under hostile or broken input: CIFAR pickles never run code, high-bit-depth images keep their values,
files and images over their bounds are refused before they cost memory, and broken trees (names that are not
UTF-8, symlink loops, a full or read-only cache, a failing DataLoader worker) give one DataError naming the input.
Every input is made by the test itself."""

from __future__ import annotations

import errno
import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnn.data import datasets as ds
from lightnn.data import load_dataset, stream_image_folder
from lightnn.data import stream as st
from lightnn.errors import DataError
from lightnn.utils.io import atomic_write

CLASSES = ["ant", "bee", "cat"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_tree(root: Path, per_class: int = 4, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "train" / c / f"{i}.png")
    return root


def png(w: int, h: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, so its header can say anything (16-bit RGB, 20000 x 20000 with a few data bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def tgz(src: Path, dest: Path, arcname: str) -> Path:
    with tarfile.open(dest, "w:gz") as t:
        t.add(src, arcname=arcname)
    return dest


class RunsCode:
    """Unpickling this calls ``fn(arg)``: the payload of a malicious dataset."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def creates(marker: Path) -> bytes:
    return pickle.dumps({b"data": RunsCode(exec, f"open({str(marker)!r}, 'w').close()"), b"labels": [0]})


# ---------------------------------------------------------------------------------------------------------------
# 1. CIFAR pickles


def cifar10(folder: Path, n: int = 6) -> dict:
    """A CIFAR-10-shaped pickle folder: each batch with another pickle protocol, the first with numpy 1.x's module
    paths (``numpy.core.multiarray``) as the original files have. Returns what it wrote."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for i, name in enumerate(names):
        batch = {b"batch_label": f"batch {i}".encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}_{j}.png".encode() for j in range(n)]}
        raw = pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.") if i == 0 else \
            pickle.dumps(batch, protocol=(0, 1, 3, 4, 5)[i - 1])
        (folder / name).write_bytes(raw)
        written[name] = batch
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": n, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return written


def test_genuine_cifar10_pickles_load_from_folder_and_tar_gz(tmp_path):
    written = cifar10(tmp_path / "data" / "cifar-10-batches-py")
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]
    want_x = torch.from_numpy(np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32))
    want_y = torch.tensor(sum((b[b"labels"] for b in train), []))
    archive = tgz(tmp_path / "data" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    for source in (tmp_path / "data", tmp_path / "data" / "cifar-10-batches-py", archive):
        d = load_dataset(source, "all", cache=False)
        assert d.classes == [f"class{i}" for i in range(10)] and d.images.dtype == torch.uint8
        assert torch.equal(d.images, want_x) and torch.equal(d.labels, want_y)
        te = load_dataset(source, "test", cache=False)
        assert te.images.shape == (6, 3, 32, 32) and te.labels.tolist() == written["test_batch"][b"labels"]


def test_genuine_cifar100_pickles_load(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for split, n in (("train", 8), ("test", 4)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": list(range(n)),
                 b"coarse_labels": [0] * n, b"filenames": [b"x.png"] * n}
        (folder / split).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"f{i}".encode() for i in range(8)],
                                               b"coarse_label_names": [b"c"]}))
    d = load_dataset(tmp_path, "test", cache=False)
    assert d.classes == [f"f{i}" for i in range(8)] and d.labels.tolist() == [0, 1, 2, 3]
    assert torch.equal(d.images[2], torch.from_numpy(pickle.loads((folder / "test").read_bytes())[b"data"][2]
                                                     .reshape(3, 32, 32)))


@pytest.mark.parametrize("where", ["root", "cifar-10-batches-py", "tar.gz"])
def test_pickle_that_runs_code_at_the_top_is_refused(tmp_path, where):
    probe = tmp_path / "probe"
    pickle.loads(creates(probe))  # the oracle: plain unpickling of this payload does run code
    assert probe.exists()
    marker = tmp_path / "pwned"
    data = tmp_path / "data"
    folder = data if where == "root" else data / "cifar-10-batches-py"
    cifar10(folder)
    (folder / "data_batch_1").write_bytes(creates(marker))
    source = tgz(folder, tmp_path / "c.tar.gz", "cifar-10-batches-py") if where == "tar.gz" else data
    with pytest.raises(DataError, match=r"data_batch_1 is not a plain CIFAR pickle: .*builtins\.exec.*refused"):
        load_dataset(source, "all")
    assert not marker.exists()
    (folder / "batches.meta").write_bytes(pickle.dumps(RunsCode(os.system, f"touch {marker}")))
    with pytest.raises(DataError, match=r"batches\.meta is not a plain CIFAR pickle: .*system"):
        load_dataset(data, "all", cache=False)
    assert not marker.exists()


def test_cifar_names_inside_a_class_folder_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    tree = make_tree(tmp_path / "tree")
    (tree / "train" / "cat" / "batches.meta").write_bytes(creates(marker))
    (tree / "train" / "cat" / "data_batch_1").write_bytes(creates(marker))
    archive = tgz(tree, tmp_path / "tree.tar.gz", "tree")
    for source in (tree, archive):
        with pytest.raises(DataError, match=r"batches\.meta is not an image file"):  # the ImageFolder rule
            load_dataset(source, "all", cache=False)
        with pytest.warns(UserWarning, match="skipped 2 unreadable"):
            d = load_dataset(source, "all", cache=False, skip_corrupt=True)
        assert len(d) == 12 and d.classes == CLASSES
    assert len(ds.load_unlabeled(tree)) == 12  # not images: passed over
    assert not marker.exists()


def test_cifar_batch_contents_are_checked(tmp_path):
    folder = tmp_path / "data"
    cifar10(folder)

    def refused(batch: object, pattern: str) -> None:
        (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
        with pytest.raises(DataError, match=pattern):
            load_dataset(folder, "all", cache=False)

    ok = np.zeros((2, 3072), np.uint8)
    refused({b"data": ok, b"labels": [0, 10]}, r"data_batch_3: 'labels' is not 2 labels in 0\.\.9")
    refused({b"data": ok[:, :100], b"labels": [0, 1]}, r"data_batch_3: 'data' is not CIFAR pixels")
    refused({b"data": ok.astype(np.int64) + 300, b"labels": [0, 1]}, "'data' is not CIFAR pixels")
    refused({b"labels": [0, 1]}, r"data_batch_3 has no 'data' entry")
    refused([1, 2], r"data_batch_3 does not hold a CIFAR dict")
    refused({b"data": np.array([b"x", 1], dtype=object), b"labels": [0]}, r"numpy dtype 'O8'")
    refused({b"data": ok, b"labels": [0, 1], b"x": {1, 2}, b"y": ds.Path("p")}, r"global pathlib\.PosixPath")
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": ok, b"labels": [0, 1]})[:-9])
    with pytest.raises(DataError, match="data_batch_3 is not a readable CIFAR pickle"):
        load_dataset(folder, "all", cache=False)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks 'data_batch_3'"):
        load_dataset(folder, "all", cache=False)


# ---------------------------------------------------------------------------------------------------------------
# 2. High bit depth


def test_high_bit_depth_images_keep_their_top_8_bits(tmp_path):
    v = np.array([0, 1, 255, 256, 257, 4660, 32767, 32768, 51400, 65280, 65534, 65535], np.uint16).reshape(3, 4)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(v).save(flat / "a_grey16.png")
    assert Image.open(flat / "a_grey16.png").mode == "I;16"  # the mode convert("RGB") turned all white
    rgb = np.stack([v, v[::-1], 65535 - v], axis=-1)
    rows = b"".join(b"\x00" + r.astype(">u2").tobytes() for r in rgb)
    (flat / "b_rgb16.png").write_bytes(png(4, 3, 16, 2, rows))
    (flat / "c_grey16.pgm").write_bytes(b"P5 4 3 65535\n" + v.astype(">u2").tobytes())  # Pillow mode "I"
    Image.fromarray(v).save(flat / "d_grey16.tif")
    x = ds.load_unlabeled(flat)
    top = torch.from_numpy((v >> 8).astype(np.uint8))
    assert top.tolist()[0] == [0, 0, 0, 1] and top.max() == 255
    for i in (0, 2, 3):
        assert torch.equal(x[i], top.expand(3, 3, 4)), i
    assert torch.equal(x[1], torch.from_numpy((rgb >> 8).astype(np.uint8)).permute(2, 0, 1))
    # 16 bits made from 8 (u * 257) come back exactly
    u = np.arange(0, 256, 17, dtype=np.uint16).reshape(4, 4)
    (tmp_path / "one").mkdir()
    Image.fromarray(u * 257).save(tmp_path / "one" / "e.png")
    assert ds.load_unlabeled(tmp_path / "one")[0, 0].tolist() == u.tolist()


def test_images_without_an_8_bit_scale_are_refused(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)).save(flat / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif has floating-point pixels \(Pillow mode 'F'"):
        ds.load_unlabeled(flat)
    (flat / "f.tif").unlink()
    Image.fromarray(np.arange(12, dtype=np.int32).reshape(3, 4) * 100000).save(flat / "i.tif")
    with pytest.raises(DataError, match=r"i\.tif has 32-bit integer pixels"):
        ds.load_unlabeled(flat)


def test_only_the_formats_of_the_accepted_extensions_are_decoded(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\n"  # Pillow renders EPS by running Ghostscript
    b = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(b, "TGA")
    for name, raw in (("ps.png", eps), ("tga.png", b.getvalue())):
        assert Image.open(io.BytesIO(raw)).format in ("EPS", "TGA")  # what Pillow alone would decode
        (flat / name).write_bytes(raw)
        with pytest.raises(DataError, match=rf"{name} is not a readable image: .*no image format"):
            ds.load_unlabeled(flat)
        (flat / name).unlink()


# ---------------------------------------------------------------------------------------------------------------
# 3. Resource bounds


def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "bomb.png").write_bytes(png(20000, 20000, 8, 2, b"\x00" * 64))  # 400 M pixels in 120 bytes
    with pytest.raises(DataError, match=r"bomb\.png is too large to decode, refused before decoding .*MAX_IMAGE_PIX"):
        ds.load_unlabeled(flat)
    (flat / "bomb.png").write_bytes(png(10000, 10000, 8, 2, b"\x00" * 64))  # under Pillow's error, over our bound
    with pytest.raises(DataError, match=r"bomb\.png is 10000x10000 = 100,000,000 pixels, more than"):
        ds.load_unlabeled(flat)
    (flat / "bomb.png").unlink()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "small.png")
    monkeypatch.setattr(ds, "MAX_IMAGE_PIXELS", 63)
    with pytest.raises(DataError, match=r"small\.png is 8x8 = 64 pixels.*MAX_IMAGE_PIXELS = 63\)"):
        ds.load_unlabeled(flat)
    monkeypatch.setattr(ds, "MAX_IMAGE_PIXELS", 64)
    assert ds.load_unlabeled(flat).shape == (1, 3, 8, 8)


def huge_member_tgz(path: Path, name: str, declared: int) -> Path:
    """A tar.gz of a few KB whose first member's header declares ``declared`` bytes (the data is not there)."""
    ti = tarfile.TarInfo(name)
    ti.size = declared
    with gzip.open(path, "wb") as g:
        g.write(ti.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))
    return path


def test_archive_member_declaring_a_huge_size_is_refused_before_reading(tmp_path, _cache):
    bomb = huge_member_tgz(tmp_path / "bomb.tar.gz", "train/cat/0.png", 1_500_000_000)
    pattern = r"bomb\.tar\.gz:train/cat/0\.png is larger than .*MAX_IMAGE_FILE_BYTES = 67,108,864 bytes\): " \
              r"it declares 1,500,000,000 bytes"
    with pytest.raises(DataError, match=pattern):
        load_dataset(bomb, "all")
    with pytest.raises(DataError, match=pattern):  # extracted for streaming: refused before anything is written
        stream_image_folder(bomb, "train", workers=0)
    assert not any(p.is_file() for p in _cache.rglob("*"))
    # a CIFAR batch gets the larger pickle bound, named as such
    cifar = huge_member_tgz(tmp_path / "c.tar.gz", "cifar-10-batches-py/data_batch_1", 2**30)
    with pytest.raises(DataError, match=r"data_batch_1 is larger .*MAX_PICKLE_FILE_BYTES = 268,435,456 bytes"):
        load_dataset(cifar, "all")


def test_zip_members_are_read_within_their_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "MAX_IMAGE_FILE_BYTES", 2**20)
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/cat/0.png", bytes(3 * 2**20))  # 3 MiB of zeros: a 3 KB member
    assert z.stat().st_size < 2**15
    with pytest.raises(DataError, match=r"0\.png is larger .*= 1,048,576 bytes\): it declares 3,145,728 bytes"):
        load_dataset(z, "all", cache=False)
    # the same member whose headers claim 100 bytes: zipfile stops at 100, its CRC fails, nothing more is read
    raw = z.read_bytes()
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = raw.index(sig) + off
        raw = raw[:i] + struct.pack("<I", 100) + raw[i + 4:]
    z.write_bytes(raw)
    with pytest.raises(DataError, match=r"0\.png cannot be read from the zip: Bad CRC-32"):
        load_dataset(z, "all", cache=False)
    # and data longer than what is declared stops at the bound
    with pytest.raises(DataError, match=r"w holds more than the 1,048,576 bytes lightnn reads for one file"):
        ds._read_bounded(io.BytesIO(bytes(2**21)), 10, "x.png", "w")


def test_folder_files_over_the_bound_or_not_regular_are_refused(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "tree")
    big = tree / "train" / "ant" / "0.png"
    big.write_bytes(big.read_bytes() + bytes(5000))  # still a valid PNG, but over the patched bound
    bound = ds.MAX_IMAGE_FILE_BYTES
    monkeypatch.setattr(ds, "MAX_IMAGE_FILE_BYTES", 4000)
    with pytest.raises(DataError, match=r"ant/0\.png is larger than .*it declares [\d,]+ bytes"):
        load_dataset(tree, "all", cache=False)
    monkeypatch.setattr(ds, "MAX_IMAGE_FILE_BYTES", bound)
    big.unlink()
    os.symlink("/dev/zero", big)  # a device never ends: not read at all
    with pytest.raises(DataError, match=r"ant/0\.png is not a regular file"):
        load_dataset(tree, "all", cache=False)
    big.unlink()
    os.symlink(tree / "nowhere.png", big)
    with pytest.raises(DataError, match=r"ant/0\.png cannot be read: No such file"):
        load_dataset(tree, "all", cache=False)


# ---------------------------------------------------------------------------------------------------------------
# 4. Broken trees and environments


def test_non_utf8_file_names_are_named(tmp_path):
    tree = make_tree(tmp_path / "tree")
    bad = os.fsencode(tree / "train" / "cat") + b"/caf\xe9.png"
    try:
        with open(bad, "wb") as f:
            f.write((tree / "train" / "cat" / "0.png").read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    pattern = r"cat/caf\\xe9\.png: the name is not valid UTF-8; rename it"
    for call in (lambda: load_dataset(tree, "all"), lambda: ds.load_unlabeled(tree),
                 lambda: stream_image_folder(tree, "train", workers=0)):
        with pytest.raises(DataError, match=pattern) as e:
            call()
        str(e.value).encode("utf-8")  # printable as it is
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w", encoding="utf-8", errors="surrogateescape") as t:
        t.add(tree, arcname="tree")
    with pytest.raises(DataError, match=pattern):
        load_dataset(archive, "all")


def test_symlink_loops_are_named(tmp_path):
    tree = make_tree(tmp_path / "tree")
    os.symlink("..", tree / "train" / "cat" / "loop")
    for call in (lambda: load_dataset(tree, "all"), lambda: stream_image_folder(tree, "train", workers=0)):
        with pytest.raises(DataError, match=r"cat/loop(/cat)? is a symlink loop"):
            call()
    (tree / "train" / "cat" / "loop").unlink()
    os.symlink("../ant", tree / "train" / "cat" / "ants")  # a link to a sibling folder is no loop
    assert len(load_dataset(tree, "all", cache=False)) == 16
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    os.symlink(".", wrapper / "inner")  # a lone wrapper folder that is its own parent
    for call in (lambda: load_dataset(wrapper, "all"), lambda: stream_image_folder(wrapper, "train", workers=0)):
        with pytest.raises(DataError, match=r"wrapper/inner is a symlink loop"):
            call()


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "tree")
    real = os.scandir

    def scandir(path="."):  # the tests may run as root, whom chmod does not stop
        if str(path).endswith("bee"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"dataset folder .*train/bee cannot be listed: Permission denied"):
        load_dataset(tree, "all", cache=False)  # os.walk would have passed over bee/ silently


class DiskFull(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails like a full disk."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)


def _partial_then_full(f) -> None:
    f.write(b"partial cache")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failure", ["torch.save on a full disk", "write on a full disk", "cache not creatable"])
def test_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path, monkeypatch, _cache, failure):
    tree = make_tree(tmp_path / "tree")
    want = load_dataset(tree, "all", cache=False)
    if failure == "cache not creatable":  # like a read-only cache folder (the tests may run as root)
        (tmp_path / "file").write_text("x")
        monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "file" / "cache"))
        reason = "Not a directory"
    else:
        writer = (lambda obj: lambda f: torch.save(obj, DiskFull(f, 2048))) if failure.startswith("torch") else \
            (lambda obj: _partial_then_full)
        monkeypatch.setattr(ds, "atomic_torch_save", lambda obj, path: atomic_write(path, writer(obj)))
        reason = "No space left on device"
    with pytest.warns(UserWarning, match=f"could not write the dataset cache .*{reason}.*continuing without it"):
        got = load_dataset(tree, "all")
    assert torch.equal(got.images, want.images) and torch.equal(got.labels, want.labels)
    assert not any(p.is_file() for p in _cache.rglob("*"))  # no partial cache file remains


def test_stream_extraction_failure_leaves_nothing_behind(tmp_path, monkeypatch, _cache):
    archive = tgz(make_tree(tmp_path / "tree"), tmp_path / "t.tar.gz", "tree")

    def fills_the_disk(self, path, *args, **kwargs):
        (Path(path) / "half.png").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = tarfile.TarFile.extractall
    monkeypatch.setattr(tarfile.TarFile, "extractall", fills_the_disk)
    with pytest.raises(DataError, match=r"t\.tar\.gz' cannot be extracted into the cache .*No space left on device"):
        stream_image_folder(archive, "train", workers=0)
    assert not any(p.is_file() for p in _cache.rglob("*"))
    monkeypatch.setattr(tarfile.TarFile, "extractall", real)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(DataError, match=r"cannot be extracted into the cache .*LIGHTNN_CACHE"):
        stream_image_folder(archive, "train", workers=0)


def test_stream_worker_failure_is_one_error_naming_the_file(tmp_path):
    tree = make_tree(tmp_path / "tree", per_class=6, size=20)
    (tree / "train" / "bee" / "bad.png").write_bytes(b"not a png")
    loader = stream_image_folder(tree, "train", image_size=16, batch_size=4, workers=2, val_fraction=0.0)
    with pytest.raises(DataError) as e:
        list(loader)
    msg = str(e.value)
    assert "bee/bad.png is not a readable image" in msg and "\n" not in msg and "Traceback" not in msg
    crash = st._worker_error(RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly"), "data")
    assert str(crash) == ("a DataLoader worker reading data failed: DataLoader worker (pid(s) 4242) exited "
                          "unexpectedly (with --workers 0 the images are read in this process)")
    assert st._worker_error(RuntimeError("CUDA out of memory"), "data") is None  # not the loader's: re-raised
    # the stream decodes like load_dataset: a 16-bit grey image keeps its top byte
    (tree / "train" / "bee" / "bad.png").unlink()
    Image.fromarray(np.full((20, 20), 0x1234, np.uint16)).save(tree / "train" / "bee" / "0.png")
    data = stream_image_folder(tree, "train", image_size=16, workers=0, val_fraction=0.0).data
    x, label = data[data.samples.index(("bee/0.png", 1))]
    assert label == 1 and torch.equal(x, torch.full((3, 16, 16), 0x12, dtype=torch.uint8))


def test_calibration_arrays_that_are_not_numbers_are_refused(tmp_path):
    from lightnn.export.calib import load_images

    np.save(tmp_path / "obj.npy", np.array([RunsCode(print, "never")], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy' is not a readable numeric \.npy/\.npz array: .*allow_pickle"):
        load_images(str(tmp_path / "obj.npy"), (3, 2, 2))
    np.savez(tmp_path / "text.npz", images=np.array([["a"]]))
    with pytest.raises(DataError, match=r"text\.npz' holds <U1 images; expected numbers"):
        load_images(str(tmp_path / "text.npz"), (3, 2, 2))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "obj.npy").read_bytes()[:20])
    with pytest.raises(DataError, match=r"cut\.npy' is not a readable"):
        load_images(str(tmp_path / "cut.npy"), (3, 2, 2))
    np.savez(tmp_path / "ok.npz", images=np.zeros((2, 3, 2, 2), np.float32), labels=np.array([0, 1]))
    assert load_images(str(tmp_path / "ok.npz"), (3, 2, 2)).labels.tolist() == [0, 1]
