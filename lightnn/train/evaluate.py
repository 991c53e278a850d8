"""One top-1 evaluation for every model lightnn handles: a PyTorch module, an ONNX file or an ONNX Runtime session
(:class:`lightnn.runtime.OrtSession`), on an :class:`~lightnn.data.ImageData` or any iterable of ``(x, y)`` batches
(tensors or numpy arrays). The pipeline's candidates, the pruning stages, Deep Compression and the int8 report all
score through :func:`evaluate`, so their accuracies are counted the same way."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.datasets import ImageData
from ..data.loader import BatchLoader
from ..errors import DataError, LightnnError
from ..models import model_name, model_normalization
from . import distributed as dist_utils
from .losses import split_outputs

__all__ = ["evaluate", "array_batches", "check_num_classes", "TTA_MODES"]

TTA_MODES = (None, "flip")


def check_num_classes(model: nn.Module, num_classes: int, where: str) -> None:
    """Raise :class:`DataError` when the model's classifier does not match the data's class count."""
    m = getattr(model, "module", model)
    n = getattr(m, "num_classes", None)
    if isinstance(n, int) and n > 0 and n != num_classes:
        name = model_name(m)
        raise DataError(f"model {name!r} has {n} output classes but data {where!r} has {num_classes} classes; "
                        f"build it with num_classes={num_classes}")


def data_name(data: Any) -> str:
    d = getattr(data, "data", data)
    return getattr(d, "source", type(d).__name__)


def num_classes(data: Any) -> int | None:
    d = getattr(data, "data", data)
    n = getattr(d, "num_classes", None)
    return n if isinstance(n, int) else None


def array_batches(images: Any, labels: Any, batch_size: int = 64) -> Iterator[tuple[Any, Any]]:
    """``(images[i:i+b], labels[i:i+b])`` over arrays already normalized (an int8 report's ``ImageSet``)."""
    if batch_size < 1:
        raise LightnnError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size], labels[i:i + batch_size]


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _onnx_normalization(sess: Any) -> dict | None:
    """The ``lightnn.mean`` / ``lightnn.std`` metadata lightnn's exporter writes into an ONNX file."""
    try:
        meta = sess.session.get_modelmeta().custom_metadata_map
    except AttributeError:
        return None
    if "lightnn.mean" not in meta or "lightnn.std" not in meta:
        return None
    return {"mean": [float(v) for v in meta["lightnn.mean"].split(",")],
            "std": [float(v) for v in meta["lightnn.std"].split(",")]}


def _runner(model: Any, device: Any, threads: int) -> tuple[Callable, torch.device, nn.Module | None, dict | None]:
    """(forward: batch -> float logits tensor, device, the module or None, its normalization or None)."""
    if isinstance(model, nn.Module):
        m = getattr(model, "module", model)
        p = next(m.parameters(), None)
        dev = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
        return (lambda x: split_outputs(m(x))[0]), dev, m, model_normalization(m)
    from ..runtime import OrtSession

    if isinstance(model, (str, os.PathLike)):
        if Path(model).suffix != ".onnx":
            raise LightnnError(f"evaluate takes a module, an ONNX file or an OrtSession; {str(model)!r} is not .onnx "
                               f"(load a checkpoint with lightnn.checkpoint.load_any first)")
        model = OrtSession(model, threads=threads)
    if not isinstance(model, OrtSession):
        raise LightnnError(f"evaluate takes a module, an ONNX file or an OrtSession, got {type(model).__name__}")
    sess = model
    return (lambda x: torch.from_numpy(np.asarray(sess.run(x)))), torch.device("cpu"), None, _onnx_normalization(sess)


@torch.no_grad()
def evaluate(model: nn.Module | str | os.PathLike | Any, data: Any, *, batch_size: int = 256,
             device: str | torch.device | None = None, amp: bool = False, mean=None, std=None, progress: bool = False,
             tta: str | None = None, threads: int = 1) -> dict[str, Any]:
    """Accuracy and loss of ``model`` on ``data``.

    ``model``: an ``nn.Module`` (evaluated in eval mode on ``device``, default its parameters' device, with bf16
    autocast when ``amp``; its train/eval mode is restored), an ONNX file path or an
    :class:`~lightnn.runtime.OrtSession` (ONNX Runtime on the CPU with ``threads`` intra-op threads).
    ``data``: an :class:`ImageData` or an iterable of ``(x, y)`` batches (torch tensors or numpy arrays;
    :func:`array_batches` slices arrays).

    ``tta="flip"`` averages the class probabilities of each image and its horizontal mirror (test-time
    augmentation; twice the compute), the evaluation of the fast-CIFAR-training recipes; the loss is then the
    negative log of the averaged probability.

    Normalization (for :class:`ImageData`): ``mean``/``std`` if given, else the model's (the ``normalize`` of a
    module's record, set by :func:`fit` and stored in checkpoints' ``meta["normalize"]``; the ``lightnn.mean``/``std``
    metadata of an ONNX file lightnn exported), else the data's own channel statistics.
    Under torch.distributed each rank evaluates its shard and the counts are summed over ranks.

    Returns a dict: ``top1`` (the first highest logit, as ``argmax`` picks it), ``top5`` (percent, 0-100),
    ``loss`` (mean cross-entropy), ``n`` (images), ``per_class`` (top-1 % per class), ``confusion`` (rows true
    class, columns prediction), ``classes``.
    """
    if tta not in TTA_MODES:
        raise LightnnError(f"tta must be one of {[t for t in TTA_MODES if t]} or None, got {tta!r}")
    forward, dev, m, norm = _runner(model, device, threads)
    amp = bool(amp) and m is not None
    if isinstance(data, ImageData):
        if mean is None or std is None:
            mean, std = (norm["mean"], norm["std"]) if norm else data.channel_stats()
        data = BatchLoader(data, batch_size, shuffle=False, augment=False, mean=mean, std=std, device=dev)
    k = num_classes(data)
    if k is not None and m is not None:
        check_num_classes(m, k, data_name(data))
    was_training = m.training if m is not None else False
    if m is not None:
        m.eval()
        m.to(dev)
    stats = torch.zeros(4, dtype=torch.float64, device=dev)  # n, correct1, correct5, loss sum
    conf = None
    try:
        it = data
        if progress:
            from tqdm import tqdm
            it = tqdm(data, desc="eval", leave=False, disable=dist_utils.rank() != 0)
        for x, y in it:
            x, y = torch.as_tensor(x).to(dev, non_blocking=True), torch.as_tensor(y).long().to(dev, non_blocking=True)
            with _autocast(dev, amp):
                logits = forward(x)
                flipped = forward(x.flip(3)) if tta == "flip" else None
            logits = logits.float().to(dev)
            if flipped is not None:  # log of the averaged probabilities: top-k and the loss read it like logits
                logits = torch.logsumexp(torch.stack([logits.log_softmax(1), flipped.float().to(dev).log_softmax(1)]),
                                         0) - math.log(2.0)
            if k is None:
                k = logits.shape[1]
            if logits.shape[1] != k:
                raise DataError(f"model outputs {logits.shape[1]} classes but data {data_name(data)!r} has {k}")
            if conf is None:
                conf = torch.zeros(k * k, dtype=torch.float64, device=dev)
            pred = logits.argmax(1)  # the first of tied logits, like numpy's argmax (int8 logits tie often)
            hit1 = pred == y
            hit5 = (logits.topk(min(5, k), dim=1).indices == y[:, None]).any(1) | hit1
            stats[0] += y.numel()
            stats[1] += hit1.sum()
            stats[2] += hit5.sum()
            stats[3] += F.cross_entropy(logits, y, reduction="sum")
            conf += torch.bincount(y * k + pred, minlength=k * k).double()
    finally:
        if m is not None:
            m.train(was_training)
    if conf is None:
        raise DataError(f"data {data_name(data)!r} yielded no batches to evaluate")
    dist_utils.all_reduce_sum(stats)
    dist_utils.all_reduce_sum(conf)
    n, c1, c5, ls = stats.tolist()
    cm = conf.view(k, k).long().cpu()
    row = cm.sum(1).clamp_min(1)
    classes = getattr(getattr(data, "data", data), "classes", None) or [str(i) for i in range(k)]
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": ls / n, "n": int(n),
            "per_class": (100.0 * cm.diag() / row).tolist(), "confusion": cm.tolist(), "classes": list(classes)}
