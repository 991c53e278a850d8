"""The tables that teach the channel analysis an op: coupling rules (which channels move together) and shrink rules
(how a module is rebuilt with fewer channels), in the spirit of Torch-Pruning's pruner table.

- ``register_coupling(ModuleType, rule)``: ``rule(ctx)`` runs for every call of a module of that type (or of a
  subclass without a rule of its own); the type also becomes a leaf of the tracer, so its insides are not traced.
- ``register_function_coupling(fn_or_method_name, rule)``: for ``torch`` / ``operator`` functions (``torch.cat``)
  and, given a string, tensor methods (``"view"``); a type (``tuple``) also covers its subclasses.
- ``register_shrink(ModuleType, fn)``: ``fn(module, keep_in, keep_out, path) -> new module | None`` builds the
  smaller module (``None``: the module was adjusted in place or needs no change); a module type needs a coupling
  and a shrink rule to be prunable.

A rule's context is :class:`lightnn.graph.context.CouplingContext`. Registering a key twice is refused unless
``replace=True``; every rule carries a name (the function's, or ``name=`` for a lambda) for listings and errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch.nn as nn

from ..errors import LightnnError

__all__ = [
    "Rule", "register_coupling", "register_function_coupling", "register_shrink", "unregister_coupling",
    "module_rule", "function_rule", "shrink_rule", "coupling_rules",
]

CouplingFn = Callable[[Any], None]  # (CouplingContext) -> None
ShrinkFn = Callable[[nn.Module, "list[int] | None", "list[int] | None", str], "nn.Module | None"]


@dataclass(frozen=True)
class Rule:
    """One registered rule: ``key`` (module type, function or method name), the function and its name."""

    key: Any
    fn: Callable
    name: str
    kind: str  # "module", "function", "method" or "shrink"


_MODULES: dict[type, Rule] = {}
_FUNCTIONS: dict[Any, Rule] = {}
_METHODS: dict[str, Rule] = {}
_SHRINKS: dict[type, Rule] = {}


def _key_name(key: Any) -> str:
    if isinstance(key, str):
        return f"Tensor.{key}"
    return getattr(key, "__qualname__", None) or getattr(key, "__name__", None) or repr(key)


def _rule(key: Any, fn: Callable, name: str | None, kind: str) -> Rule:
    if not callable(fn):
        raise LightnnError(f"{kind} rule for {_key_name(key)} must be callable, got {type(fn).__name__}")
    name = name or getattr(fn, "__name__", "")
    if not name or name == "<lambda>":
        raise LightnnError(f"{kind} rule for {_key_name(key)} needs a name: pass name= (got {name or 'none'})")
    return Rule(key, fn, name, kind)


def _check_free(table: dict, key: Any, kind: str, replace: bool) -> None:
    old = table.get(key)
    if old is not None and not replace:
        raise LightnnError(f"a {kind} rule for {_key_name(key)} is already registered ({old.name!r}); "
                           "pass replace=True to replace it")


def _add(table: dict, key: Any, fn: Callable, name: str | None, kind: str, replace: bool) -> None:
    rule = _rule(key, fn, name, kind)
    _check_free(table, key, kind, replace)
    table[key] = rule


def _module_type(module_type: Any, what: str) -> type:
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)) or module_type is nn.Module:
        raise LightnnError(f"{what} needs an nn.Module subclass, got {module_type!r}")
    return module_type


def register_coupling(module_type: type, rule: CouplingFn | None = None, *, shrink: ShrinkFn | None = None,
                      name: str | None = None, replace: bool = False) -> Any:
    """Register ``rule(ctx)`` for calls of ``module_type`` (and ``shrink`` with it); usable as a decorator."""
    module_type = _module_type(module_type, "register_coupling")
    if rule is None:
        def decorate(fn: CouplingFn) -> CouplingFn:
            return register_coupling(module_type, fn, shrink=shrink, name=name, replace=replace)

        return decorate
    coupling = _rule(module_type, rule, name, "module")
    shrinker = _rule(module_type, shrink, None, "shrink") if shrink is not None else None
    _check_free(_MODULES, module_type, "module", replace)
    if shrinker is not None:  # both checked before either is stored: a refused call changes nothing
        _check_free(_SHRINKS, module_type, "shrink", replace)
        _SHRINKS[module_type] = shrinker
    _MODULES[module_type] = coupling
    return rule


def register_function_coupling(target: Callable | str, rule: CouplingFn | None = None, *, name: str | None = None,
                               replace: bool = False) -> Any:
    """Register ``rule(ctx)`` for ``call_function`` nodes of ``target`` or, for a string, the tensor method."""
    if rule is None:
        def decorate(fn: CouplingFn) -> CouplingFn:
            return register_function_coupling(target, fn, name=name, replace=replace)

        return decorate
    if isinstance(target, str):
        if not target.isidentifier():
            raise LightnnError(f"register_function_coupling: {target!r} is not a tensor method name")
        _add(_METHODS, target, rule, name, "method", replace)
    elif callable(target):
        _add(_FUNCTIONS, target, rule, name, "function", replace)
    else:
        raise LightnnError(f"register_function_coupling needs a function or a method name, got {target!r}")
    return rule


def register_shrink(module_type: type, fn: ShrinkFn, *, name: str | None = None, replace: bool = False) -> ShrinkFn:
    """Register ``fn(module, keep_in, keep_out, path)``, which rebuilds a ``module_type`` with the kept channels."""
    _add(_SHRINKS, _module_type(module_type, "register_shrink"), fn, name, "shrink", replace)
    return fn


def unregister_coupling(key: type | Callable | str) -> None:
    """Forget every rule registered for ``key`` (its coupling and, for a module type, its shrink rule)."""
    found = False
    for table in (_MODULES, _FUNCTIONS, _METHODS, _SHRINKS):
        if isinstance(key, str) and table is not _METHODS:
            continue
        found = table.pop(key, None) is not None or found
    if not found:
        raise LightnnError(f"no coupling rule is registered for {_key_name(key)}")


def _by_mro(table: dict[type, Rule], cls: type) -> Rule | None:
    for c in cls.__mro__:
        rule = table.get(c)
        if rule is not None:
            return rule
    return None


def module_rule(cls: type) -> Rule | None:
    """The coupling rule of module class ``cls`` (its own or its nearest registered base class's)."""
    return _by_mro(_MODULES, cls)


def shrink_rule(cls: type) -> Rule | None:
    return _by_mro(_SHRINKS, cls)


def function_rule(op: str, target: Any) -> Rule | None:
    """The rule of an fx ``call_function`` / ``call_method`` node target."""
    if op == "call_method":
        return _METHODS.get(target)
    if isinstance(target, type):
        return _by_mro(_FUNCTIONS, target)
    try:
        return _FUNCTIONS.get(target)
    except TypeError:  # an unhashable callable cannot have been registered
        return None


def coupling_rules() -> Iterator[Rule]:
    """Every registered rule: module couplings, function couplings, method couplings, then shrink rules."""
    for table in (_MODULES, _FUNCTIONS, _METHODS, _SHRINKS):
        yield from table.values()
