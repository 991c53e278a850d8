"""Bounds on architecture arguments that come from a user (``--arch``, a config file), checked before building.

``igcv3_cifar --arch width_mult=1000`` would allocate gigabytes before failing; :func:`check_model_args` builds the
model on PyTorch's ``meta`` device instead (shapes only: no memory, no initialization work), counting the
parameters as its layers register them, and stops and refuses as soon as they pass :data:`MAX_PARAMS` or what this
machine's memory holds, naming the arguments. A model that cannot be built with the arguments at all (a negative width) gets the same
one-line error instead of a traceback from deep inside its constructor.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import LightnnError
from ._registry import create_model

__all__ = ["MAX_PARAMS", "check_model_args", "memory_bytes"]

MAX_PARAMS = 2_000_000_000  # 8 GB of fp32 weights: beyond anything this toolkit trains, measures or deploys


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _args_text(what: str, arch: dict[str, Any]) -> str:
    return f"{what} " + ", ".join(f"{k}={v!r}" for k, v in arch.items()) if arch else "its default arguments"


def check_model_args(name: str, arch: dict[str, Any] | None = None, *, num_classes: int = 1000,
                     in_chans: int | None = None, what: str = "--arch", bytes_per_param: int = 16,
                     max_params: int = MAX_PARAMS, lower: str | None = None) -> int | None:
    """Build ``name`` with ``arch`` on the meta device and return its parameter count (None when the model cannot
    be built there, so it cannot be checked); raise :class:`LightnnError` naming ``what`` and the arguments when
    it cannot be built with them, has more than ``max_params`` parameters, or would need more than this machine's
    memory at ``bytes_per_param`` (16 to train: weights, gradients, momentum and a checkpoint copy; 4 to run;
    0: no memory bound).
    ``lower`` names what to lower in that message (default: the arguments in ``arch``)."""
    arch = dict(arch or {})
    chans = {} if in_chans is None else {"in_chans": in_chans}
    mem = memory_bytes()
    if bytes_per_param <= 0:  # no memory bound, the parameter limit alone
        mem = None
    limit = max_params if mem is None else min(max_params, mem // bytes_per_param)
    count = [0]

    def tally(module, name, param) -> None:  # stop the build as soon as the limit is passed (width_mult=1000)
        if param is not None:
            count[0] += param.numel()
            if count[0] > limit:
                raise _TooLarge

    hook = torch.nn.modules.module.register_module_parameter_registration_hook(tally)
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, **chans, **arch)
    except _TooLarge:
        _refuse(name, what, arch, count[0], max_params, mem, bytes_per_param, lower, partial=True)
    except LightnnError as e:  # the builder's own check (e.g. a width that must be > 0): say which input it was
        raise LightnnError(f"model {name!r} with {_args_text(what, arch)}: {e}") from None
    except NotImplementedError as e:
        if "meta" in str(e).lower():  # an op with no meta kernel: the size is unknown, building for real decides
            return None
        raise LightnnError(f"model {name!r} cannot be built with {_args_text(what, arch)}: {e}") from None
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError, AssertionError, IndexError, KeyError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise LightnnError(f"model {name!r} cannot be built with {_args_text(what, arch)}: "
                           f"{type(e).__name__}: {first}") from None
    finally:
        hook.remove()
    n = sum(p.numel() for p in model.parameters())
    if n > limit:
        _refuse(name, what, arch, n, max_params, mem, bytes_per_param, lower, partial=False)
    return n


class _TooLarge(Exception):
    """Raised inside a meta-device build once its parameters pass the limit."""


def _refuse(name: str, what: str, arch: dict, n: int, max_params: int, mem: int | None, bytes_per_param: int,
            lower: str | None, partial: bool) -> None:
    need = n * bytes_per_param
    why = ([f"more than the limit of {max_params:.1e}"] if n > max_params else []) \
        + ([f"{need / 1e9:.1f} GB at {bytes_per_param} bytes per parameter, more than this machine's "
            f"{mem / 1e9:.1f} GB of memory"] if mem is not None and need > mem else [])
    raise LightnnError(f"model {name!r} with {_args_text(what, arch)} would have {'over ' if partial else ''}"
                       f"{n:.3g} parameters ({' and '.join(why)}): lower {lower or ', '.join(arch) or 'the model size'}")
