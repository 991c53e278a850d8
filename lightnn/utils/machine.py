"""This machine's CPU as lightnn records and checks it: the model name and the instruction-set flags that choose the
conv / GEMM kernels (read from ``/proc/cpuinfo``; elsewhere the platform's strings and no flags)."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["ISA_OF_INTEREST", "cpu_flags", "isa_flags", "cpu_model"]

# the CPU flags that decide which conv / GEMM kernels run (x86 and Arm names as /proc/cpuinfo spells them)
ISA_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                   "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd",
                   "asimddp", "asimdhp", "sve", "sve2", "bf16", "i8mm")


def _cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_flags() -> frozenset[str] | None:
    """Every flag of the first CPU in ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on Arm), or None when it
    cannot be read."""
    text = _cpuinfo()
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def isa_flags() -> list[str] | None:
    """The flags of :data:`ISA_OF_INTEREST` this CPU has, in that order, or None when they cannot be read."""
    have = cpu_flags()
    return None if have is None else [f for f in ISA_OF_INTEREST if f in have]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    for line in (_cpuinfo() or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
