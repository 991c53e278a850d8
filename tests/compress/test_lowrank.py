"""Low-rank convolution and SVD factorization: full rank is exact, the truncation error equals the dropped singular
values (Eckart-Young), rank/energy selection, the report, and the checkpoint transform."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import lightnn
from lightnn.checkpoint import save_checkpoint
from lightnn.compress.lowrank import factorize, rank_for_energy
from lightnn.errors import LightnnError
from lightnn.ops.lowrank import LowRankConv2d, LowRankLinear
from lightnn.models import record_of


def _conv(in_c=6, out_c=10, k=3, stride=1, padding=1, bias=True) -> nn.Conv2d:
    return nn.Conv2d(in_c, out_c, k, stride, padding, bias=bias).double()


@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 0, False)])
def test_full_rank_equals_original(stride, padding, bias):
    conv = _conv(stride=stride, padding=padding, bias=bias)
    full = min(10, 6 * 9)
    lr = LowRankConv2d.from_conv(conv, full).double()
    x = torch.randn(2, 6, 9, 9, dtype=torch.double)
    torch.testing.assert_close(lr(x), conv(x))
    lin = nn.Linear(12, 7).double()
    torch.testing.assert_close(LowRankLinear.from_linear(lin, 7)(x.flatten(1)[:, :12]), lin(x.flatten(1)[:, :12]))


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_truncation_error_is_the_dropped_singular_values(rank):
    conv = _conv(bias=False)
    w = conv.weight.reshape(10, -1)
    s = torch.linalg.svdvals(w)
    lr = LowRankConv2d.from_conv(conv, rank)
    w_r = (lr.second.weight.reshape(10, rank) @ lr.first.weight.reshape(rank, -1))
    err = torch.linalg.matrix_norm(w - w_r)
    assert err.item() == pytest.approx(s[rank:].pow(2).sum().sqrt().item(), rel=1e-9)
    # and the layer's output error is exactly the output of the dropped part (linearity)
    x = torch.randn(1, 6, 5, 5, dtype=torch.double)
    dropped = nn.functional.conv2d(x, (w - w_r).reshape_as(conv.weight), padding=1)
    torch.testing.assert_close(conv(x) - lr(x), dropped)


def test_rank_for_energy():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # squares 9, 4, 1: cumulative 9/14, 13/14, 1
    assert rank_for_energy(s, 0.5) == 1
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.9) == 2
    assert rank_for_energy(s, 1.0) == 3
    with pytest.raises(LightnnError, match="energy"):
        rank_for_energy(s, 0.0)


class _Net(nn.Module):
    default_input_size = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.c2 = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 64)

    def forward(self, x):
        x = self.c2(torch.relu(self.dw(torch.relu(self.c1(x)))))
        return self.fc(x.mean((2, 3)))


def test_factorize_by_rank_reports_params_and_macs():
    net = _Net().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    before = sum(p.numel() for p in net.parameters())
    rep = factorize(net, rank=4)
    rows = {r.name: r for r in rep.rows}
    assert set(rows) == {"c1", "c2", "fc"}  # the depthwise (grouped) conv is not eligible
    assert isinstance(net.c2, LowRankConv2d) and isinstance(net.fc, LowRankLinear)
    # c1 (32 x 27): rank 4 costs 4 * (27 + 32) = 236 < 864 weights
    assert rows["c1"].params_before == 32 * 27 + 32 and rows["c1"].params_after == 4 * (27 + 32) + 32
    assert rows["c2"].macs_before == 4 * 4 * 32 * 288 and rows["c2"].macs_after == 4 * 4 * 4 * (288 + 32)
    assert rows["fc"].macs_before == 32 * 64
    assert rep.params_before == before and rep.params_after == sum(p.numel() for p in net.parameters())
    assert rep.params_after < rep.params_before
    assert record_of(net).transforms[-1] == {"kind": "lowrank", "ranks": {"c1": 4, "c2": 4, "fc": 4}}
    assert net(x).shape == (2, 64)
    assert "c2" in rep.table() and rep.to_dict()["spec"]["kind"] == "lowrank"


def test_factorize_energy_one_is_lossless_and_skips_layers_without_saving():
    torch.manual_seed(1)
    net = _Net().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    ref = net(x)
    rep = factorize(net, energy=1.0)
    # full rank saves nothing on these layers, so they are left as they are
    assert all(r.skipped for r in rep.rows) and record_of(net) is None
    torch.testing.assert_close(net(x), ref)
    # a low-rank weight is found exactly: energy 1.0 picks its true rank
    net2 = _Net().double()
    with torch.no_grad():
        net2.c2.weight.copy_((torch.randn(32, 2, dtype=torch.double) @ torch.randn(2, 288, dtype=torch.double))
                             .reshape(32, 32, 3, 3))
    ref2 = net2(x)
    rep2 = factorize(net2, energy=0.999999, layers=["c2"])
    assert rep2.rows[0].rank == 2 and isinstance(net2.c2, LowRankConv2d)
    torch.testing.assert_close(net2(x), ref2)


def test_factorize_errors_are_clear():
    net = _Net()
    with pytest.raises(LightnnError, match="exactly one"):
        factorize(net)
    with pytest.raises(LightnnError, match="no ungrouped"):
        factorize(net, rank=2, layers="nothing*")
    with pytest.raises(LightnnError, match="not factorable"):
        factorize(net, rank={"dw": 2})
    with pytest.raises(LightnnError, match="grouped"):
        LowRankConv2d.from_conv(net.dw, 2)
    with pytest.raises(LightnnError, match="exceeds"):
        LowRankConv2d.from_conv(net.c1, 50)


def test_checkpoint_rebuilds_factored_model(tmp_path):
    name = "lenet5"
    model = lightnn.create_model(name, num_classes=10).eval()
    rep = factorize(model, rank=3, layers="features.*")  # the convs (small SVDs keep the test fast)
    assert len(rep.spec["ranks"]) == 2
    path = save_checkpoint(tmp_path / "lr.pt", model)
    rebuilt = lightnn.create_model(name, checkpoint=str(path)).eval()
    assert record_of(rebuilt).transforms == record_of(model).transforms
    c, h, w = lightnn.model_info(name).test_input_size
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
