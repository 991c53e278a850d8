"""The ``lightnn`` command: one small module per subcommand, each with ``add_parser(sub)`` and ``run(args)``.

Every subcommand's ``--help`` ends with runnable examples. ``--config file.yaml`` (where a subcommand takes one)
supplies defaults that explicit flags override. User errors (:class:`lightnn.errors.LightnnError`) and refused file
operations (``OSError``: disk full, read-only folder, permission denied; the path and the reason) print one line
and exit 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LightnnError
from ._common import explicit_flags

# subcommand -> module (in lightnn.cli); order is the order `lightnn --help` lists them
SUBCOMMANDS = {
    "list": "list_cmd",
    "profile": "profile_cmd",
    "train": "train_cmd",
    "eval": "eval_cmd",
    "compress": "compress_cmd",
    "quantize": "quantize_cmd",
    "export": "export_cmd",
    "bench": "bench_cmd",
    "latency": "latency_cmd",
    "search": "search_cmd",
    "run": "run_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightnn",
        description="Design, measure, train, compress and deploy efficient CNNs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lightnn list 'mobilenet*'\n  lightnn profile mobilenet_v2 --input-size 224\n"
               "  lightnn run            # the end-to-end job on the shipped CIFAR-10 sample",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"lightnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd, modname in SUBCOMMANDS.items():
        mod = importlib.import_module(f"{__package__}.{modname}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    explicit_flags(args)  # subcommands that track typed flags get their untyped defaults back before running
    try:
        rc = args._run(args)
    except LightnnError as e:
        print(f"lightnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a write the system refused (disk full, read-only, permission) or a file gone missing
        where = f"{e.filename!r}: " if e.filename else ""
        print(f"lightnn {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightnn {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
