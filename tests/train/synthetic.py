"""Tiny synthetic image data the training tests share (no files: every image is made from a seed)."""

from __future__ import annotations

import torch

from lightnn.data import ImageData


def tiny_data(n: int = 32, k: int = 4, size: int = 8, seed: int = 0) -> ImageData:
    """``n`` seeded uint8 images of ``size`` x ``size`` in ``k`` classes, learnable: the class sets the red level."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % k
    imgs = torch.randint(0, 120, (n, 3, size, size), generator=g, dtype=torch.uint8)
    imgs[:, 0] += (labels * 40).to(torch.uint8)[:, None, None]
    return ImageData(imgs, labels, [f"c{i}" for i in range(k)], source="tiny")
