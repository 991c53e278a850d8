"""Unstructured magnitude pruning: exact fractions, global thresholds, AGP schedule, masks kept while retraining."""

import pytest
import torch
import torch.nn as nn

from lightnn.compress.prune import (MagnitudePruner, agp_sparsity, layer_density, magnitude_masks,
                                    resolve_setting)
from lightnn.errors import LightnnError


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_per_layer_masks_remove_the_smallest_exact_fraction():
    net = _net()
    masks = magnitude_masks(net, 0.75)
    for name, m in [("0", net[0]), ("2", net[2]), ("5", net[5])]:
        mask = masks[name]
        k = round(0.75 * m.weight.numel())
        assert int((~mask).sum()) == k
        w = m.weight.detach().abs()
        assert w[~mask].max() <= w[mask].min()


def test_global_masks_share_one_threshold():
    net = _net()
    with torch.no_grad():
        net[5].weight.mul_(0.01)  # the fc layer is much smaller: global pruning should take it first
    masks = magnitude_masks(net, 0.5, scope="global")
    kept = torch.cat([net[int(n)].weight.detach().abs()[m] for n, m in masks.items()])
    pruned = torch.cat([net[int(n)].weight.detach().abs()[~m] for n, m in masks.items()])
    assert pruned.max() <= kept.min()
    assert masks["5"].float().mean() < 0.1


def test_settings_resolve_by_name_pattern_kind_default():
    net = _net()
    spec = {"0": 0.1, "5*": 0.3, "conv": 0.5, "default": 0.9}
    assert resolve_setting("0", net[0], spec) == 0.1
    assert resolve_setting("5", net[5], spec) == 0.3
    assert resolve_setting("2", net[2], spec) == 0.5  # depthwise falls back to conv
    assert resolve_setting("2", net[2], {"depthwise": 0.2, "conv": 0.5}) == 0.2
    assert resolve_setting("5", net[5], {"conv": 0.5, "default": 0.9}) == 0.9
    with pytest.raises(LightnnError, match="sparsity"):
        magnitude_masks(net, 1.5)


def test_agp_schedule():
    assert agp_sparsity(0, 10, 0.9) == 0.0
    assert agp_sparsity(10, 10, 0.9) == pytest.approx(0.9)
    assert agp_sparsity(5, 10, 0.8, 0.0) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert agp_sparsity(20, 10, 0.9) == pytest.approx(0.9)


def test_gradual_pruning_only_grows_the_masks():
    net = _net()
    pr = MagnitudePruner(net, {"conv": 0.5, "fc": 0.8}, schedule="agp")
    prev = None
    for t in range(0, 11, 2):
        pr.update(t, 10)
        if prev is not None:
            for k in prev:
                assert not (pr.masks[k] & ~prev[k]).any()  # nothing pruned comes back
        prev = {k: v.clone() for k, v in pr.masks.items()}
    d = layer_density(net)
    assert d["0"] == pytest.approx(0.5, abs=0.01) and d["5"] == pytest.approx(0.2, abs=0.02)


def test_masks_stay_zero_through_fine_tuning():
    net = _net()
    pr = MagnitudePruner(net, 0.6)
    pr.update()
    before = {k: net[int(k)].weight.detach().clone() for k in pr.masks}
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    handle = pr.attach(opt)
    for _ in range(5):
        x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    handle.remove()
    for k, mask in pr.masks.items():
        w = net[int(k)].weight.detach()
        assert torch.all(w[~mask] == 0)
        assert not torch.equal(w[mask], before[k][mask])  # the survivors did train
    # without the hook the optimizer (momentum, weight decay) moves pruned weights off zero
    opt.zero_grad()
    nn.functional.cross_entropy(net(torch.randn(16, 3, 8, 8)), torch.randint(0, 10, (16,))).backward()
    opt.step()
    assert any((net[int(k)].weight.detach()[~m] != 0).any() for k, m in pr.masks.items())
