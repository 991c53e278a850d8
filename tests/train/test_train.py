"""lightnn.train: resume == uninterrupted, checkpoints that rebuild, schedules, loss terms (oracles), hooks,
weight-decay groups, evaluate against a hand count, and the train/eval CLI."""

from __future__ import annotations

import copy
import json
import math
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lightnn import create_model
from lightnn.cli import main
from lightnn.errors import DataError
from lightnn.train import (EMA, AuxLoss, Distillation, ExtraLoss, LambdaCallback, Masks, distillation_loss, evaluate,
                           fit, lr_lambda, param_groups)
from lightnn.train.losses import classification_loss
from synthetic import tiny_data  # noqa: E402  (tests/train/synthetic.py)




def small_model(k: int = 4):
    return create_model("resnet20", num_classes=k)


class Stop(Exception):
    """Raised by :func:`interrupt` to cut a run short, as a kill would."""


def interrupt(epoch, rec, model):
    """Stops the run after its first epoch (last.pt of epoch 1 is on disk)."""
    if epoch == 1:
        raise Stop


def interrupting() -> LambdaCallback:
    """A callback calling :func:`interrupt` at the end of each epoch, after its checkpoint is written."""
    return LambdaCallback(on_epoch_end=lambda state, rec: interrupt(rec["epoch"], rec, state.model))


KW = dict(batch_size=16, lr=0.05, progress=False, verbose=False, seed=0, amp=False)  # no timing-based precision probe


def test_pick_precision_times_both_and_leaves_the_model_alone():
    from lightnn.train import pick_precision

    torch.manual_seed(0)
    m = small_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    r = pick_precision(m, (x, y), "cpu", steps=1)
    assert r["fp32_s"] > 0 and r["bf16_cl_s"] > 0
    assert r["amp"] == r["channels_last"] == (r["bf16_cl_s"] < r["fp32_s"])
    for k, v in m.state_dict().items():  # weights and BN statistics untouched: the probe trained a copy
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in m.parameters())


def test_fit_probes_precision_once_and_a_resumed_run_keeps_it(tmp_path, monkeypatch):
    import yaml
    from lightnn.train import trainer

    calls = []

    def fake_pick(model, batch, device, steps=2, compile=False, candidates=None):
        calls.append(1)
        return {"amp": True, "channels_last": True, "fp32_s": 2.0, "bf16_cl_s": 1.0}

    monkeypatch.setattr(trainer, "bf16_is_fast", lambda dev: True)
    monkeypatch.setattr(trainer, "pick_precision", fake_pick)
    kw = {k: v for k, v in KW.items() if k != "amp"}
    fit(small_model(), tiny_data(32), None, epochs=1, output_dir=tmp_path / "r", **kw)
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert calls == [1] and cfg["amp"] is True and cfg["channels_last"] is True
    assert cfg["precision_probe"]["bf16_cl_s"] == 1.0

    def must_not_probe(*a, **k):
        raise AssertionError("a resumed run must keep the precision it started with")

    monkeypatch.setattr(trainer, "pick_precision", must_not_probe)
    fit(small_model(), tiny_data(32), None, epochs=2, output_dir=tmp_path / "r", resume=True, **kw)
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert cfg["amp"] is True and cfg["channels_last"] is True
    # forcing a precision skips the probe
    fit(small_model(), tiny_data(32), None, epochs=1, amp=False, **kw)


def test_resume_gives_the_uninterrupted_result(tmp_path):
    tr, va = tiny_data(32), tiny_data(16, seed=1)
    torch.manual_seed(0)
    a = small_model()
    ra = fit(a, tr, va, epochs=2, output_dir=tmp_path / "a", label_smoothing=0.1, warmup_epochs=1, **KW)

    torch.manual_seed(0)
    b = small_model()
    with pytest.raises(Stop):
        fit(b, tr, va, epochs=2, output_dir=tmp_path / "b", label_smoothing=0.1, warmup_epochs=1,
            callbacks=[interrupting()], **KW)
    torch.manual_seed(123)  # a fresh process: different init, different RNG
    c = small_model()
    rc = fit(c, tr, va, epochs=2, output_dir=tmp_path / "b", label_smoothing=0.1, warmup_epochs=1, resume=True, **KW)
    for (k, va_), vc in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(va_, vc), k
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in h]  # noqa: E731
    assert strip(ra["history"]) == strip(rc["history"])
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    # the final file rebuilds from itself alone
    m = create_model("resnet20", checkpoint=str(tmp_path / "b" / "model.pt"))
    x = torch.randn(2, 3, 8, 8)
    # (training may leave c in channels-last, whose conv kernels sum in another order: compare in one layout)
    assert torch.equal(m.eval()(x), c.to(memory_format=torch.contiguous_format).eval()(x))
    assert (tmp_path / "b" / "config.yaml").read_text().count("label_smoothing: 0.1") == 1


def test_class_count_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="num_classes=4"):
        fit(create_model("resnet20", num_classes=10), tiny_data(48), epochs=1, **KW)
    with pytest.raises(DataError, match="10 output classes"):
        evaluate(create_model("resnet20", num_classes=10), tiny_data(48))


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_label_smoothing_out_of_range_is_named(bad):
    from lightnn.errors import LightnnError

    with pytest.raises(LightnnError, match=rf"label_smoothing must be in \[0, 1\), got {bad}"):
        fit(create_model("resnet20", num_classes=4), tiny_data(48), epochs=1, label_smoothing=bad, **KW)


def test_evaluate_matches_hand_count():
    data = tiny_data(20, k=6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    mean, std = [0.0] * 3, [1.0] * 3
    res = evaluate(model, data, batch_size=7, mean=mean, std=std)
    logits = model(data.images.float() / 255.0)
    top5 = logits.topk(5, 1).indices
    assert res["n"] == 20
    assert math.isclose(res["top1"], 100 * (top5[:, 0] == data.labels).double().mean().item(), abs_tol=1e-6)
    assert math.isclose(res["top5"], 100 * (top5 == data.labels[:, None]).any(1).double().mean().item(), abs_tol=1e-6)
    assert math.isclose(res["loss"], F.cross_entropy(logits, data.labels).item(), rel_tol=1e-5)
    cm = torch.tensor(res["confusion"])
    assert cm.sum() == 20 and cm.trace().item() == round(res["top1"] * 20 / 100)


def test_schedules():
    f = lr_lambda("cosine", 100, warmup_steps=10)
    assert math.isclose(f(0), 0.1) and math.isclose(f(9), 1.0) and math.isclose(f(10), 1.0)
    assert math.isclose(f(55), 0.5, abs_tol=1e-9) and f(99) < 0.01
    o = lr_lambda("onecycle", 100)
    assert math.isclose(o(0), 1 / 25) and math.isclose(o(30), 1.0) and o(99) < 1e-3
    assert lr_lambda("constant", 10, 2)(5) == 1.0


def test_losses_oracles():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    assert distillation_loss(s, s).abs().item() < 1e-6
    T = 3.0
    ref = (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    assert torch.allclose(distillation_loss(s, t, T), ref, atol=1e-6)
    y = torch.randint(0, 7, (5,))
    loss, logits = classification_loss((s, t), y, label_smoothing=0.1, aux_weight=0.4)
    ref = F.cross_entropy(s, y, label_smoothing=0.1) + 0.4 * F.cross_entropy(t, y, label_smoothing=0.1)
    assert torch.allclose(loss, ref) and logits is s


def test_no_weight_decay_on_norms_and_biases():
    m = small_model()
    decay, no_decay = param_groups(m, 5e-4)
    assert all(p.ndim > 1 for p in decay["params"]) and no_decay["weight_decay"] == 0.0
    bn = [mod.weight for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert all(any(p is w for p in no_decay["params"]) for w in bn)


class AuxNet(nn.Module):
    """Returns (logits, aux) in train mode, like Inception-v3."""

    def __init__(self, k=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc, self.aux = nn.Linear(8, k), nn.Linear(8, k)
        self.num_classes = k

    def forward(self, x):
        h = self.body(x)
        return (self.fc(h), self.aux(h)) if self.training else self.fc(h)


def test_aux_head_teacher_hooks_and_extra_loss():
    data = tiny_data(48)
    model = AuxNet()
    mask = (torch.rand_like(model.fc.weight) > 0.5).float()
    extra_calls = []

    def keep_pruned(m):
        m.fc.weight.data.mul_(mask)

    def extra(m, outputs, y):
        extra_calls.append(isinstance(outputs, tuple))
        return 0.01 * m.fc.weight.pow(2).sum()

    aux_before = model.aux.weight.clone()
    fit(model, data, data, epochs=1, callbacks=[AuxLoss(), Distillation(AuxNet(), weight=0.5), ExtraLoss(extra),
                                                 LambdaCallback(on_step_end=lambda s: keep_pruned(s.model))], **KW)
    assert torch.all(model.fc.weight[mask == 0] == 0)
    assert extra_calls and all(extra_calls)
    assert not torch.equal(model.aux.weight, aux_before)  # the aux loss reached the aux head


def test_cli_train_then_eval(tmp_path, capsys, monkeypatch):
    import zipfile

    import numpy as np
    from PIL import Image

    monkeypatch.setenv("LIGHTNN_CACHE", str(tmp_path / "cache"))
    zpath = tmp_path / "tiny.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(zpath, "w") as z:
        for c in ("a", "b"):
            for i in range(10):
                im = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
                import io

                buf = io.BytesIO()
                im.save(buf, "PNG")
                z.writestr(f"train/{c}/{i}.png", buf.getvalue())
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet20\nepochs: 5\nbatch_size: 8\nlr: 0.02\n")
    out = tmp_path / "run"
    rc = main(["train", "--config", str(cfg), "--data", str(zpath), "--epochs", "1", "--output", str(out),
               "--val-fraction", "0.2", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epoch"] == 1 and summary["val_images"] == 4
    assert "lr: 0.02" in (out / "config.yaml").read_text() and "epochs: 1" in (out / "config.yaml").read_text()
    assert main(["eval", str(out / "model.pt"), "--data", str(zpath), "--val-fraction", "0.2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 4 and 0 <= res["top1"] <= 100 and res["top5"] == 100.0 and len(res["confusion"]) == 2
    # --ema trains and saves the average (its config and val score); --tta flip is what evaluate(tta="flip") gives
    assert main(["train", "resnet20", "--data", str(zpath), "--epochs", "1", "--output", str(tmp_path / "ema"),
                 "--val-fraction", "0.2", "--ema", "0.99", "--cutout", "4", "--batch-size", "8", "--no-amp",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = (tmp_path / "ema" / "config.yaml").read_text()
    assert "val_top1_raw" in summary and "ema: 0.99" in written and "cutout: 4" in written
    assert main(["eval", str(tmp_path / "ema" / "model.pt"), "--data", str(zpath), "--val-fraction", "0.2",
                 "--tta", "flip", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    from lightnn.checkpoint import load_any, read_checkpoint
    from lightnn.data import load_dataset

    norm = read_checkpoint(tmp_path / "ema" / "model.pt")["meta"]["normalize"]
    want = evaluate(load_any(str(tmp_path / "ema" / "model.pt")), load_dataset(str(zpath), "val", val_fraction=0.2),
                    tta="flip", **norm)
    assert res["tta"] == "flip" and res["top1"] == want["top1"] and math.isclose(res["loss"], want["loss"])
    # bad input: one line, exit 2
    assert main(["eval", str(out / "model.pt"), "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["train", "resnet20", "--data", str(zpath), "--epochs", "1", "--output", str(tmp_path / "x"),
                 "--arch", "no_such_arg=3"]) == 2
    assert "no_such_arg" in capsys.readouterr().err
    # --compile reaches fit (torch.compile stubbed: the real one is the slow oracle test above)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(type(m).__name__) or m)
    assert main(["train", "resnet20", "--data", str(zpath), "--epochs", "1", "--output", str(tmp_path / "cc"),
                 "--compile", "--no-amp", "--json"]) == 0
    assert compiled == ["ResNetCifar"]
    assert "compile: default" in (tmp_path / "cc" / "config.yaml").read_text()
    # --compile auto: resolved by timing eager and (stub-)compiled steps; config.yaml records the choice and timings
    import yaml

    assert main(["train", "resnet20", "--data", str(zpath), "--epochs", "1", "--output", str(tmp_path / "ca"),
                 "--compile", "auto", "--no-amp", "--batch-size", "8", "--json"]) == 0
    cfg = yaml.safe_load((tmp_path / "ca" / "config.yaml").read_text())
    assert cfg["compile"] in (True, False) and set(cfg["precision_probe"]) >= {"eager", "compiled"}
    # a bad mode is refused while parsing, before the (here missing) data is looked at
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error: exit status 2
        main(["train", "resnet20", "--data", str(tmp_path / "no_such_data"), "--epochs", "1", "--output",
              str(tmp_path / "cd"), "--compile", "fastest"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "compile mode 'fastest' is not one of" in err and "no_such_data" not in err


def test_bf16_is_fast_follows_the_hardware(monkeypatch):
    import torch

    from lightnn.train.trainer import bf16_is_fast

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert bf16_is_fast("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not bf16_is_fast("cpu")
    assert bf16_is_fast("cuda")
    assert not bf16_is_fast("meta")


def _lenet_tiny(k: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, k))


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    # oracle: the same seeded run through torch.compile (TorchInductor) ends at the eager run's weights and losses
    tr, va = tiny_data(32), tiny_data(16, seed=1)
    torch.manual_seed(0)
    a = small_model()
    b = copy.deepcopy(a)
    ra = fit(a, tr, va, epochs=2, **KW)
    rb = fit(b, tr, va, epochs=2, compile=True, output_dir=tmp_path / "c", **KW)
    for (k, va_), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va_.float(), vb.float(), rtol=1e-4, atol=1e-5), k
    for x, y in zip(ra["history"], rb["history"]):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_top1"] == y["val_top1"]
    ck = torch.load(tmp_path / "c" / "model.pt", map_location="cpu", weights_only=True)
    state = ck.get("state_dict") or ck.get("weights") or {}
    assert state and not any("_orig_mod" in k for k in state)  # saved as the plain model, not the compiled wrapper
    assert "compile: true" in (tmp_path / "c" / "config.yaml").read_text()


def test_compiled_precision_probe_times_compiled_copies(monkeypatch):
    # with compile, both precisions are timed through torch.compile (the compiled winner can differ from the eager
    # one), each copy compiled once, with a second warm-up step before the timed ones; the model is left alone
    from lightnn.errors import LightnnError
    from lightnn.train import pick_precision

    compiled, calls = [], []

    class Counting(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            calls.append(x.is_contiguous(memory_format=torch.channels_last))
            return self.m(x)

    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(kw) or Counting(m))
    m = _lenet_tiny()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    r = pick_precision(m, (x, y), "cpu", steps=1, compile="max-autotune")
    assert compiled == [{"mode": "max-autotune"}] * 2
    assert calls == [False] * 3 + [True] * 3  # fp32 then bf16 + channels-last: 2 warm-up steps + 1 timed each
    assert r["compile"] == "max-autotune" and r["compile_s"] > 0 and r["fp32_s"] > 0 and r["bf16_cl_s"] > 0
    assert r["amp"] == (r["bf16_cl_s"] < r["fp32_s"])
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert "compile_s" not in pick_precision(m, (x, y), "cpu", steps=1)  # eager: no compilation to report
    with pytest.raises(LightnnError, match="compile mode 'fastest' is not one of"):
        pick_precision(m, (x, y), "cpu", compile="fastest")


def test_fit_with_compile_probes_compiled_precision(tmp_path, monkeypatch):
    import yaml
    from lightnn.train import trainer

    seen = []

    def fake_pick(model, batch, device, steps=2, compile=False, candidates=None):
        seen.append(compile)
        return {"amp": False, "channels_last": False, "fp32_s": 1.0, "bf16_cl_s": 2.0, "compile": compile,
                "compile_s": 3.0}

    monkeypatch.setattr(trainer, "bf16_is_fast", lambda dev: True)
    monkeypatch.setattr(trainer, "pick_precision", fake_pick)
    monkeypatch.setattr(torch, "compile", lambda m, **kw: m)
    kw = {k: v for k, v in KW.items() if k != "amp"}
    fit(small_model(), tiny_data(32), None, epochs=1, compile=True, output_dir=tmp_path / "r", **kw)
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert seen == [True] and cfg["amp"] is False and cfg["precision_probe"]["compile_s"] == 3.0


class _VirtualClock:
    """Stands in for the ``time`` module in the trainer: ``perf_counter`` only moves when a step "costs" time,
    so the probe's decisions in these tests do not depend on how loaded the machine is."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Costly(nn.Module):
    """A tiny net whose eager step costs ``eager_s`` on the virtual clock; the stub compiler makes it ``compiled_s``."""

    def __init__(self, clock: _VirtualClock, eager_s: float, compiled_s: float):
        super().__init__()
        self.net, self.eager_s, self.compiled_s, self.compiled = _lenet_tiny(), eager_s, compiled_s, False
        self.clock = clock

    def forward(self, x):
        self.clock.now += self.compiled_s if self.compiled else self.eager_s
        return self.net(x)

    def __deepcopy__(self, memo):  # the probe trains deep copies: share the clock, copy the rest
        new = _Costly(self.clock, self.eager_s, self.compiled_s)
        new.net = copy.deepcopy(self.net, memo)
        new.compiled = self.compiled
        return new


def _stub_compile(m, **kw):
    m.compiled = True  # the probe compiles deep copies, so the caller's model stays eager
    return m


@pytest.mark.parametrize("eager_s, compiled_s, want", [(0.03, 0.01, True), (0.01, 0.03, False),
                                                       (0.0300, 0.0295, False)])  # < 3% faster: stay eager
def test_auto_compile_probe_keeps_the_faster_way(monkeypatch, eager_s, compiled_s, want):
    from lightnn.train import pick_precision, trainer

    clock = _VirtualClock()
    monkeypatch.setattr(trainer, "time", clock)
    monkeypatch.setattr(torch, "compile", _stub_compile)
    m = _Costly(clock, eager_s, compiled_s)
    batch = (torch.randn(8, 3, 8, 8), torch.arange(8) % 4)
    r = pick_precision(m, batch, "cpu", steps=1, compile="auto")
    assert r["compile"] is want and not m.compiled
    assert r["eager"]["step_s"] == pytest.approx(eager_s) and r["compiled"]["step_s"] == pytest.approx(compiled_s)
    assert r["compiled"]["compile"] is True and r["eager"]["compile"] is False
    chosen = r["compiled"] if want else r["eager"]
    assert r["step_s"] == chosen["step_s"] == min(chosen["fp32_s"], chosen["bf16_cl_s"])
    assert (r["amp"], r["channels_last"]) == (chosen["amp"], chosen["channels_last"])
    # one forced candidate: only it is timed, eager and compiled
    r1 = pick_precision(m, batch, "cpu", steps=1, compile="auto", candidates=[(True, False)])
    assert r1["bf16_cl_s"] is None and r1["fp32_s"] is None and (r1["amp"], r1["channels_last"]) == (True, False)


def test_fit_auto_compile_follows_the_probe_and_a_resume_keeps_it(tmp_path, monkeypatch):
    import yaml
    from lightnn.train import trainer

    seen, compiled = [], []

    def fake_pick(model, batch, device, steps=2, compile=False, candidates=None):
        seen.append((compile, tuple(candidates)))
        rec = {"amp": False, "channels_last": False, "step_s": 1.0, "fp32_s": 1.0, "bf16_cl_s": None}
        return {**rec, "compile": False, "eager": {**rec, "compile": False},
                "compiled": {**rec, "step_s": 1.5, "fp32_s": 1.5, "compile": True}, "compile_s": 9.0}

    monkeypatch.setattr(trainer, "pick_precision", fake_pick)
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(1) or m)
    fit(small_model(), tiny_data(32), None, epochs=1, compile="auto", output_dir=tmp_path / "r", **KW)
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    # amp forced off by KW: only (fp32, contiguous) is timed; compiled was slower, so training ran eager
    assert seen == [("auto", ((False, False),))] and compiled == []
    assert cfg["compile"] is False and cfg["precision_probe"]["compiled"]["step_s"] == 1.5

    def must_not_probe(*a, **k):
        raise AssertionError("a resumed run keeps the compile choice it started with")

    monkeypatch.setattr(trainer, "pick_precision", must_not_probe)
    fit(small_model(), tiny_data(32), None, epochs=2, compile="auto", output_dir=tmp_path / "r", resume=True, **KW)
    assert compiled == []


def test_fit_auto_compile_without_a_timeable_batch_trains_eager(monkeypatch, capsys):
    from lightnn.train import trainer

    monkeypatch.setattr(trainer, "pick_precision", lambda *a, **k: pytest.fail("nothing to time"))
    monkeypatch.setattr(torch, "compile", lambda m, **kw: pytest.fail("must train eager"))
    data = tiny_data(32)
    batches = [(data.images[i:i + 16].float() / 255, data.labels[i:i + 16]) for i in (0, 16)]
    fit(_lenet_tiny(), batches, None, epochs=1, compile="auto", **{**KW, "verbose": True})
    assert "compile auto: no training step could be timed here" in capsys.readouterr().out


@pytest.mark.slow
def test_compiled_precision_probe_runs_inductor():
    from lightnn.train import pick_precision

    batch = (torch.randn(8, 3, 8, 8), torch.arange(8) % 4)
    r = pick_precision(_lenet_tiny(), batch, "cpu", steps=1, compile=True)
    assert r["compile"] is True and r["compile_s"] >= r["fp32_s"] > 0 and r["bf16_cl_s"] > 0
    a = pick_precision(_lenet_tiny(), batch, "cpu", steps=1, compile="auto")
    assert a["compile"] in (True, False) and a["compiled"]["step_s"] > 0 and a["eager"]["step_s"] > 0
    assert a["compile"] == (a["compiled"]["step_s"] < 0.97 * a["eager"]["step_s"])


def test_compile_failure_is_a_clear_error(monkeypatch):
    from torch._dynamo.exc import TorchDynamoException

    from lightnn.errors import LightnnError

    class Broken(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            raise TorchDynamoException("backend='inductor' raised: no C compiler found")

    monkeypatch.setattr(torch, "compile", lambda m, **kw: Broken(m))
    with pytest.raises(LightnnError, match="torch.compile could not compile Sequential.*train without compile"):
        fit(_lenet_tiny(), tiny_data(32), None, epochs=1, compile=True, **KW)
    from lightnn.train import pick_precision  # the compiled precision probe fails the same way, before training
    with pytest.raises(LightnnError, match="torch.compile could not compile Sequential"):
        pick_precision(_lenet_tiny(), (torch.randn(8, 3, 8, 8), torch.arange(8) % 4), "cpu", compile=True)


def test_evaluate_flip_tta_matches_hand_average():
    data = tiny_data(20, k=6)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6))
    mean, std = [0.0] * 3, [1.0] * 3
    res = evaluate(model, data, batch_size=7, mean=mean, std=std, tta="flip")
    x = data.images.float() / 255.0
    prob = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2  # the mirror is a different input here
    assert not torch.allclose(model(x), model(x.flip(3)))
    assert math.isclose(res["top1"], 100 * (prob.argmax(1) == data.labels).double().mean().item(), abs_tol=1e-6)
    assert math.isclose(res["loss"], F.nll_loss(prob.log(), data.labels).item(), rel_tol=1e-5)
    # a mirror-symmetric model gains nothing from the mirror: same numbers as without tta
    sym = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 6))
    a, b = evaluate(sym, data, mean=mean, std=std), evaluate(sym, data, mean=mean, std=std, tta="flip")
    assert a["top1"] == b["top1"] and math.isclose(a["loss"], b["loss"], rel_tol=1e-5)
    with pytest.raises(Exception, match="tta must be one of"):
        evaluate(sym, data, mean=mean, std=std, tta="crops")


def test_ema_is_the_moving_average_of_every_step_and_resumes(tmp_path):
    from lightnn.errors import CheckpointError, LightnnError

    tr, va = tiny_data(32), tiny_data(16, seed=1)
    decay = 0.9
    seen: list[dict] = []

    def record(model):  # a step callback sees the weights after each step: the oracle replays the average
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    torch.manual_seed(0)
    plain = small_model()
    init = {k: v.clone() for k, v in plain.state_dict().items()}
    fit(plain, tr, va, epochs=2, callbacks=[LambdaCallback(on_step_end=lambda s: record(s.model))], **KW)
    # oracle: the first step's weights, then lerp towards each later step's weights (BN statistics included)
    avg = {k: v.clone().float() for k, v in seen[0].items()}
    for s in seen[1:]:
        for k in avg:
            avg[k] = avg[k] * decay + s[k].float() * (1 - decay)

    torch.manual_seed(0)
    a = small_model()
    assert all(torch.equal(v, init[k]) for k, v in a.state_dict().items())
    ra = fit(a, tr, va, epochs=2, callbacks=[EMA(decay)], output_dir=tmp_path / "a", **KW)
    for k, v in a.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, avg[k], atol=1e-5), k
    assert {"val_top1", "val_top1_raw"} <= set(ra["final"])
    m = create_model("resnet20", checkpoint=str(tmp_path / "a" / "model.pt"))
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in m.state_dict().items())
    assert evaluate(a, va)["top1"] == ra["final"]["val_top1"]

    # interrupted after epoch 1 and resumed: the same average

    torch.manual_seed(0)
    with pytest.raises(Stop):
        fit(small_model(), tr, va, epochs=2, callbacks=[EMA(decay), interrupting()], output_dir=tmp_path / "b",
            **KW)
    torch.manual_seed(7)
    c = small_model()
    fit(c, tr, va, epochs=2, callbacks=[EMA(decay)], output_dir=tmp_path / "b", resume=True, **KW)
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k

    # a run without ema cannot be resumed with it; bad decays and weight constraints (masks) are named
    with pytest.raises(Stop):
        fit(small_model(), tr, va, epochs=2, output_dir=tmp_path / "c", callbacks=[interrupting()], **KW)
    with pytest.raises(CheckpointError, match="without ema"):
        fit(small_model(), tr, va, epochs=2, callbacks=[EMA(decay)], output_dir=tmp_path / "c", resume=True, **KW)
    with pytest.raises(LightnnError, match=r"ema decay must be in \(0, 1\)"):
        fit(small_model(), tr, epochs=1, callbacks=[EMA(1.0)], **KW)
    with pytest.raises(LightnnError, match="EMA cannot be combined with Masks"):
        keep = torch.ones(4, 64, dtype=torch.bool)
        fit(small_model(), tr, epochs=1, callbacks=[EMA(0.99), Masks({"classifier": keep})], **KW)
    # Cutout is part of lightnn's batch augmentation: other batch iterables are named, not silently left uncut
    batches = [(torch.randn(4, 3, 8, 8), torch.arange(4))]
    with pytest.raises(LightnnError, match="cutout=8 needs training data that lightnn batches itself"):
        fit(small_model(), batches, epochs=1, cutout=8, **KW)
