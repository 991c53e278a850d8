"""The .lnz file: relative indices with filler zeros, bit-exact tensor round trips, whole-model round trips through
the Deep Compression pipeline, and clear refusals of corrupt or truncated files."""

import struct

import numpy as np
import pytest
import torch

import lightnn
from lightnn.checkpoint import load_any
from lightnn.compress import DeepConfig, deep_compress, load, read_lnz, save_lnz
from lightnn.compress.encode import absolute_positions, decode_tensor, encode_tensor, relative_indices
from lightnn.errors import CheckpointError


def test_relative_indices_insert_filler_zeros():
    # 3-bit indices reach 8 positions; a gap of 11 needs one filler 8 past the previous entry (paper Fig. 2)
    sym, real = relative_indices(np.array([1, 12, 13]), 3)
    assert sym.tolist() == [1, 7, 2, 0]
    assert real.tolist() == [True, False, True, True]
    assert absolute_positions(sym).tolist() == [1, 9, 12, 13]
    sym, real = relative_indices(np.array([40]), 2)  # 40 = 4 + 4 + ... : ten fillers then the entry
    assert absolute_positions(sym)[real].tolist() == [40]


def _segs(enc):
    rec = {"key": enc.key, "kind": enc.kind, "shape": enc.shape, "dtype": enc.dtype, **enc.fields}
    return rec, enc.segments


def _sparse(t, density, gen):
    # masked_fill (as the pruner does) leaves +0.0; sparse storage keeps no sign for zeros
    return t.masked_fill(torch.rand(t.shape, generator=gen) >= density, 0.0)


def _shared(t, k, gen):
    cb = torch.randn(k, generator=gen)
    return torch.where(t != 0, cb[torch.randint(0, k, t.shape, generator=gen)], torch.zeros(()))


@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (32, 1, 3, 3), (10, 64), (7, 5, 1, 1)],
                         ids=["conv", "depthwise", "linear", "pointwise"])
@pytest.mark.parametrize("density", [1.0, 0.3, 0.02])
@pytest.mark.parametrize("bits", [(8, 8), (5, 5), (2, 3)], ids=["ib8-wb8", "ib5-wb5", "ib2-wb3"])
def test_tensor_round_trip_is_bit_exact(shape, density, bits):
    gen = torch.Generator().manual_seed(hash((shape, density, bits)) % 1000)
    ib, wb = bits
    dense = _sparse(torch.randn(shape, generator=gen), density, gen)
    shared = _shared(dense, 2 ** wb - 1, gen)
    # a dense float tensor is stored shared only when it happens to have few enough distinct values
    small = int((dense != 0).sum()) < 2 ** wb
    for t, want_kind in ((dense, {"sparse", "raw"} | ({"shared"} if small else set())), (shared, {"shared"})):
        enc = encode_tensor("w", t, index_bits=ib, weight_bits=wb)
        assert enc.kind in want_kind
        out = decode_tensor(*_segs(enc))
        assert out.dtype == t.dtype and torch.equal(out, t)
        assert torch.equal(out.view(torch.int32), t.view(torch.int32))  # bit for bit (no -0.0 / NaN games)


@pytest.mark.parametrize("t", [torch.randn(5).half(), torch.randn(3, 2).bfloat16(), torch.tensor(7),
                               torch.arange(6, dtype=torch.int64), torch.randn(0)])
def test_raw_tensors_round_trip(t):
    enc = encode_tensor("t", t)
    out = decode_tensor(*_segs(enc))
    assert out.dtype == t.dtype and out.shape == t.shape and torch.equal(out, t)


def _tiny_batches(n=2, bs=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, 3, size, size, generator=g), torch.randint(0, 10, (bs,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("name,kwargs", [("lenet5", {"in_chans": 3, "img_size": 16}), ("resnet20", {})])
def test_pipeline_file_reloads_with_identical_outputs(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = lightnn.create_model(name, num_classes=10, **kwargs)
    data = _tiny_batches()
    cfg = DeepConfig(sparsity={"conv": 0.5, "fc": 0.9}, prune_epochs=1, share_epochs=1, mask_updates=2, amp=False)
    out = tmp_path / "m.lnz"
    model, report = deep_compress(model, cfg, train=data, val=data, output=out, log=None)
    assert report["stages"][-1]["bytes"] == out.stat().st_size
    sizes = [s["bytes"] for s in report["stages"]]
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3]  # every stage shrinks the model
    again = load(out)
    assert type(again) is type(model)
    model.eval(), again.eval()
    x = data[0][0]
    assert torch.equal(model(x), again(x))
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert torch.equal(load_any(out).eval()(x), model(x))  # lightnn eval's loader dispatches .lnz here


def _file(tmp_path):
    model = lightnn.create_model("lenet5", num_classes=10, in_chans=3, img_size=32)
    from lightnn.compress import MagnitudePruner, finalize_sharing, share_weights

    MagnitudePruner(model, 0.8).update()
    share_weights(model, {"conv": 6, "fc": 4})
    finalize_sharing(model)
    p = tmp_path / "m.lnz"
    info = save_lnz(p, model, meta={"note": "x"})
    assert info["file_bytes"] == p.stat().st_size
    return p, model


def test_save_records_model_and_meta(tmp_path):
    p, model = _file(tmp_path)
    header, state = read_lnz(p)
    assert header["model"] == "lenet5" and header["arch_kwargs"]["img_size"] == 32 and header["meta"]["note"] == "x"
    kinds = {r["key"]: r["kind"] for r in header["records"]}
    assert kinds["pre_logits.1.weight"] == "shared" and kinds["pre_logits.1.bias"] == "raw"
    assert p.stat().st_size < 0.1 * sum(v.numel() * 4 for v in model.state_dict().values())


def _corrupt(p, offset, n=1):
    b = bytearray(p.read_bytes())
    for i in range(n):
        b[offset + i] ^= 0xFF
    p.write_bytes(bytes(b))


def test_corrupt_payload_is_refused(tmp_path):
    p, _ = _file(tmp_path)
    _corrupt(p, p.stat().st_size - 100)
    with pytest.raises(CheckpointError, match=r"m\.lnz.*corrupt: payload checksum"):
        load(p)


def test_corrupt_header_is_refused(tmp_path):
    p, _ = _file(tmp_path)
    _corrupt(p, 40)
    with pytest.raises(CheckpointError, match=r"m\.lnz.*corrupt: header checksum"):
        load(p)


def test_corrupt_preamble_is_refused(tmp_path):
    p, _ = _file(tmp_path)
    _corrupt(p, 13)  # header length field
    with pytest.raises(CheckpointError, match=r"m\.lnz.*corrupt: preamble checksum"):
        load(p)


@pytest.mark.parametrize("keep", [0, 5, 20, 200, -1])
def test_truncated_file_is_refused(tmp_path, keep):
    p, _ = _file(tmp_path)
    b = p.read_bytes()
    p.write_bytes(b[:keep] if keep >= 0 else b[:-1])
    with pytest.raises(CheckpointError, match=r"m\.lnz.*(truncated|not a \.lnz)"):
        load(p)


def test_other_files_are_refused(tmp_path):
    p = tmp_path / "x.lnz"
    p.write_bytes(b"PK\x03\x04 this is a zip, not lnz" * 4)
    with pytest.raises(CheckpointError, match="not a .lnz file"):
        load(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "missing.lnz")
    p, _ = _file(tmp_path)
    with open(p, "ab") as f:
        f.write(b"junk")
    with pytest.raises(CheckpointError, match="trailing bytes"):
        load(p)


def test_newer_version_is_refused(tmp_path):
    import zlib

    p, _ = _file(tmp_path)
    b = bytearray(p.read_bytes())
    b[8:10] = struct.pack("<H", 99)
    b[32:36] = struct.pack("<I", zlib.crc32(bytes(b[:32])))
    p.write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match="version 99"):
        load(p)


def test_cli_compress_writes_lnz_and_report(tmp_path, capsys):
    from lightnn.checkpoint import save_checkpoint
    from lightnn.cli import main

    model = lightnn.create_model("lenet5", num_classes=10, in_chans=3, img_size=16)
    with torch.no_grad():
        model.pre_logits[1].bias.normal_()  # zero-initialized biases would already be exact in float16
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    out = tmp_path / "m.lnz"
    rc = main(["compress", str(ckpt), "--method", "deep", "--sparsity", "0.9", "--fc-bits", "4", "--output", str(out)])
    assert rc == 0 and out.exists() and (tmp_path / "m.report.json").exists()
    again = load(out)
    w = again.pre_logits[1].weight
    assert (w != 0).float().mean() == pytest.approx(0.1, abs=0.02) and torch.unique(w[w != 0]).numel() <= 15
    half = tmp_path / "h.lnz"
    assert main(["compress", str(ckpt), "--sparsity", "0.9", "--fc-bits", "4", "--other-dtype", "float16",
                 "--output", str(half)]) == 0
    dtypes = {r["key"]: r["dtype"] for r in read_lnz(half)[0]["records"]}
    assert dtypes["pre_logits.1.bias"] == "float16" and dtypes["pre_logits.1.weight"] == "float32"
    assert {r["key"]: r["dtype"] for r in read_lnz(out)[0]["records"]}["pre_logits.1.bias"] == "float32"
    assert half.stat().st_size < out.stat().st_size - 2 * model.pre_logits[1].bias.numel() + 64
    rc = main(["compress", str(ckpt), "--method", "prune", "--sparsity", "0.5", "--output", str(tmp_path / "p.pt")])
    assert rc == 0 and lightnn.checkpoint.load_model(tmp_path / "p.pt").pre_logits[1].weight.eq(0).float().mean() > 0.45
    assert main(["compress", str(ckpt), "--method", "share", "--output", str(tmp_path / "bad.txt")]) == 2


def test_cli_recipe_file_sits_under_flags(tmp_path):
    from lightnn.checkpoint import save_checkpoint
    from lightnn.cli import main

    model = lightnn.create_model("lenet5", num_classes=10, in_chans=3, img_size=16)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("sparsity: {fc: 0.9, conv: 0.5}\nweight_bits: {conv: 6, fc: 3}\nschedule: oneshot\n")
    out = tmp_path / "r.lnz"
    assert main(["compress", str(ckpt), "--config", str(recipe), "--fc-bits", "2", "--output", str(out)]) == 0
    m = load(out)
    fc, conv = m.pre_logits[1].weight, m.features[3].weight
    assert (fc != 0).float().mean() == pytest.approx(0.1, abs=0.02)
    assert (conv != 0).float().mean() == pytest.approx(0.5, abs=0.02)
    assert torch.unique(fc[fc != 0]).numel() <= 3  # --fc-bits 2 overrides the recipe's 3
    assert torch.unique(conv[conv != 0]).numel() <= 63
    recipe.write_text("sparsity: 0.5\nnot_a_setting: 1\n")
    assert main(["compress", str(ckpt), "--config", str(recipe), "--output", str(out)]) == 2


def test_distillation_from_an_identical_teacher_changes_nothing():
    # oracle: with distillation weight 1 the loss is KL(teacher || student); a teacher equal to the student gives zero
    # gradients, so retraining (no weight decay; the trainer Deep Compression retrains with) must leave every weight
    # where it was
    import copy

    from lightnn.train import Distillation, TrainConfig, fit

    cfg = TrainConfig(epochs=1, lr=0.5, weight_decay=0.0, amp=False, channels_last=False, device="cpu",
                      progress=False, verbose=False)
    torch.manual_seed(0)
    model = lightnn.create_model("lenet5", num_classes=10, in_chans=3, img_size=16)
    teacher = copy.deepcopy(model).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, _tiny_batches(), None, cfg, callbacks=[Distillation(teacher, weight=1.0)])
    # (float rounding of the two softmaxes leaves updates of ~1e-7)
    assert max((v - before[k]).abs().max().item() for k, v in model.state_dict().items()) < 1e-5
    # and a teacher that differs does move the student, by orders of magnitude more
    other = lightnn.create_model("lenet5", num_classes=10, in_chans=3, img_size=16).eval()
    fit(model, _tiny_batches(), None, cfg, callbacks=[Distillation(other, weight=1.0)])
    assert max((v - before[k]).abs().max().item() for k, v in model.state_dict().items()) > 1e-3


def test_deep_compress_with_distillation_keeps_the_teacher_out_of_the_file(tmp_path):
    torch.manual_seed(0)
    model = lightnn.create_model("lenet5", num_classes=10, in_chans=3, img_size=16)
    data = _tiny_batches()
    cfg = DeepConfig(sparsity={"conv": 0.5, "fc": 0.9}, prune_epochs=1, share_epochs=1, mask_updates=2, amp=False,
                     distill_weight=0.7)
    out = tmp_path / "kd.lnz"
    model, report = deep_compress(model, cfg, train=data, val=data, output=out, log=None)
    assert report["config"]["distill_weight"] == 0.7
    again = load(out)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def _distill_without_teacher():
    from lightnn.train import Distillation

    return Distillation(None, weight=0.5)


@pytest.mark.parametrize("make,msg", [(lambda: DeepConfig(distill_weight=1.5), r"distill_weight must be in \[0, 1\]"),
                                      (lambda: DeepConfig(share_train="codebooks"), "share_train must be"),
                                      (_distill_without_teacher, "needs a teacher")])
def test_distillation_settings_are_checked(make, msg):
    from lightnn.errors import LightnnError

    with pytest.raises(LightnnError, match=msg):
        make()


def test_float32_values_exact_in_half_are_stored_in_16_bits():
    exact = torch.randn(64).half().float()  # every value a float16 value
    enc = encode_tensor("bn.weight", exact)
    assert enc.kind == "raw" and enc.dtype == "float16" and enc.stats["raw_bits"] == 64 * 16
    out = decode_tensor(*_segs(enc))
    assert out.dtype == torch.float32 and torch.equal(out.view(torch.int32), exact.view(torch.int32))
    inexact = exact.clone()
    inexact[3] += 1e-4  # one value off the float16 grid keeps the whole tensor in float32
    enc = encode_tensor("bn.weight", inexact)
    assert enc.dtype == "float32" and enc.stats["raw_bits"] == 64 * 32
    huge = torch.full((4,), 1e6)  # beyond float16's range: float32
    assert encode_tensor("bn.running_var", huge).dtype == "float32"


def test_round_others_to_half_leaves_weights_and_out_of_range_values_alone():
    from lightnn.compress import round_others_to_half

    torch.manual_seed(0)
    model = lightnn.create_model("resnet20", num_classes=10)
    model.features[0].bn.running_var.fill_(1e6)  # cannot be float16
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = round_others_to_half(model)
    assert info["kept"] == ["features.0.bn.running_var"] and info["rounded"] > 0
    for k, v in model.state_dict().items():
        if k.endswith(".weight") and v.ndim > 1 or k in info["kept"] or v.dtype != torch.float32:
            assert torch.equal(v, before[k]), k  # conv/linear weights and the out-of-range tensor untouched
        else:
            assert torch.equal(v, before[k].half().float()), k


def test_pipeline_with_float16_others_shrinks_the_file_and_decodes_exactly(tmp_path):
    data = _tiny_batches()
    sizes = {}
    for dtype in ("float32", "float16"):
        torch.manual_seed(0)
        model = lightnn.create_model("resnet20", num_classes=10)
        cfg = DeepConfig(sparsity={"conv": 0.5, "fc": 0.5}, prune_epochs=1, share_epochs=1, mask_updates=2, amp=False,
                         other_dtype=dtype)
        out = tmp_path / f"{dtype}.lnz"
        model, report = deep_compress(model, cfg, train=data, val=data, output=out, log=None)
        sizes[dtype] = out.stat().st_size
        again = load(out)
        for k, v in model.state_dict().items():
            w = again.state_dict()[k]
            assert w.dtype == v.dtype and torch.equal(v, w), k
        header, _ = read_lnz(out)
        kinds = {r["key"]: r["dtype"] for r in header["records"]}
        if dtype == "float16":
            assert report["float16_others"]["rounded"] > 0
            assert kinds["features.0.bn.weight"] == "float16" and kinds["classifier.bias"] == "float16"
        else:
            assert "float16_others" not in report and kinds["features.0.bn.weight"] == "float32"
    # resnet20: 1,360 batch-norm channels x 4 values + 10 biases, 2 bytes saved each
    saved = sizes["float32"] - sizes["float16"]
    bn_values = sum(v.numel() for k, v in model.state_dict().items() if v.dtype == torch.float32
                    and not (k.endswith(".weight") and v.ndim > 1))
    assert abs(saved - 2 * bn_values) < 200  # headers differ by a few bytes of JSON


def test_other_dtype_is_checked():
    from lightnn.errors import LightnnError

    with pytest.raises(LightnnError, match="other_dtype must be"):
        DeepConfig(other_dtype="int8")
