"""TrainConfig and the callbacks of fit: settings named when wrong, fractional epochs, step and time limits, the
parameter subset of weight sharing, masks on a schedule, gradient edits, QAT observers, resume with a partial epoch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lightnn.errors import CheckpointError, LightnnError
from lightnn.train import (AGPSchedule, Callback, LambdaCallback, Masks, MaxSteps, QATObservers, SharedWeights,
                           TimeLimit, TrainConfig, fit)
from synthetic import tiny_data  # noqa: E402  (tests/train/synthetic.py)




def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(6, 4))


CFG = TrainConfig(epochs=2, batch_size=8, lr=0.05, amp=False, channels_last=False, device="cpu", progress=False,
                  verbose=False)


class Steps(Callback):
    """Records the step count and learning rate after every optimizer step."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, state):
        self.seen.append((state.step, state.scheduler.get_last_lr()[0]))


@pytest.mark.parametrize("bad, msg", [(dict(lr=-1.0), "lr must be a number >= 0"),
                                      (dict(epochs=0), "epochs must be a number > 0"),
                                      (dict(batch_size=2.5), "batch_size must be an integer"),
                                      (dict(schedule="linear"), "schedule must be one of"),
                                      (dict(amp="yes"), "amp must be true, false or None"),
                                      (dict(compile="fastest"), "compile mode 'fastest' is not one of"),
                                      (dict(mean=[0.5, 0.5, 0.5]), "mean and std go together"),
                                      (dict(mean=[0.5], std=[0.0]), "std must be finite per-channel numbers > 0")])
def test_train_config_names_the_bad_field(bad, msg):
    with pytest.raises(LightnnError, match=msg):
        TrainConfig(**bad)


def test_unknown_settings_are_named_with_the_callback_that_replaced_them():
    with pytest.raises(LightnnError, match=r"unknown training configuration key\(s\) \['lrate'\]"):
        TrainConfig.from_dict({"lrate": 0.1})
    with pytest.raises(LightnnError, match=r"\['teacher'\] \(teacher -> callbacks=\[Distillation"):
        fit(net(), tiny_data(), None, CFG, teacher=net(1))
    with pytest.raises(LightnnError, match="callbacks\\[0\\] is a function"):
        fit(net(), tiny_data(), None, CFG, callbacks=[lambda s: None])
    with pytest.raises(LightnnError, match="unknown hook"):
        LambdaCallback(on_batch=lambda s: None)
    # a mapping is a config too; overrides replace its fields
    cfg = TrainConfig.from_dict({"lr": 0.2, "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}).replace(epochs=3)
    assert cfg.lr == 0.2 and cfg.epochs == 3 and cfg.mean == (0.1, 0.2, 0.3)
    assert cfg.to_dict()["mean"] == [0.1, 0.2, 0.3]


def test_fractional_epochs_and_max_steps_span_the_schedule():
    # 32 images / batch 8 = 4 batches an epoch: 1.5 epochs is 6 steps, the second epoch partial
    rec = Steps()
    res = fit(net(), tiny_data(), None, CFG.replace(epochs=1.5), callbacks=[rec])
    assert res["steps"] == 6 and [s for s, _ in rec.seen] == [1, 2, 3, 4, 5, 6] and len(res["history"]) == 2
    assert rec.seen[-1][1] == pytest.approx(0.0, abs=1e-12)  # the cosine schedule ends where the run ends
    # MaxSteps(3): 3 steps of the 8 the epochs allow, and the schedule spans those 3
    rec = Steps()
    res = fit(net(), tiny_data(), None, CFG, callbacks=[MaxSteps(3), rec])
    assert res["steps"] == 3 and len(res["history"]) == 1 and rec.seen[-1][1] == pytest.approx(0.0, abs=1e-12)
    assert rec.seen[0][1] == pytest.approx(0.05 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 3)).item()))


def test_time_limit_stops_after_the_step_that_crosses_it(monkeypatch):
    from lightnn.train import callbacks

    class Clock:
        now = 0.0

        def perf_counter(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(callbacks, "time", clock)

    def tick(state):  # each step "takes" one second
        clock.now += 1.0

    res = fit(net(), tiny_data(), None, CFG, callbacks=[TimeLimit(2.5), LambdaCallback(on_step_start=tick)])
    assert res["steps"] == 3 and res["history"][-1]["epoch"] == 1


def test_shared_weights_trains_only_the_centroids():
    from lightnn.compress import share_weights

    m = net()
    shared = share_weights(m, 3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fit(m, tiny_data(), None, CFG.replace(epochs=1), callbacks=[SharedWeights([p.centroids for p in shared.values()])])
    sd = m.state_dict()
    moved = {k for k in sd if sd[k].is_floating_point() and not torch.equal(sd[k], before[k])}
    # the codebooks moved; biases and batch-norm affine parameters did not (running statistics always do)
    assert moved and all("centroids" in k or "running" in k for k in moved)
    assert any("centroids" in k for k in moved)
    with pytest.raises(LightnnError, match="not parameters of the model"):
        fit(net(), tiny_data(), None, CFG, callbacks=[SharedWeights([p.centroids for p in shared.values()])])


def test_masks_follow_their_schedule_and_hold_after_every_step():
    m = net()
    calls, masks = [], {}

    def update(t, n):  # an AGP-like pruner: the smallest |w| of the classifier, more of them as t grows
        calls.append((t, n))
        w = m[5].weight.detach().abs()
        k = int(w.numel() * 0.5 * t / n)
        masks["5"] = w > w.flatten().kthvalue(k).values if k else torch.ones_like(w, dtype=torch.bool)

    zeros = []
    check = LambdaCallback(on_step_end=lambda s: zeros.append(int((s.model[5].weight == 0).sum())))
    fit(m, tiny_data(), None, CFG, callbacks=[Masks(lambda: masks, AGPSchedule(update, ramp_fraction=0.5,
                                                                                 updates=2)), check])
    # 8 steps: ramp over the first 4, two updates, each one interval ahead
    assert calls == [(2, 4), (4, 4), (4, 4)]
    assert zeros[-1] >= 12 and zeros == sorted(zeros)
    with pytest.raises(LightnnError, match="no layer 'head'"):
        fit(net(), tiny_data(), None, CFG, callbacks=[Masks({"head": torch.ones(4, 6, dtype=torch.bool)})])


def test_gradient_edits_run_before_the_step():
    class Freeze(Callback):  # zero the first conv's gradients: it must not move (no weight decay)
        def on_after_backward(self, state):
            state.model[0].weight.grad.zero_()

    m = net()
    w0 = m[0].weight.detach().clone()
    fit(m, tiny_data(), None, CFG.replace(weight_decay=0.0), callbacks=[Freeze()])
    assert torch.equal(m[0].weight, w0) and not torch.equal(m[5].weight, net()[5].weight)


def test_qat_observers_freeze_their_ranges():
    from lightnn.export import qat_training

    model = net()
    model.default_input_size = (3, 8, 8)
    q, cfg, cbs = qat_training(model, epochs=2, batch_size=8, freeze_observers_after=2)
    ranges = []
    cbs.append(LambdaCallback(on_step_end=lambda s: ranges.append(float(s.model[5].act_range.hi))))
    fit(q, tiny_data(), None, cfg, callbacks=cbs)
    # steps 1-2 observed (the range after step 2 includes step 2's batch), then fixed for the other 6
    assert ranges[1] != ranges[0] and len(set(ranges[1:])) == 1
    assert int(q[0].act_range.seen) == int(q[5].act_range.seen) == 2 and q.qat_steps == 8 and not q.training
    with pytest.raises(LightnnError, match="no fake-quantized layers"):
        fit(net(), tiny_data(), None, CFG, callbacks=[QATObservers(lambda m: False)])


def registered(seed: int = 0) -> nn.Module:
    """A registry model: only those are checkpointed (they rebuild from the file)."""
    from lightnn import create_model

    torch.manual_seed(seed)
    return create_model("lenet_300_100", num_classes=4, in_chans=3, img_size=8)


def test_resume_after_a_partial_epoch_gives_the_uninterrupted_run(tmp_path):
    class Stop(Exception):
        pass

    def stop(state, rec):
        if rec["epoch"] == 1:
            raise Stop

    cfg = CFG.replace(epochs=1.5)  # 16 images: 2 steps, then 1 of epoch 2
    a = registered()
    fit(a, tiny_data(16), None, cfg)
    with pytest.raises(Stop):
        fit(registered(), tiny_data(16), None, cfg, callbacks=[LambdaCallback(on_epoch_end=stop)],
            output_dir=tmp_path)
    c = registered(7)
    res = fit(c, tiny_data(16), None, cfg, output_dir=tmp_path, resume=True)
    assert res["steps"] == 3 and [r["epoch"] for r in res["history"]] == [1, 2]
    for k, v in a.state_dict().items():
        assert torch.equal(v, c.state_dict()[k]), k


def test_a_stateful_callback_needs_its_state_to_resume(tmp_path):
    class Counter(Callback):
        def __init__(self):
            self.n = 0

        def on_step_end(self, state):
            self.n += 1

        def state_dict(self):
            return {"n": self.n}

        def load_state_dict(self, d):
            self.n = d["n"]

    def stop(state, rec):
        raise KeyboardInterrupt

    cnt = Counter()
    data = tiny_data(16)
    with pytest.raises(KeyboardInterrupt):
        fit(registered(), data, None, CFG, callbacks=[cnt, LambdaCallback(on_epoch_end=stop)], output_dir=tmp_path)
    again = Counter()
    fit(registered(), data, None, CFG, callbacks=[again], output_dir=tmp_path, resume=True)
    assert cnt.n == 2 and again.n == 4  # 2 restored + the 2 steps of epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(registered(), data, None, CFG, callbacks=[LambdaCallback(on_epoch_end=stop)], output_dir=tmp_path / "b")
    with pytest.raises(CheckpointError, match="cannot resume with Counter"):
        fit(registered(), data, None, CFG, callbacks=[Counter()], output_dir=tmp_path / "b", resume=True)
