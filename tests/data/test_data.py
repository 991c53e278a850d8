"""lightnn.data: sources (folder, zip, tar, CIFAR pickles), cache invalidation, seeded splits, batch augmentation
(against a per-image oracle), sharding, and a clear DataError for every bad input."""

from __future__ import annotations

import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnn.data import BatchLoader, load_dataset, split_indices
from lightnn.data import datasets as ds
from lightnn.errors import DataError

CLASSES = ["ant", "bee", "cat"]


def make_tree(root: Path, per_class: int = 6, size: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "train" / c / f"{i}.png")
    return root


def zip_tree(root: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted(root.rglob("*")):
            z.write(p, p.relative_to(root).as_posix())
    return dest


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "cache"))
    return make_tree(tmp_path / "data")


def test_folder_zip_tar_agree(tree, tmp_path):
    a = load_dataset(tree, "all")
    assert a.images.dtype == torch.uint8 and a.images.shape == (18, 3, 8, 8)
    assert a.classes == CLASSES and a.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    z = load_dataset(zip_tree(tree, tmp_path / "d.zip"), "all")
    tgz = tmp_path / "d.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(tree, arcname="wrapper")  # an extra wrapper folder is stripped
    t_ = load_dataset(tgz, "all")
    for other in (z, t_):
        assert torch.equal(other.images, a.images) and torch.equal(other.labels, a.labels)
    # pixels are the decoded files
    ref = np.asarray(Image.open(tree / "train" / "bee" / "0.png")).transpose(2, 0, 1).copy()
    assert torch.equal(a.images[6], torch.from_numpy(ref))


def test_cache_is_used_and_invalidated(tree, monkeypatch):
    first = load_dataset(tree, "all")
    calls = []
    real = ds._Source
    monkeypatch.setattr(ds, "_Source", lambda p: calls.append(p) or real(p))
    again = load_dataset(tree, "all")
    assert calls == [] and torch.equal(again.images, first.images)  # served from the cache
    f = tree / "train" / "ant" / "0.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(f)
    os.utime(f, ns=(1, 10**18))  # a different mtime even on coarse clocks
    changed = load_dataset(tree, "all")
    assert len(calls) == 1 and (changed.images[0] == 7).all()


def test_cache_from_other_data_is_refused(tree, tmp_path):
    other = make_tree(tmp_path / "other", seed=1)
    cache = tmp_path / "mine.pt"
    load_dataset(tree, "all", cache=cache)
    with pytest.raises(DataError, match="built from other data"):
        load_dataset(other, "all", cache=cache)
    (tmp_path / "junk.pt").write_bytes(b"not a cache")
    with pytest.raises(DataError, match="junk.pt"):
        load_dataset(tree, "all", cache=tmp_path / "junk.pt")


def test_split_is_seeded_stratified_and_disjoint():
    labels = torch.arange(10).repeat(50)
    tr, va = split_indices(labels, 0.1, seed=0)
    tr2, va2 = split_indices(labels, 0.1, seed=0)
    _, va3 = split_indices(labels, 0.1, seed=1)
    assert torch.equal(va, va2) and torch.equal(tr, tr2) and not torch.equal(va, va3)
    assert len(va) == 50 and torch.bincount(labels[va]).tolist() == [5] * 10
    assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == 500


def test_sample_split_45_5_shape():
    tr, va = load_dataset("sample", "train"), load_dataset("sample", "val")
    assert (len(tr), len(va)) == (4500, 500) and va.class_counts() == [50] * 10
    assert tr.classes[0] == "airplane" and tr.image_size == (3, 32, 32)


def test_cifar_pickle_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    tr, va, te = (load_dataset(tmp_path, s) for s in ("train", "val", "test"))
    assert (len(tr), len(va), len(te)) == (90, 10, 20) and te.classes[3] == "c3"
    raw = pickle.loads((d / "data_batch_1").read_bytes())[b"data"][0].reshape(3, 32, 32)
    assert torch.equal(load_dataset(tmp_path, "all").images[0], torch.from_numpy(raw))


def test_bad_inputs_name_the_culprit(tree, tmp_path):
    with pytest.raises(DataError, match="does-not-exist"):
        load_dataset(tmp_path / "does-not-exist")
    (tree / "train" / "dog").mkdir()
    with pytest.raises(DataError, match=r"class folder .*dog.* is empty"):
        load_dataset(tree, "all", cache=False)
    (tree / "train" / "dog").rmdir()
    (tree / "train" / "bee" / "9.jpg").write_bytes(b"garbage, not a jpeg")
    with pytest.raises(DataError, match=r"9\.jpg is not a readable image"):
        load_dataset(tree, "all", cache=False)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        d = load_dataset(tree, "all", skip_corrupt=True)
    assert len(d) == 18
    with pytest.raises(DataError, match="9.jpg"):  # a cache built while skipping still names the file
        load_dataset(tree, "all")
    (tree / "train" / "bee" / "9.jpg").unlink()
    (tree / "train" / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt is not an image file"):
        load_dataset(tree, "all", cache=False)
    (tree / "train" / "cat" / "notes.txt").unlink()
    Image.fromarray(np.zeros((5, 9, 3), np.uint8)).save(tree / "train" / "cat" / "odd.png")
    with pytest.raises(DataError, match="differ in size"):
        load_dataset(tree, "all", cache=False)
    assert load_dataset(tree, "all", cache=False, image_size=(8, 8)).image_size == (3, 8, 8)
    with pytest.raises(DataError, match="no test split"):
        load_dataset(tree, "test", cache=False, image_size=(8, 8))


def test_load_unlabeled_reads_flat_folders_and_archives(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(1)
    pix = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
    for i, a in enumerate(pix):
        Image.fromarray(a).save(flat / f"{i}.png")
    (flat / "README.txt").write_text("not an image")  # passed over in a flat folder
    (flat / ".hidden.png").write_bytes(b"junk")
    with pytest.raises(ds.NoClassFoldersError, match="no class folders"):  # no labels: load_dataset refuses it
        load_dataset(flat, "all", cache=False)
    x = ds.load_unlabeled(flat)
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(np.stack(pix).transpose(0, 3, 1, 2)))
    assert torch.equal(ds.load_unlabeled(zip_tree(flat, tmp_path / "flat.zip")), x)
    assert ds.load_unlabeled(flat, image_size=(4, 7)).shape == (3, 3, 4, 7)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(flat / "3.png")
    with pytest.raises(DataError, match=r"differ in size .*3\.png is 9x9"):
        ds.load_unlabeled(flat)
    (flat / "4.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"4\.jpg is not a readable image"):
        ds.load_unlabeled(flat, image_size=(6, 5))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ds.NoClassFoldersError, match="contains no files"):
        load_dataset(tmp_path / "empty", cache=False)
    with pytest.raises(DataError, match=r"empty.* contains no images"):
        ds.load_unlabeled(tmp_path / "empty")


def test_batch_augmentation_matches_per_image_oracle():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
    data = ds.ImageData(imgs, torch.arange(40) % 4, list("abcd"))
    loader = BatchLoader(data, 16, shuffle=True, augment=True, pad=2, mean=[0, 0, 0], std=[1 / 255] * 3, seed=3)
    order = loader._indices()
    seen_flip = seen_shift = 0
    for bi, (x, y) in enumerate(loader):
        for j in range(len(y)):
            src = imgs[order[bi * 16 + j]].float()
            p = torch.nn.functional.pad(src, (2, 2, 2, 2))
            cands = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)
                     if torch.allclose((p[:, dy:dy + 8, dx:dx + 8].flip(2) if f else p[:, dy:dy + 8, dx:dx + 8]), x[j])]
            assert cands, "batch image is no pad+crop(+flip) of its source"
            seen_flip += any(f for *_, f in cands) and not any(not f for *_, f in cands)
            seen_shift += all((dy, dx) != (2, 2) for dy, dx, _ in cands)
        assert torch.equal(y, data.labels[order[bi * 16: bi * 16 + len(y)]])
    assert seen_flip > 5 and seen_shift > 5
    # same (seed, epoch) -> same batches; another epoch -> others
    a = torch.cat([x for x, _ in loader])
    assert torch.equal(a, torch.cat([x for x, _ in loader]))
    loader.set_epoch(1)
    assert not torch.equal(a, torch.cat([x for x, _ in loader]))


def test_cutout_paints_one_clipped_square_in_the_mean_colour():
    # oracle: in one batch the same loader without cutout gives the same crops and flips (cutout draws after them;
    # later batches' draws shift), and each image differs from its uncut version only inside one s x s square (clipped at the borders), painted in the
    # mean colour, which is zero after normalizing
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(1, 255, (64, 3, 12, 12), generator=g, dtype=torch.uint8)
    data = ds.ImageData(imgs, torch.arange(64) % 4, list("abcd"))
    mean, std = [0.2, 0.5, 0.8], [0.25, 0.25, 0.25]
    kw = dict(shuffle=True, augment=True, pad=2, mean=mean, std=std, seed=5)
    cut, _ = next(iter(BatchLoader(data, 64, cutout=4, **kw)))
    plain, _ = next(iter(BatchLoader(data, 64, **kw)))
    fill = (torch.tensor([round(255 * m) for m in mean]) / 255 - torch.tensor(mean)) / torch.tensor(std)
    sizes = set()
    for c, p in zip(cut, plain):
        changed = (c != p).any(0)
        painted = (c - fill.view(3, 1, 1)).abs().max(0).values < 1e-5
        ys, xs = painted.nonzero(as_tuple=True)
        assert ys.numel() > 0 and changed.le(painted).all()
        h, w = int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
        assert painted[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all() and h <= 4 and w <= 4
        if (h, w) != (4, 4):  # a clipped square touches a border
            assert ys.min() == 0 or xs.min() == 0 or ys.max() == 11 or xs.max() == 11
        sizes.add((h, w))
    assert (4, 4) in sizes and len(sizes) > 1
    assert fill.abs().max() < 2 / 255 / 0.25  # "mean colour": zero after normalizing, up to uint8 rounding
    with pytest.raises(DataError, match="cutout must be between 0 and the image size 12x12, got 13"):
        BatchLoader(data, 16, cutout=13)


def test_normalize_and_sharding():
    imgs = torch.full((10, 3, 2, 2), 255, dtype=torch.uint8)
    data = ds.ImageData(imgs, torch.arange(10) % 2, ["a", "b"])
    x, _ = next(iter(BatchLoader(data, 10, mean=[0.5] * 3, std=[0.25] * 3)))
    assert torch.allclose(x, torch.full_like(x, 2.0))
    shards = [BatchLoader(data, 3, shuffle=True, rank=r, world_size=3) for r in range(3)]
    idx = [s._indices() for s in shards]
    assert {len(i) for i in idx} == {4} and set(torch.cat(idx).tolist()) == set(range(10))
    assert len({len(s) for s in shards}) == 1  # every rank steps the same number of times
    ev = [BatchLoader(data, 3, rank=r, world_size=3)._indices() for r in range(3)]
    assert sorted(torch.cat(ev).tolist()) == list(range(10))  # evaluation shards: disjoint, complete


def test_stream_image_folder(tmp_path, monkeypatch):
    from lightnn.data import stream_image_folder

    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "cache"))
    root = make_tree(tmp_path / "big", per_class=10, size=20)
    tr = stream_image_folder(zip_tree(root, tmp_path / "big.zip"), "train", image_size=16, batch_size=8, workers=0)
    va = stream_image_folder(root, "val", image_size=16, batch_size=8, workers=0)
    assert len(tr.data) == 27 and len(va.data) == 3 and tr.classes == CLASSES
    x, y = next(iter(tr))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    xs = torch.cat([x for x, _ in va])
    assert torch.equal(xs, torch.cat([x for x, _ in va]))  # centre crop is deterministic
    (root / "train" / "ant" / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.jpg"):
        list(stream_image_folder(root, "train", image_size=16, batch_size=64, workers=0,
                                 val_fraction=0.0))
