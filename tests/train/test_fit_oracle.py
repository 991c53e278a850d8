"""Oracle: seeded runs of the one training loop reach the weights of the three loops it replaced.

``tests/fixtures/fit_oracle.pt`` holds the state dicts that the old ``train.fit`` keywords (plain cross-entropy,
``teacher=``, ``ema=``, ``step_hook=`` re-applying masks, ``aux_weight=`` and ``extra_loss=``), the old
``compress.deep.finetune`` (through ``deep_compress``: AGP or one-shot masks, k-means shared weights trained alone
or with the rest, distillation, fractional epochs) and the old ``export.qat.qat_finetune`` (``max_steps``) reached
on the tiny seeded inputs below, written by commit 02d7312 before they moved into :func:`lightnn.train.fit` and its
callbacks. The same runs through ``fit`` must land on those weights, at a tolerance that survives another CPU's
float rounding after a few steps (on the machine that wrote it they are bit-exact), and two runs in one process
must agree bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lightnn.data import BatchLoader
from synthetic import tiny_data  # noqa: E402  (tests/train/synthetic.py)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "fit_oracle.pt"
MEAN, STD = [0.3, 0.25, 0.2], [0.2, 0.2, 0.25]




class Tiny(nn.Module):
    """conv-BN-ReLU, conv-ReLU, pool, linear (and an auxiliary head returned in train mode when ``aux``)."""

    def __init__(self, k: int = 4, aux: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, k)
        self.aux = nn.Linear(8, k) if aux else None
        self.num_classes = k
        self.default_input_size = (3, 8, 8)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.bn(self.conv(x)))))
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        out = self.fc(h)
        return (out, self.aux(h)) if self.training and self.aux is not None else out


def tiny(seed: int, aux: bool = False) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(aux=aux)


def fixed_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Seeded keep-masks (half the weights) of conv2 and fc, applied to the model."""
    g = torch.Generator().manual_seed(11)
    masks = {n: torch.rand(model.get_submodule(n).weight.shape, generator=g) > 0.5 for n in ("conv2", "fc")}
    with torch.no_grad():
        for n, m in masks.items():
            model.get_submodule(n).weight.masked_fill_(~m, 0.0)
    return masks


# the recipe every fit case shares: fp32 on the CPU, no timing-based precision probe, explicit normalization
FIT = dict(epochs=2, batch_size=8, lr=0.05, device="cpu", seed=3, amp=False, channels_last=False, progress=False,
           verbose=False, mean=MEAN, std=STD)


def run_case(name: str) -> dict[str, torch.Tensor]:
    from lightnn.compress import DeepConfig, deep_compress
    from lightnn.export import qat_training
    from lightnn.train import EMA, AuxLoss, Distillation, ExtraLoss, Masks, TrainConfig, fit

    data = tiny_data()
    if name == "fit_ce":
        m = tiny(0)
        fit(m, data, None, TrainConfig(**FIT, warmup_epochs=0.5, label_smoothing=0.1, min_lr=1e-3, grad_clip=1.0,
                                       cutout=2, weight_decay=1e-3))
    elif name == "fit_kd":
        m = tiny(0)
        fit(m, data, None, TrainConfig(**FIT, schedule="constant"),
            callbacks=[Distillation(tiny(1).eval(), temperature=3.0, weight=0.5)])
    elif name == "fit_ema":
        m = tiny(0)
        fit(m, data, None, TrainConfig(**FIT, nesterov=False), callbacks=[EMA(0.9)])
    elif name == "fit_masks":
        m = tiny(0)
        fit(m, data, None, TrainConfig(**FIT, schedule="onecycle"), callbacks=[Masks(fixed_masks(m))])
    elif name == "fit_aux_extra":
        m = tiny(0, aux=True)
        fit(m, data, None, TrainConfig(**FIT),
            callbacks=[AuxLoss(0.3), ExtraLoss(lambda mod, out, y: 0.01 * mod.fc.weight.pow(2).sum())])
    elif name in ("deep_centroids", "deep_all_kd"):
        m = tiny(0)
        loader = BatchLoader(data, 8, shuffle=True, augment=True, mean=MEAN, std=STD, drop_last=True, seed=5)
        if name == "deep_centroids":
            cfg = DeepConfig(sparsity={"conv": 0.5, "fc": 0.5}, schedule="agp", prune_epochs=1.5, mask_updates=3,
                             prune_lr=0.05, weight_bits={"conv": 4, "fc": 3}, share_epochs=1.0, share_lr=1e-3,
                             share_train="centroids", amp=False)
        else:
            cfg = DeepConfig(sparsity=0.6, scope="global", schedule="oneshot", prune_epochs=1.0, prune_lr=0.05,
                             weight_bits={"conv": 4, "fc": 3}, share_epochs=0.5, share_lr=1e-3, share_train="all",
                             label_smoothing=0.1, distill_weight=0.5, distill_temperature=2.0, amp=False)
        m, _ = deep_compress(m, cfg, train=loader, val=None, log=None)
    elif name == "qat":
        m, cfg, cbs = qat_training(tiny(0), epochs=2, lr=0.01, batch_size=8, max_steps=6, mean=MEAN, std=STD, seed=2)
        fit(m, data, None, cfg, callbacks=cbs)
    else:
        raise KeyError(name)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


CASES = ("fit_ce", "fit_kd", "fit_ema", "fit_masks", "fit_aux_extra", "deep_centroids", "deep_all_kd", "qat")


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture
def one_thread():
    """One summation order for the fixture and the rerun alike, whatever the core count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", CASES)
def test_seeded_run_reaches_the_stored_weights(name, expected, one_thread):
    got = run_case(name)
    want = expected[name]
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} {k}: {m}")
    again = run_case(name)
    for k in got:
        assert torch.equal(got[k], again[k]), f"{name} {k}: two runs in one process differ"

