"""Datasets, caches and batch augmentation (``lightnn.data``).

- :func:`load_dataset` decodes a small dataset (ImageFolder folder/zip/tar, CIFAR-10/100 pickles, the shipped
  ``"sample"``) once into a fingerprinted uint8 cache and returns one split as :class:`ImageData`.
- :class:`BatchLoader` iterates it in normalized float batches with pad+crop+flip done on whole batches (on the GPU
  when there is one) and DistributedSampler-style sharding.
- :func:`stream_image_folder` streams large ImageFolder trees (ImageNet layout) through a ``DataLoader`` with
  workers and the random-resized-crop / centre-crop pipeline (PIL + torch).
"""

from .datasets import IMAGE_EXTENSIONS, SAMPLE_PATH, ImageData, cache_dir, load_dataset, split_indices
from .stream import StreamingImageFolder, StreamLoader, stream_image_folder
from .normalize import Normalization
from .loader import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, BatchLoader, dist_info

__all__ = ["load_dataset", "ImageData", "BatchLoader", "stream_image_folder", "StreamLoader", "StreamingImageFolder", "split_indices", "cache_dir", "dist_info", "SAMPLE_PATH",
           "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD", "Normalization"]
