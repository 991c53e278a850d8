"""Trained weight sharing: 1-D k-means, the shared parametrization, centroid gradients (paper Eq. 3)."""

import pytest
import torch
import torch.nn as nn

from lightnn.compress.share import SharedWeight, centroid_parameters, finalize_sharing, kmeans_1d, share_weights


def test_kmeans_linear_init_assigns_nearest_centroid():
    v = torch.cat([torch.randn(500) * 0.1, torch.randn(50) + 3])
    c, a = kmeans_1d(v, 7)
    assert torch.all(c[1:] > c[:-1])
    nearest = (v[:, None] - c[None, :]).abs().argmin(1)
    assert torch.equal(a, nearest)
    # Lloyd fixed point: every centroid is the mean of its members
    for j in range(len(c)):
        assert c[j] == pytest.approx(v[a == j].mean().item(), abs=1e-5)
    assert c.max() > 2  # linear init keeps a centroid among the few large weights


def test_kmeans_with_few_distinct_values_is_exact():
    v = torch.tensor([0.5, -1.0, 0.5, 2.0])
    c, a = kmeans_1d(v, 31)
    assert torch.equal(c[a], v)


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_share_weights_keeps_zeros_and_codebook_size(init):
    net = nn.Sequential(nn.Conv2d(4, 16, 3), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    with torch.no_grad():
        net[0].weight[:, :2] = 0
    zeros = net[0].weight == 0
    share_weights(net, {"conv": 4, "fc": 3}, init=init)
    w0, w2 = net[0].weight.detach(), net[2].weight.detach()
    assert torch.all(w0[zeros] == 0)
    assert torch.unique(w0[w0 != 0]).numel() <= 15
    assert torch.unique(w2[w2 != 0]).numel() <= 7
    finalize_sharing(net)
    assert isinstance(net[0].weight, nn.Parameter) and torch.equal(net[0].weight.detach(), w0)


def test_centroid_gradient_is_the_sum_of_member_gradients():
    lin = nn.Linear(32, 8)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.05] = 0
    share_weights(lin, 3)
    p: SharedWeight = lin.parametrizations.weight[0]
    x = torch.randn(5, 32)
    # reference: gradient of the loss w.r.t. a plain copy of the shared weight
    w_ref = lin.weight.detach().clone().requires_grad_(True)
    nn.functional.linear(x, w_ref, lin.bias).pow(2).sum().backward()
    lin(x).pow(2).sum().backward()
    expected = torch.zeros_like(p.centroids).index_add_(0, p.index[p.mask], w_ref.grad[p.mask])
    assert torch.allclose(p.centroids.grad, expected, atol=1e-5)
    assert centroid_parameters(lin) == [p.centroids]


def test_fine_tuning_keeps_the_weights_shared():
    net = nn.Sequential(nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 4))
    share_weights(net, 2)
    opt = torch.optim.SGD(centroid_parameters(net), lr=0.1)
    before = [c.detach().clone() for c in centroid_parameters(net)]
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.randn(8, 20)), torch.randint(0, 4, (8,))).backward()
        opt.step()
    assert any(not torch.equal(b, c) for b, c in zip(before, centroid_parameters(net)))
    finalize_sharing(net)
    for m in (net[0], net[2]):
        assert torch.unique(m.weight[m.weight != 0]).numel() <= 3
