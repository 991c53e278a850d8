"""Batch iteration over in-memory uint8 images, with augmentation applied to whole batches in torch.

The per-image Python work of a classic ``DataLoader`` + PIL pipeline (decode, pad, crop, flip, to-tensor,
normalize, collate) becomes a handful of tensor ops per batch: one gather does pad + random crop + horizontal
flip for the whole batch (the CIFAR augmentation of He et al., 2016: 4-pixel zero padding, 32x32 random crop,
random flip), and one fused multiply-add normalizes. On a GPU the uint8 dataset lives on the device.

Sharding follows ``torch.utils.data.DistributedSampler``: every rank draws the same seeded permutation, pads it
to a multiple of the world size and takes every ``world_size``-th index, so each rank runs the same number of
steps. Randomness depends only on (seed, epoch, rank): resuming at an epoch boundary replays the same batches.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch

from ..errors import DataError
from .datasets import ImageData

__all__ = ["BatchLoader", "dist_info", "IMAGENET_MEAN", "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@contextlib.contextmanager
def _single_thread(enable: bool):
    """Run the (memory-bound) batch assembly on one CPU thread: on a busy machine an intra-op parallel region
    waits for descheduled threads and is 5-10x slower than one thread; the model keeps its own thread count."""
    if not enable or torch.get_num_threads() == 1:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of the initialized torch.distributed group, or (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def normalize_affine(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of shape (1, C, 1, 1) with ``(x/255 - mean)/std == x * scale + shift`` for uint8 ``x``."""
    std_t = torch.tensor(list(std), dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(device)
    shift = (-torch.tensor(list(mean), dtype=torch.float32) / std_t).view(1, -1, 1, 1).to(device)
    return scale, shift


class _EpochLoader:
    """What every lightnn loader shares: the dataset's classes and the epoch its next iteration replays."""

    data: object
    epoch: int

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation and augmentation the next iteration replays."""
        self.epoch = int(epoch)


class BatchLoader(_EpochLoader):
    """Iterate ``(images, labels)`` batches of an :class:`ImageData`, normalized float on ``device``.

    Args:
        data: the split to iterate.
        batch_size: images per batch (per process under DDP).
        shuffle: draw a new seeded permutation each epoch (``set_epoch``); off for evaluation.
        augment: random ``pad``-pixel zero-pad + crop back to size, and horizontal ``flip`` (training).
        mean, std: normalization per channel in [0, 1] units (default: ImageNet's).
        device: where batches (and the whole uint8 dataset, once) live.
        drop_last: drop the last incomplete batch (training).
        seed: base seed; epoch ``e`` of rank ``r`` uses seeds derived from (seed, e, r) only.
        rank, world_size: shard for DDP (default: from torch.distributed when initialized). With ``shuffle``
            the shard is padded (like DistributedSampler) so all ranks step together; without it each rank gets
            a disjoint slice and metrics are summed across ranks.
        channels_last: return batches in channels-last memory format (faster convs on GPUs with bf16).
        cutout: with ``augment``, also paint a ``cutout`` x ``cutout`` square at a uniformly random centre of each
            image (clipped at the borders) in the normalization mean, i.e. zero after normalizing (DeVries & Taylor
            2017, "Improved Regularization of Convolutional Neural Networks with Cutout"); 0 = off.
    """

    def __init__(self, data: ImageData, batch_size: int = 128, *, shuffle: bool = False, augment: bool = False,
                 pad: int = 4, flip: bool = True, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, device: str | torch.device = "cpu", drop_last: bool = False,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 channels_last: bool = False, cutout: int = 0):
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if len(data) == 0:
            raise DataError(f"dataset {data.source!r} split {data.split!r} is empty")
        r, w = dist_info()
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.pad, self.flip = shuffle, augment, int(pad), flip
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch = 0
        self.channels_last = channels_last
        c, h, w = data.images.shape[1:]
        if not 0 <= int(cutout) <= max(h, w):
            raise DataError(f"cutout must be between 0 and the image size {h}x{w}, got {cutout}")
        self.cutout = int(cutout)
        mean = list(mean) if mean is not None else list(IMAGENET_MEAN)[:c] + [0.5] * max(0, c - 3)
        std = list(std) if std is not None else list(IMAGENET_STD)[:c] + [0.25] * max(0, c - 3)
        if len(mean) != c or len(std) != c:
            raise DataError(f"mean/std have {len(mean)}/{len(std)} values but the images have {c} channels")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self._scale, self._shift = normalize_affine(self.mean, self.std, self.device)
        # Cutout's paint: the mean colour in the uint8 images' units (zero after normalizing, up to rounding)
        self._fill = torch.tensor([round(255 * m) for m in self.mean], dtype=torch.uint8,
                                  device=self.device).view(1, -1, 1, 1)
        self._images = data.images.to(self.device)
        self._labels = data.labels.to(self.device)

    def _indices(self) -> torch.Tensor:
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(n, generator=g)
            if self.world_size > 1:
                total = math.ceil(n / self.world_size) * self.world_size
                idx = torch.cat([idx, idx[: total - n]]) if total > n else idx
                idx = idx[self.rank::self.world_size]
            return idx
        return torch.arange(self.rank, n, self.world_size)

    def __len__(self) -> int:
        m = self._indices().numel() if self.world_size > 1 else len(self.data)
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 4099 + self.rank + 1)
        stop = (idx.numel() // self.batch_size) * self.batch_size if self.drop_last else idx.numel()
        for i in range(0, stop, self.batch_size):
            b = idx[i:i + self.batch_size]
            with _single_thread(self.device.type == "cpu"):
                batch = self._batch(b, g)
            yield batch

    def _batch(self, b: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        bd = b.to(self.device, non_blocking=True)
        x = self._images.index_select(0, bd)
        if self.augment:
            x = self._augment(x, g)
        x = x.float().mul_(self._scale).add_(self._shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self._labels.index_select(0, bd)

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Zero-pad by ``pad``, crop a random window of the original size, flip half: one gather per batch."""
        n, c, h, w = x.shape
        p = self.pad
        oy = torch.randint(0, 2 * p + 1, (n,), generator=g)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=g)
        flip = torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        rows = oy[:, None] + torch.arange(h)  # (n, h) rows of the padded image
        cols = ox[:, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)  # flipping = reading the columns backwards
        rows, cols = rows.to(self.device), cols.to(self.device)
        xp = torch.nn.functional.pad(x, (p, p, p, p)) if p > 0 else x
        ni = torch.arange(n, device=self.device)[:, None, None, None]
        ci = torch.arange(c, device=self.device)[None, :, None, None]
        out = xp[ni, ci, rows[:, None, :, None], cols[:, None, None, :]]
        if self.cutout:
            s = self.cutout
            cy = torch.randint(0, h, (n,), generator=g)[:, None]
            cx = torch.randint(0, w, (n,), generator=g)[:, None]
            r, q = torch.arange(h)[None], torch.arange(w)[None]
            in_r = (r >= cy - s // 2) & (r < cy - s // 2 + s)  # (n, h)
            in_c = (q >= cx - s // 2) & (q < cx - s // 2 + s)  # (n, w)
            box = (in_r[:, :, None] & in_c[:, None, :])[:, None].to(self.device)
            out = torch.where(box, self._fill, out)
        return out

    def __repr__(self) -> str:
        return (f"BatchLoader({self.data!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"augment={self.augment}, cutout={self.cutout}, device={self.device}, rank={self.rank}/{self.world_size})")
