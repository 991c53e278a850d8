"""CIFAR python-pickle batches read without running any code from the file.

The CIFAR-10/100 "python version" files are pickles of dicts holding bytes, str, int, lists and one numpy uint8
array. ``pickle.loads`` calls whatever global a file names (``os.system`` included), so a dataset could run code.
:func:`load_plain_pickle` resolves only the globals numpy's array pickling uses, under their numpy 1.x
(``numpy.core``) and 2.x (``numpy._core``) module paths, plus ``_codecs.encode`` (how Python 3 writes bytes at
protocol 2), and each resolves to a function here that rebuilds the array from its raw bytes with a plain numeric
dtype: numpy's own reconstruction code never sees the file's data. Any other global is refused, with the file
and the global named, before it could be called.
"""

from __future__ import annotations

import io
import math
import pickle
import re

import numpy as np

from ..errors import DataError

__all__ = ["load_plain_pickle"]

# bool, signed/unsigned integers and floats: what image, label and coarse-label arrays hold
_NUMERIC_DTYPE = re.compile(r"b1|[iu][1248]|f[248]")
_PLAIN = (bytes, bytearray, str, int, float, bool, type(None))


class _Refused(Exception):
    """Something a CIFAR batch never holds; the message says what."""


class _NDArrayType:
    """Stands for ``numpy.ndarray`` where numpy's pickles name it (the first argument of ``_reconstruct``)."""


_NDARRAY = _NDArrayType()


class _DType:
    """``numpy.dtype(spec, align, copy)`` as pickled: the type from the call, the byte order from ``__setstate__``."""

    def __init__(self, spec: object, *_flags: object):
        s = spec.decode("ascii", "replace") if isinstance(spec, bytes) else spec
        if not (isinstance(s, str) and _NUMERIC_DTYPE.fullmatch(s)):
            raise _Refused(f"numpy dtype {s!r} (only bool, integer and float arrays are read)")
        self.spec, self.order = s, "|"

    def __setstate__(self, state: object) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags): a plain dtype has no sub-parts
        if not (isinstance(state, tuple) and len(state) >= 5 and all(x is None for x in state[2:5])):
            raise _Refused(f"numpy dtype state {str(state)[:80]} (structured dtypes are not read)")
        order = state[1].decode("ascii", "replace") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"numpy byte order {order!r}")
        self.order = order

    def numpy(self) -> np.dtype:
        return np.dtype(("=" if self.order in ("|", "=") else self.order) + self.spec)


def _array_from_raw(raw: object, dtype: object, shape: object, order: str = "C") -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise _Refused("an array whose dtype is not a plain numpy dtype")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise _Refused(f"an array shape {str(shape)[:80]}")
    if isinstance(raw, pickle.PickleBuffer):
        raw = bytes(raw)
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused(f"array data of type {type(raw).__name__} (object arrays are not read)")
    dt = dtype.numpy()
    if len(raw) != math.prod(shape) * dt.itemsize:
        raise _Refused(f"array data of {len(raw)} bytes for shape {shape} of {dt}")
    return np.frombuffer(raw, dt).reshape(shape, order="F" if order in ("F", b"F") else "C").copy(order="K")


class _Array:
    """An array being rebuilt by ``_reconstruct(ndarray, shape, typecode)`` and then ``__setstate__``."""

    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Refused(f"numpy array state {str(state)[:80]}")
        _version, shape, dtype, fortran, raw = state
        self.value = _array_from_raw(raw, dtype, shape, "F" if fortran else "C")


def _reconstruct(cls: object, _shape: object = None, _typecode: object = None) -> _Array:
    if cls is not _NDARRAY:
        raise _Refused("numpy _reconstruct of a class other than ndarray")
    return _Array()


def _frombuffer(buf: object, dtype: object, shape: object, order: object = "C") -> np.ndarray:
    return _array_from_raw(buf, dtype, shape, "F" if order in ("F", b"F") else "C")


def _scalar(dtype: object, raw: object = None) -> np.generic:
    return _array_from_raw(raw, dtype, ())[()]


def _codecs_encode(text: object, encoding: object = "utf-8") -> bytes:
    if not (isinstance(text, str) and encoding in ("latin1", "latin-1")):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_GLOBALS = {("_codecs", "encode"): _codecs_encode, ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _DType}
for _mod in ("numpy.core", "numpy._core"):
    _GLOBALS.update({(f"{_mod}.multiarray", "_reconstruct"): _reconstruct, (f"{_mod}.multiarray", "scalar"): _scalar,
                     (f"{_mod}.numeric", "_frombuffer"): _frombuffer})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"a reference to the global {module}.{name}") from None


def _plain(obj: object, seen: dict[int, object]) -> object:
    """``obj`` with rebuilt arrays in place of their builders, checking that it holds nothing but plain data."""
    if isinstance(obj, _PLAIN):
        return obj
    key = id(obj)
    if key in seen:
        return seen[key]
    if isinstance(obj, _Array):
        if obj.value is None:
            raise _Refused("a numpy array without data")
        out: object = obj.value
    elif isinstance(obj, np.ndarray) and _NUMERIC_DTYPE.fullmatch(obj.dtype.str[1:]):
        out = obj
    elif isinstance(obj, np.generic) and _NUMERIC_DTYPE.fullmatch(obj.dtype.str[1:]):
        out = obj
    elif isinstance(obj, list):
        seen[key] = obj  # in place, so a list holding itself terminates
        obj[:] = [_plain(v, seen) for v in obj]
        return obj
    elif isinstance(obj, dict):
        seen[key] = obj
        for k in list(obj):
            if not isinstance(k, _PLAIN + (np.generic,)):
                raise _Refused(f"a dict key of type {type(k).__name__}")
            obj[k] = _plain(obj[k], seen)
        return obj
    elif isinstance(obj, tuple):
        out = tuple(_plain(v, seen) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        if not all(isinstance(v, _PLAIN + (np.generic,)) for v in obj):
            raise _Refused("a set holding other than plain values")
        out = obj
    else:
        raise _Refused(f"an object of type {type(obj).__name__}")
    seen[key] = out
    return out


def load_plain_pickle(raw: bytes, where: str) -> object:
    """Unpickle ``raw`` (a CIFAR batch; Python 2 pickles keep byte strings as bytes) admitting only dicts, lists,
    tuples, bytes, str, numbers and numeric numpy arrays; anything else is a :class:`DataError` naming ``where``
    and what was refused, raised before any of it could run."""
    try:
        obj = _Unpickler(io.BytesIO(raw), encoding="bytes").load()
        return _plain(obj, {})
    except _Refused as e:
        raise DataError(f"{where} is not a plain CIFAR pickle: it holds {e}, which a CIFAR batch never does "
                        "(refused, nothing in it was run)") from None
    except RecursionError:
        raise DataError(f"{where} is not a plain CIFAR pickle: it is nested too deeply") from None
    except Exception as e:  # truncated or garbled pickles raise many types (UnpicklingError, EOFError, ValueError...)
        raise DataError(f"{where} is not a readable CIFAR pickle: {type(e).__name__}: {e}") from None
