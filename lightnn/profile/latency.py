"""Measured latency: warm-up, a fixed number of threads, many timed runs, median and spread.

A smaller model must also be a faster one on the target runtime, and only measurement says so. Each
backend is a function that runs the model on one input ``runs`` times and returns the wall time of every run;
:func:`measure_latency` fixes the thread count (and restores it), chooses the memory format and turns the samples
into statistics. PyTorch eager is built in; other runtimes plug in with :func:`register_latency_backend`.

Backend interface (for example ONNX Runtime, which :mod:`lightnn.export` registers on import)::

    def my_backend(model: nn.Module, example: torch.Tensor, *, warmup: int, runs: int, threads: int,
                   channels_last: bool) -> list[float]:
        '''Prepare the model for the runtime (export, build a session with `threads` intra-op threads), run
        `warmup` untimed and `runs` timed inferences on `example`, return the `runs` wall times in milliseconds.'''

    register_latency_backend("onnxruntime", my_backend)

``threads`` is already applied to PyTorch (``torch.set_num_threads``) when the backend runs; a backend with its
own thread pool must apply it too. ``channels_last`` is a hint a backend may ignore. A backend that can time with
another clock takes an optional ``clock`` keyword (``"wall"`` or ``"thread"``, see :func:`measure_latency`); it is
passed only when the caller asks for a clock other than ``"wall"``.

The timing core is :func:`time_callable` (one callable) and :func:`interleaved` (several callables in alternating
rounds, so load on a shared machine hits each alike); every latency in lightnn, eager or ONNX Runtime, is a
:class:`LatencyResult` built from their samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Callable, Protocol

import torch
import torch.nn as nn

from ..errors import LightnnError

__all__ = ["measure_latency", "LatencyResult", "register_latency_backend", "latency_backends", "percentile",
           "LatencyBackend", "time_callable", "interleaved"]


class LatencyBackend(Protocol):
    def __call__(self, model: nn.Module, example: torch.Tensor, *, warmup: int, runs: int, threads: int,
                 channels_last: bool) -> list[float]: ...


_BACKENDS: dict[str, LatencyBackend] = {}


def register_latency_backend(name: str, fn: LatencyBackend) -> None:
    """Register (or replace) a latency backend under ``name`` (see the module docstring for the interface)."""
    if not callable(fn):
        raise LightnnError(f"register_latency_backend({name!r}): fn must be callable")
    _BACKENDS[name] = fn


def latency_backends() -> list[str]:
    return sorted(_BACKENDS)


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in [0, 100]."""
    if not samples:
        raise ValueError("percentile of no samples")
    s = sorted(samples)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class LatencyResult:
    """Latency of one model at one batch size on one backend; times in milliseconds per batch."""

    backend: str
    input_size: tuple[int, ...]  # (N, C, H, W) actually run
    threads: int
    channels_last: bool
    warmup: int
    samples_ms: list[float] = field(repr=False)
    clock: str = "wall"

    @property
    def batch(self) -> int:
        return self.input_size[0]

    @property
    def median_ms(self) -> float:
        return median(self.samples_ms)

    @property
    def p10_ms(self) -> float:
        return percentile(self.samples_ms, 10)

    @property
    def p25_ms(self) -> float:
        return percentile(self.samples_ms, 25)

    @property
    def p75_ms(self) -> float:
        return percentile(self.samples_ms, 75)

    @property
    def p90_ms(self) -> float:
        return percentile(self.samples_ms, 90)

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "input_size": list(self.input_size), "batch": self.batch,
                "threads": self.threads, "channels_last": self.channels_last, "warmup": self.warmup, "clock": self.clock,
                "runs": len(self.samples_ms), "median_ms": self.median_ms, "iqr_ms": self.iqr_ms,
                "p10_ms": self.p10_ms, "p90_ms": self.p90_ms, "images_per_s": self.images_per_s,
                "samples_ms": list(self.samples_ms)}

    def __str__(self) -> str:
        return (f"{self.backend} batch {self.batch}: median {self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f}, "
                f"p10-p90 {self.p10_ms:.3f}-{self.p90_ms:.3f}, {len(self.samples_ms)} runs, {self.threads} threads"
                f"{', channels-last' if self.channels_last else ''})")


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}


def _eager(model: nn.Module, example: torch.Tensor, *, warmup: int, runs: int, threads: int,
           channels_last: bool, clock: str = "wall") -> list[float]:
    """PyTorch eager under ``torch.inference_mode``; each sample times one forward call."""
    if example.dim() == 4:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        example = example.contiguous(memory_format=fmt)
    with torch.inference_mode():
        return time_callable(lambda: model(example), warmup, runs, clock)


register_latency_backend("eager", _eager)


def _resolve_size(input_size: Any, batch: int | None) -> tuple[int, ...]:
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 4:
        if batch is not None and batch != size[0]:
            raise LightnnError(f"measure_latency: input_size {size} has batch {size[0]} but batch={batch}")
        return size
    if len(size) != 3 or any(s < 1 for s in size):
        raise LightnnError(f"measure_latency: input_size must be (C, H, W), (N, C, H, W) or an int, got {input_size!r}")
    b = 1 if batch is None else int(batch)
    if b < 1:
        raise LightnnError(f"measure_latency: batch must be >= 1, got {batch}")
    return (b, *size)


def _is_nhwc(model: nn.Module) -> bool:
    return any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def measure_latency(model: nn.Module, input_size: Any = (3, 224, 224), batch: int | None = None,
                    threads: int | None = None, warmup: int = 5, runs: int = 30, backend: str = "eager",
                    channels_last: bool | None = None, clock: str = "wall") -> LatencyResult:
    """Median and spread of the wall time of one inference batch.

    Args:
        model: any ``nn.Module`` (switched to eval for the measurement, its training flags restored after).
        input_size: ``(C, H, W)`` with ``batch``, or ``(N, C, H, W)``, or an int ``H`` (3 x H x H).
        batch: batch size (default 1).
        threads: intra-op threads, fixed for the measurement and restored after (default: the current setting).
        warmup / runs: untimed and timed runs.
        backend: a name from :func:`latency_backends` ("eager" built in).
        channels_last: NHWC memory format; None picks, for a conv net on the eager backend, the faster of NCHW and
            NHWC from a short trial (on CPU, channels-last often speeds up depthwise and grouped convolutions);
            other backends get False unless asked.
        clock: ``"wall"`` (elapsed time, the latency a user sees) or ``"thread"`` (CPU time of the calling thread,
            ``time.thread_time``; needs ``threads=1``, where eager computes on the calling thread). On a shared
            machine the OS preempts any run longer than a scheduler slice and wall times swing several-fold; the
            thread's CPU time does not, and on an idle machine the two agree.
    """
    if backend not in _BACKENDS:
        raise LightnnError(f"measure_latency: unknown backend {backend!r}; registered: {latency_backends()}")
    if runs < 1 or warmup < 0:
        raise LightnnError(f"measure_latency: runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    size = _resolve_size(input_size, batch)
    if clock not in CLOCKS:
        raise LightnnError(f"measure_latency: clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    base = _BACKENDS[backend]
    if clock == "wall":
        fn = base
    else:
        if threads != 1:
            raise LightnnError(f"measure_latency: clock={clock!r} needs threads=1 (the CPU time of one thread misses "
                               f"work done on others), got threads={threads}")

        def fn(*a: Any, **k: Any) -> list[float]:
            try:
                return base(*a, clock=clock, **k)
            except TypeError as e:
                if "clock" not in str(e):
                    raise
                raise LightnnError(f"latency backend {backend!r} does not support clock={clock!r}") from None
    old_threads = torch.get_num_threads()
    n_threads = old_threads if threads is None else int(threads)
    if n_threads < 1:
        raise LightnnError(f"measure_latency: threads must be >= 1, got {threads}")
    modes = {m: m.training for m in model.modules()}
    was_nhwc = _is_nhwc(model)
    try:
        p = next(model.parameters(), None)
        example = torch.randn(size, device=p.device if p is not None else "cpu",
                              dtype=p.dtype if p is not None and p.dtype.is_floating_point else torch.float32)
        torch.set_num_threads(n_threads)
        model.eval()
        cl = channels_last
        if cl is None:
            cl = False
            if backend == "eager" and _has_conv2d(model) and len(size) == 4:
                trial = max(3, min(10, runs // 3))
                t_nchw = median(fn(model, example, warmup=max(1, warmup // 2), runs=trial, threads=n_threads,
                                   channels_last=False))
                t_nhwc = median(fn(model, example, warmup=max(1, warmup // 2), runs=trial, threads=n_threads,
                                   channels_last=True))
                cl = t_nhwc < 0.95 * t_nchw  # switch only for a clear win
        samples = fn(model, example, warmup=warmup, runs=runs, threads=n_threads, channels_last=cl)
    finally:
        torch.set_num_threads(old_threads)
        for m, training in modes.items():
            m.train(training)
        if _is_nhwc(model) != was_nhwc:  # give the model back in the memory format it came in
            model.to(memory_format=torch.channels_last if was_nhwc else torch.contiguous_format)
    if len(samples) != runs:
        raise LightnnError(f"latency backend {backend!r} returned {len(samples)} samples for runs={runs}")
    return LatencyResult(backend=backend, input_size=size, threads=n_threads, channels_last=bool(cl), warmup=warmup,
                         samples_ms=[float(s) for s in samples], clock=clock)


def time_callable(fn: Callable[[], Any], warmup: int = 3, runs: int = 10, clock: str = "wall") -> list[float]:
    """Times (ms, on ``clock``) of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    clk = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = clk()
        fn()
        out.append((clk() - t0) * 1000.0)
    return out


def interleaved(fns: dict[str, Callable[[], Any]], input_size: tuple[int, ...], threads: int, rounds: int = 5,
                runs: int = 10, warmup: int = 3) -> dict[str, LatencyResult]:
    """Time several callables in alternating rounds (A B C, A B C, ...) so load on a shared machine hits each
    alike; each result, named by its key as the backend, pools the ``rounds * runs`` samples.

    ``input_size`` (N, C, H, W) and ``threads`` describe what every callable runs; setting the threads is the
    caller's job (as for a backend)."""
    if rounds < 1 or runs < 1 or warmup < 0:
        raise LightnnError(f"interleaved: rounds and runs must be >= 1 and warmup >= 0, got rounds={rounds}, "
                           f"runs={runs}, warmup={warmup}")
    for fn in fns.values():
        time_callable(fn, warmup, 0)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k] += time_callable(fn, 0, runs)
    return {k: LatencyResult(backend=k, input_size=tuple(input_size), threads=threads, channels_last=False,
                             warmup=warmup, samples_ms=t) for k, t in samples.items()}
