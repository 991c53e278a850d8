"""Helpers shared by subcommands: help formatting, YAML configs under flags, typed and bounded numbers (the same
checks for a flag and for a config file's value), model-name wildcards."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..errors import LightnnError
from ..utils.checks import Number

__all__ = ["add_command", "load_yaml", "Number", "check_value", "merge_config", "expand_models", "track_explicit",
           "explicit_flags", "refuse_inapplicable"]


def add_command(sub, name: str, help: str, examples: list[str], description: str | None = None) -> argparse.ArgumentParser:
    """Add a subparser whose --help ends with runnable examples."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=help, description=description or help, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise LightnnError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise LightnnError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise LightnnError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


def check_value(key: str, value: Any, check: Callable[[Any], Any], source: str) -> Any:
    """``check(value)`` (a :class:`Number` or another argparse type), with a failure reported as a
    :class:`LightnnError` naming the key and where it came from (``source``: the config file)."""
    try:
        return check(value)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
        raise LightnnError(f"{source}: {key!r} {e}" if isinstance(e, argparse.ArgumentTypeError)
                           else f"{source}: {key!r} has a bad value {value!r}: {e}") from None


def track_explicit(p: argparse.ArgumentParser) -> None:
    """Make every option of ``p`` parse to None unless typed; the real defaults go to ``args._defaults``, and
    :func:`explicit_flags` puts them back after noting what was typed (so a typed value equal to the default still
    counts as typed). Options sharing a destination (``--amp`` / ``--no-amp``) keep the first one's default, as
    argparse does."""
    defaults: dict[str, Any] = {}
    for a in p._actions:
        if a.option_strings and a.dest != "help":
            defaults.setdefault(a.dest, a.default)
            a.default = None
    p.set_defaults(_defaults=defaults)


def explicit_flags(args: argparse.Namespace) -> set[str]:
    """The options typed on the command line (``args._explicit``); untyped ones get their parser default back."""
    if not hasattr(args, "_explicit"):
        defaults = getattr(args, "_defaults", {})
        args._explicit = {d for d in defaults if getattr(args, d, None) is not None}
        for d in set(defaults) - args._explicit:
            setattr(args, d, defaults[d])
    return args._explicit


def refuse_inapplicable(args: argparse.Namespace, rules: list[tuple[str, bool, str]]) -> None:
    """Refuse, by name, a typed flag that this invocation would not read: ``rules`` are ``(dest, not_read, why)``
    (e.g. ``("qat_lr", not args.qat_epochs, "needs --qat-epochs")``). Untyped flags are never refused. The error
    is the flag and why; :func:`lightnn.cli.main` prints it after ``lightnn COMMAND: error:``."""
    typed = explicit_flags(args)
    for dest, not_read, why in rules:
        if dest in typed and not_read:
            raise LightnnError(f"--{dest.replace('_', '-')} {why}")


def merge_config(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """Explicit flag > config file > default: a typed flag always wins (even when it equals the default), a key of
    the config file fills what was not typed, the parser default the rest. ``args`` must come from a parser set
    up with :func:`track_explicit`."""
    typed = explicit_flags(args)
    out = dict(config)
    for k, v in vars(args).items():
        if k.startswith("_"):
            continue
        if k in typed or k not in out:
            out[k] = v
    return out


def expand_models(patterns: list[str]) -> list[str]:
    """Expand registry wildcards; a pattern that matches nothing is an error naming it."""
    from ..models import list_models, model_info

    names: list[str] = []
    for p in patterns:
        if any(ch in p for ch in "*?["):
            found = list_models(p)
            if not found:
                raise LightnnError(f"no model matches {p!r} (see `lightnn list`)")
            names.extend(found)
        else:
            model_info(p)  # raises UnknownModelError with a hint
            names.append(p)
    return list(dict.fromkeys(names))
