"""recalibrate_bn: the running statistics become the plain average over the images it saw; nothing else changes."""

import torch
import torch.nn as nn

from lightnn.train import recalibrate_bn


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                         nn.BatchNorm2d(2, momentum=0.3))


def test_statistics_are_the_average_over_the_batches():
    net = _net().eval()
    for bn in (net[1], net[4]):
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(7.0)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 6, 6, generator=g), torch.zeros(8)) for _ in range(3)]
    used = recalibrate_bn(net, batches, images=24)
    assert used == 24
    # hand computation: the first BN sees the conv's outputs; its mean is the average of the per-batch means
    # (equal batches) and its variance the average of the per-batch unbiased variances (cumulative average)
    with torch.no_grad():
        outs = [net[0](x) for x, _ in batches]
    means = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    vars_ = torch.stack([o.transpose(0, 1).reshape(4, -1).var(dim=1, unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, vars_, rtol=1e-5, atol=1e-6)
    assert not net.training  # eval mode restored
    assert net[4].momentum == 0.3 and net[1].momentum == 0.1  # momenta restored
    after = {k: v for k, v in net.state_dict().items() if k in before}
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights untouched


def test_image_limit_and_no_batch_norm():
    net = _net()
    batches = [(torch.randn(8, 3, 6, 6), torch.zeros(8)) for _ in range(4)]
    assert recalibrate_bn(net, batches, images=12) == 12
    assert net[1].num_batches_tracked.item() == 2  # 8 + 4 images
    assert recalibrate_bn(nn.Sequential(nn.Conv2d(3, 3, 1)), batches) == 0
