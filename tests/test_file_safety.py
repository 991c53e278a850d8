"""Checkpoints and .lnz files under bad input: silent corruption is caught (digest, zip CRCs), pickled code is refused
with the blocked global named, malformed fields and crafted sizes get lightnn's own errors before any large
allocation, and a seeded fuzzer of the .lnz decoder reproduces the counts documented in docs/input_safety.md."""

from __future__ import annotations

import json
import re
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch

import lightnn
from lightnn.checkpoint import load_model, read_checkpoint, save_checkpoint
from lightnn.compress import load, read_lnz, save_lnz
from lightnn.compress.huffman import encode
from lightnn.errors import CheckpointError, LnzFormatError, LnzLimitError

sys.path.insert(0, str(Path(__file__).parent / "compress"))
import lnz_fuzz  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "input_safety.md"


def _lenet(**kw):
    return lightnn.create_model("lenet5", num_classes=10, in_chans=1, img_size=16, **kw)


def _flip_bit_in(path: Path, t: torch.Tensor) -> None:
    """Flip one bit inside the stored bytes of ``t`` (torch.save zips store tensor data uncompressed)."""
    data = bytearray(path.read_bytes())
    needle = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "tensor bytes not found exactly once"
    # the second-highest exponent bit of a float32 in the middle: the weight changes by ~2^64 (e.g. to -5.7e37)
    data[at + (len(needle) // 8) * 4 + 3] ^= 0x40
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------ checkpoints (.pt)


def test_flipped_bit_in_a_weight_is_refused_naming_file_and_tensor(tmp_path):
    model = _lenet()
    p = save_checkpoint(tmp_path / "m.pt", model)
    assert torch.load(p, weights_only=True)["digest"]["algorithm"] == "sha256"
    load_model(p)  # intact: loads
    _flip_bit_in(p, model.pre_logits[1].weight)
    with pytest.raises(CheckpointError, match=r"m\.pt.*corrupt: tensor 'state_dict/pre_logits\.1\.weight'"):
        load_model(p)


def test_flipped_bit_without_a_digest_is_caught_by_the_zip_crc(tmp_path):
    # checkpoints written before the digest existed still load, and their zip CRCs (never checked by torch) are
    from lightnn.checkpoint import checkpoint_dict

    model = _lenet()
    ck = checkpoint_dict(model)
    del ck["digest"]
    p = tmp_path / "old.pt"
    torch.save(ck, p)
    again = load_model(p)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    _flip_bit_in(p, model.classifier.weight)
    assert torch.load(p, weights_only=True)["state_dict"]["classifier.weight"] is not None  # torch loads it silently
    with pytest.raises(CheckpointError, match=r"^checkpoint '[^']*old\.pt' is corrupt: tensor storage '.*/data/\d+' fails"):
        load_model(p)


def test_damaged_pickle_record_is_refused(tmp_path):
    p = save_checkpoint(tmp_path / "m.pt", _lenet())
    data = bytearray(p.read_bytes())
    at = data.find(b"lightnn-checkpoint")  # inside data.pkl
    data[at + 3] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"^checkpoint '[^']*m\.pt' is corrupt: record '.*data\.pkl' fails its zip check"):
        read_checkpoint(p)


def test_training_state_in_last_pt_is_covered_by_the_digest(tmp_path):
    from lightnn.data import ImageData
    from lightnn.train import fit

    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 255, (16, 3, 16, 16), generator=g, dtype=torch.uint8), torch.arange(16) % 4,
                     [f"c{i}" for i in range(4)], source="tiny")
    model = lightnn.create_model("lenet5", num_classes=4, in_chans=3, img_size=16)
    fit(model, data, None, epochs=1, batch_size=8, lr=0.05, progress=False, verbose=False, amp=False,
        output_dir=tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    ts = read_checkpoint(last)["train_state"]
    slot, buf = next((i, s["momentum_buffer"]) for i, s in ts["optimizer"]["state"].items()
                     if s["momentum_buffer"].numel() > 1000)
    _flip_bit_in(last, buf)
    with pytest.raises(CheckpointError, match=rf"last\.pt.*tensor 'train_state/optimizer/state/{slot}/momentum_buffer'"):
        read_checkpoint(last)
    with pytest.raises(CheckpointError, match=r"last\.pt.*corrupt"):  # resuming from it is refused too
        fit(lightnn.create_model("lenet5", num_classes=4, in_chans=3, img_size=16), data, None, epochs=2,
            batch_size=8, progress=False, verbose=False, amp=False, output_dir=tmp_path / "run", resume=True)


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("fn,glob", [("system", "posix.system"), ("exec", "builtins.exec"), ("eval", "builtins.eval")])
def test_malicious_pickles_are_refused_with_the_whole_reason(tmp_path, fn, glob):
    import builtins
    import os

    marker = tmp_path / "ran"
    target = {"system": os.system, "exec": builtins.exec, "eval": builtins.eval}[fn]
    arg = f"touch {marker}" if fn == "system" else f"open({str(marker)!r}, 'w').close()"
    p = tmp_path / "evil.pt"
    torch.save({"format": "lightnn-checkpoint", "model": "lenet5", "x": _Call(target, arg)}, p)
    with pytest.raises(CheckpointError) as err:
        load_model(p)
    msg = str(err.value)
    assert "evil.pt" in msg and f"global {glob}" in msg and "GLOBAL" in msg
    assert "weights_only` set to `False`" not in msg and "add_safe_globals" not in msg  # no advice to run it
    assert "\n" not in msg and not marker.exists()


def _saved(tmp_path, edit, name="m.pt"):
    from lightnn.checkpoint import checkpoint_dict

    ck = checkpoint_dict(_lenet())
    del ck["digest"]  # as older checkpoints: the edits below reach the field checks, not the digest
    edit(ck)
    p = tmp_path / name
    torch.save(ck, p)
    return p


def _set(key, value):
    return lambda ck: ck.__setitem__(key, value)


def _arg(key, value):
    return lambda ck: ck["arch_kwargs"].__setitem__(key, value)


@pytest.mark.parametrize("edit,msg", [
    (lambda ck: ck.pop("model"), "has no model name"),
    (lambda ck: ck.pop("state_dict"), "has no 'state_dict'"),
    (_set("state_dict", [1, 2]), "'state_dict' of type list"),
    (lambda ck: ck["state_dict"].__setitem__("classifier.bias", 0.5), "state_dict entry 'classifier.bias' of type float"),
    (_set("arch_kwargs", [10]), "'arch_kwargs' of type list"),
    (_set("transforms", "channels"), "'transforms' of type str"),
    (_set("transforms", [5]), "transform #0 = '5', not a mapping"),
    (_set("transforms", [{"kind": "nope"}]), "transform #0 'nope' is not an architecture transform"),
    (_set("meta", [1]), "'meta' of type list"),
    (_set("train_state", "x"), "'train_state' of type str"),
    (_set("version", "1"), "has version '1'"),
    (_set("version", 2), "format version 2, written by a newer lightnn"),
    (_set("model", 5), "has no model name"),
    (_set("model", "no_such_model"), "unknown model name 'no_such_model'"),
    (_arg("num_classes", "10"), r"cannot build model 'lenet5'.*TypeError"),
    (_arg("num_classes", 2**30), r"arch_kwargs\['num_classes'\] = 1073741824, outside the range"),
    (_arg("img_size", float("nan")), r"arch_kwargs\['img_size'\] = nan"),
    (_arg("depth", 3), "does not take argument"),
    (_set("digest", "x"), "malformed 'digest'"),
])
def test_malformed_checkpoints_get_one_line_messages(tmp_path, edit, msg):
    p = _saved(tmp_path, edit)
    with pytest.raises(CheckpointError, match=msg) as err:
        load_model(p)
    assert "m.pt" in str(err.value) and "\n" not in str(err.value)


def test_out_of_range_architecture_is_refused_before_it_is_built(tmp_path):
    # num_classes=1048586 would build a 500 x 1M classifier (2 GB) before failing to fit; the build is cut short
    p = _saved(tmp_path, _arg("num_classes", 1048586))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"m\.pt.*refusing to build model 'lenet5'.*more than [\d,]+ parameter"):
        load_model(p)
    assert time.perf_counter() - t0 < 2.0


def test_expanded_tensor_claiming_more_than_the_file_holds_is_refused(tmp_path):
    p = _saved(tmp_path, lambda ck: ck["state_dict"].__setitem__("classifier.bias", torch.zeros(1).expand(2**28)))
    with pytest.raises(CheckpointError, match=r"tensor 'state_dict/classifier\.bias' of shape \[268435456\].*storage of 4"):
        load_model(p)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    def edit(ck):
        sd = ck["state_dict"]
        sd["extra.weight"] = sd.pop("classifier.weight")
        sd["features.0.bias"] = torch.zeros(7)
        sd["features.3.bias"] = sd["features.3.bias"].long()

    p = _saved(tmp_path, edit)
    with pytest.raises(CheckpointError) as err:
        load_model(p)
    msg = str(err.value)
    assert "weights do not fit model 'lenet5'" in msg and "m.pt" in msg
    assert "1 missing key: 'classifier.weight'" in msg and "1 unexpected key: 'extra.weight'" in msg
    assert "1 shape mismatch: 'features.0.bias' is [7] in the file, [20] in the model" in msg
    assert "1 dtype mismatch: 'features.3.bias' is int64 in the file, float32 in the model" in msg


def test_non_finite_weights_load_with_a_warning(tmp_path):
    model = _lenet()
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] = float("nan")
        model.classifier.bias[3] = float("inf")
    p = save_checkpoint(tmp_path / "nan.pt", model)
    with pytest.warns(UserWarning, match=r"nan\.pt.*2 of 8 tensors hold NaN or infinite values"):
        load_model(p)


# ------------------------------------------------------------------------------------------ crafted .lnz files


@pytest.fixture(scope="module")
def lnz(tmp_path_factory):
    d = tmp_path_factory.mktemp("lnz")
    blob, model = lnz_fuzz.subject(d / "subject.lnz")
    return blob, model, d


def _craft(lnz, edit, **pack) -> Path:
    blob, _, d = lnz
    f = lnz_fuzz.Parsed(blob)
    edit(f.header)
    p = d / "crafted.lnz"
    p.write_bytes(f.pack(**pack))
    return p


def _rec(h, key):
    return next(r for r in h["records"] if r["key"] == key)


def test_subject_round_trips_exactly(lnz):
    blob, model, d = lnz
    kinds = {r["key"]: (r["kind"], r["dtype"], r.get("as")) for r in read_lnz(d / "subject.lnz")[0]["records"]}
    assert kinds["features.3.weight"][0] == "shared" and kinds["pre_logits.1.weight"][0] == "sparse"
    assert kinds["classifier.weight"] == ("raw", "float32", None) and kinds["classifier.bias"] == ("raw", "float16", "float32")
    assert lnz_fuzz.classify(d / "subject.lnz", model) == "identical"
    p = _craft(lnz, lambda h: None)  # re-packed with recomputed CRCs: still the same file content
    assert lnz_fuzz.classify(p, model) == "identical"


@pytest.mark.parametrize("edit,error,msg", [
    # the brief's resource cases: every size is bounded by what the file and the model can hold
    (lambda h: h["arch_kwargs"].__setitem__("num_classes", 1048586), CheckpointError, "refusing to build"),
    (lambda h: _rec(h, "features.3.weight")["codes"].__setitem__("alphabet", 2**34), LnzFormatError,
     r"codes\.alphabet is 17179869184; a codebook of \d+ values makes it"),
    (lambda h: _rec(h, "pre_logits.1.weight").__setitem__("shape", [2**20, 2**20]), LnzLimitError,
     r"would decode to 4,398,04[\d,]+ bytes of tensors"),
    (lambda h: _rec(h, "pre_logits.1.weight")["gaps"].__setitem__("block", 2**40), LnzFormatError,
     r"gaps\.block is 1099511627776; expected an integer in 1 \.\. "),
    # well-formed but wrong: aliasing segments, counts that disagree with the shape, wrong dtype roles
    (lambda h: _rec(h, "classifier.bias")["seg"].__setitem__("data", list(_rec(h, "features.0.bias")["seg"]["data"])),
     LnzFormatError, "may not overlap, alias or leave gaps"),
    (lambda h: _rec(h, "features.0.weight").__setitem__("shape", [20, 1, 2, 2]), LnzFormatError,
     r"gaps\.n is \d+; expected an integer in 0 \.\. 80"),
    (lambda h: _rec(h, "classifier.weight").__setitem__("shape", [500, 10]), CheckpointError,
     r"'classifier\.weight' is \[500, 10\] in the file, \[10, 500\] in the model"),
    (lambda h: _rec(h, "classifier.weight").__setitem__("dtype", "int32"), CheckpointError,
     "'classifier.weight' is int32 in the file, float32 in the model"),
    (lambda h: _rec(h, "features.0.weight").__setitem__("dtype", "float16"), LnzFormatError,
     "a shared record holds a float32 weight, not float16"),
    (lambda h: _rec(h, "classifier.bias").__setitem__("as", "float64"), LnzFormatError, "only float16 data widens"),
    (lambda h: h["records"].append(dict(h["records"][0])), LnzFormatError, "starts at payload byte"),
    (lambda h: h["records"].pop(), LnzFormatError, "payload bytes that no record uses"),
    (lambda h: _rec(h, "classifier.bias").__setitem__("key", "classifier.weight"), LnzFormatError,
     "two records for tensor 'classifier.weight'"),
    (lambda h: h.__setitem__("transforms", {"kind": "channels"}), LnzFormatError, "'transforms' of type dict"),
    (lambda h: h.__setitem__("records", [5]), LnzFormatError, "record #0 has no 'seg'"),
])
def test_crafted_lnz_with_recomputed_crcs_is_refused(lnz, edit, error, msg):
    p = _craft(lnz, edit)
    t0 = time.perf_counter()
    with pytest.raises(error, match=msg) as err:
        load(p)
    assert "crafted.lnz" in str(err.value) and time.perf_counter() - t0 < 2.0


def test_unknown_flag_bits_are_refused(lnz):
    p = _craft(lnz, lambda h: None, flags=0x0003)
    with pytest.raises(LnzFormatError, match=r"crafted\.lnz.*unknown flag bits 0x0002"):
        load(p)


def test_int64_buffer_tagged_float_is_refused(tmp_path):
    # batch norm's num_batches_tracked is int64: the same 8 bytes read as float64 would load silently (as 0)
    model = lightnn.create_model("resnet20", num_classes=10, width=2)
    save_lnz(tmp_path / "r.lnz", model)
    load(tmp_path / "r.lnz")
    f = lnz_fuzz.Parsed((tmp_path / "r.lnz").read_bytes())
    _rec(f.header, "features.0.bn.num_batches_tracked")["dtype"] = "float64"
    (tmp_path / "r.lnz").write_bytes(f.pack())
    with pytest.raises(CheckpointError, match="'features.0.bn.num_batches_tracked' is float64 in the file, int64"):
        load(tmp_path / "r.lnz")


def test_header_bombs_are_refused(lnz):
    from lightnn.compress.fileformat import MAX_HEADER_BYTES, MAX_RECORDS

    blob, _, d = lnz
    f = lnz_fuzz.Parsed(blob)
    p = d / "bomb.lnz"
    p.write_bytes(f.pack(raw_header=zlib.compress(b" " * (MAX_HEADER_BYTES + 1), 9)))  # 17 KB inflating to 16 MB
    with pytest.raises(LnzLimitError, match="inflates past"):
        load(p)
    p.write_bytes(f.pack(raw_header=zlib.compress(b"[" * 200_000 + b"]" * 200_000)))
    with pytest.raises(LnzFormatError, match="unreadable header: RecursionError"):
        load(p)
    many = dict(f.header, records=[{"key": f"k{i}"} for i in range(MAX_RECORDS + 1)])
    p.write_bytes(f.pack(many))
    with pytest.raises(LnzLimitError, match=f"{MAX_RECORDS + 1:,} records"):
        load(p)


def test_writer_refuses_what_the_reader_would():
    with pytest.raises(ValueError, match="block must be in 1 .. 64"):
        encode(torch.arange(10).numpy() % 3, 3, block=128)


# ------------------------------------------------------------------------------------------ fuzzing the decoder


def _documented(caption: str) -> tuple[int, int, dict]:
    """The fuzz table under ``caption`` in docs/input_safety.md: (seed, inputs per class, counts)."""
    text = DOC.read_text()
    at = text.index(caption)
    seed, per_class = (int(v) for v in re.search(r"seed (\d+), (\d+) inputs per class", text[at:]).groups())
    lines = text[at:].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| mutation class"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    counts = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = dict(zip(head, (c.strip() for c in ln.strip("|").split("|"))))
        row = {k: int(v) for k, v in cells.items() if k not in ("mutation class", "inputs") and v not in ("", "0")}
        assert sum(row.values()) == int(cells["inputs"]) == per_class, ln
        counts[cells["mutation class"].strip("`")] = row
    return seed, per_class, counts


def _check_fuzz(tmp_path, caption):
    seed, per_class, documented = _documented(caption)
    res = lnz_fuzz.fuzz(tmp_path, per_class, seed)
    bad = {k: v for k, v in res["counts"].items() if set(v) - {"identical", "LnzCorruptError", "LnzFormatError",
                                                                 "LnzLimitError", "CheckpointError"}}
    assert not bad, f"inputs that decoded to other weights or raised another error: {bad}"
    assert res["max_seconds"] < 2.0, f"slowest input took {res['max_seconds']:.2f} s"
    assert res["peak_rss_growth"] < 256 << 20, f"memory grew by {res['peak_rss_growth'] / 2**20:.0f} MiB"
    assert res["counts"] == documented, f"fuzz counts differ from {DOC.name}: {json.dumps(res['counts'])}"


def test_fuzzed_lnz_inputs_decode_identically_or_are_refused(tmp_path):
    _check_fuzz(tmp_path, "Default suite")


@pytest.mark.slow
def test_fuzzed_lnz_inputs_long_run(tmp_path):
    _check_fuzz(tmp_path, "Slow suite")


def test_docs_name_existing_tests():
    text = DOC.read_text()
    here = Path(__file__).parent
    names = set(re.findall(r"`(test_\w+)`", text))
    assert len(names) >= 10
    defined = set(re.findall(r"^def (test_\w+)", "".join(p.read_text() for p in here.rglob("test_*.py")), re.M))
    assert names <= defined, f"docs/input_safety.md names tests that do not exist: {sorted(names - defined)}"



@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell a directory's descriptor")
def test_atomic_writes_flush_the_file_and_its_directory_entry(tmp_path, monkeypatch):
    import os

    from lightnn.utils.io import atomic_write_bytes

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1])
    atomic_write_bytes(tmp_path / "out" / "x.bin", b"data")
    assert (tmp_path / "out" / "x.bin").read_bytes() == b"data"
    assert synced[-1] == str(tmp_path / "out") and any(".x.bin." in s for s in synced[:-1])
