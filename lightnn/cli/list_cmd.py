"""`lightnn list`: the registered models."""

from __future__ import annotations

import json

from ._common import add_command


def add_parser(sub):
    p = add_command(sub, "list", "list registered models (wildcards allowed)",
                    ["lightnn list", "lightnn list 'mobilenet*'", "lightnn list '*cifar' --json"])
    p.add_argument("pattern", nargs="*", default=["*"], help="shell-style wildcard(s) over model names")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def run(args) -> int:
    from ..models import list_models, model_info

    names = list_models(args.pattern)
    rows = [model_info(n) for n in names]
    if args.json:  # an empty list when nothing matches, with the same exit status as the table
        print(json.dumps([{"name": r.name, "family": r.family, "input_size": list(r.input_size), "paper": r.paper}
                          for r in rows], indent=1))
        return 0 if rows else 1
    if not rows:
        print("no model matches " + " ".join(args.pattern))
        return 1
    w = max(len(r.name) for r in rows)
    print(f"{'name':<{w}}  {'family':<14}  input")
    for r in rows:
        print(f"{r.name:<{w}}  {r.family:<14}  {'x'.join(map(str, r.input_size))}")
    print(f"{len(rows)} models")
    return 0
