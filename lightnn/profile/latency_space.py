"""Which networks a latency table is built for: zoo names (``--models PATTERN``) or a space file (``--space FILE``).

A space file (YAML or JSON) lists stage-table networks of :func:`lightnn.models.ir_net.ir_net` and / or a search
space with choices, from which ``samples`` tables are drawn with a fixed ``seed``::

    input_size: [3, 32, 32]         # (C, H, W) every network is built for (default 3 x 32 x 32)
    num_classes: 10
    networks:                       # fixed tables: a name and the ir_net arguments
      - name: tiny
        table: [{expansion: 1, channels: 16, stride: 1}, {expansion: 6, channels: 24, repeats: 2, stride: 2}]
        head_chs: 256
    search:                         # a search space: any row field may be a list of choices
      samples: 8
      seed: 0
      base: {head_chs: 256, stem: [{expansion: 1, channels: 16, op: conv, skip: false}]}
      rows:
        - {expansion: [3, 6], channels: [16, 24], repeats: [1, 2], stride: 2, kernel: [3, 5], se: [0, 0.25]}

Every error names the file and the key.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch.nn as nn

from ..errors import LightnnError

__all__ = ["space_networks", "zoo_networks", "load_space", "draw_tables"]

_TOP = {"input_size", "num_classes", "networks", "search"}
_SEARCH = {"samples", "seed", "base", "rows"}


def zoo_networks(patterns: str | Sequence[str], input_size: int | None = None,
                 num_classes: int = 1000) -> Iterator[tuple[str, nn.Module, tuple[int, int, int]]]:
    """``(name, model, (C, H, W))`` for every registry name matching the comma-separated ``patterns``."""
    from ..models import create_model, list_models, model_info

    pats = [p.strip() for p in (patterns.split(",") if isinstance(patterns, str) else patterns) if p.strip()]
    names = list(dict.fromkeys(n for p in pats for n in list_models(p)))
    if not names:
        raise LightnnError(f"--models: no model matches {','.join(pats)!r} (see `lightnn list`)")
    for name in names:
        c, h, w = model_info(name).input_size
        if input_size is not None:
            h = w = int(input_size)
        yield name, create_model(name, num_classes=num_classes), (c, h, w)


def load_space(path: str | Path) -> dict[str, Any]:
    """The space file's mapping, its keys checked."""
    p = Path(path)
    if not p.is_file():
        raise LightnnError(f"space file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
        raise LightnnError(f"space file {str(p)!r} cannot be parsed: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not ({"networks", "search"} & set(data)):
        raise LightnnError(f"space file {str(p)!r} must be a mapping with 'networks' and / or 'search'")
    bad = sorted(set(data) - _TOP)
    if bad:
        raise LightnnError(f"space file {str(p)!r}: unknown key(s) {bad}; keys: {sorted(_TOP)}")
    if "search" in data:
        s = data["search"]
        if not isinstance(s, dict) or "rows" not in s:
            raise LightnnError(f"space file {str(p)!r}: 'search' must be a mapping with 'rows'")
        bad = sorted(set(s) - _SEARCH)
        if bad:
            raise LightnnError(f"space file {str(p)!r}: unknown key(s) {bad} in 'search'; keys: {sorted(_SEARCH)}")
    return data


def draw_tables(rows: Sequence[dict[str, Any]], samples: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    """``samples`` tables, each row's list-valued fields drawn uniformly (one ``random.Random(seed)``)."""
    rng = random.Random(seed)
    out = []
    for _ in range(samples):
        out.append([{k: (rng.choice(v) if isinstance(v, list) else v) for k, v in row.items()} for row in rows])
    return out


def space_networks(path: str | Path) -> Iterator[tuple[str, nn.Module, tuple[int, int, int]]]:
    """``(name, model, (C, H, W))`` for the networks of a space file (see the module docstring)."""
    from ..models import create_model

    data = load_space(path)
    stem = Path(path).stem
    size = tuple(int(s) for s in data.get("input_size", (3, 32, 32)))
    if len(size) != 3 or min(size) < 1:
        raise LightnnError(f"space file {str(path)!r}: input_size must be [C, H, W], got {data.get('input_size')!r}")
    ncls = int(data.get("num_classes", 10))
    nets: list[tuple[str, dict[str, Any]]] = []
    for i, net in enumerate(data.get("networks") or []):
        if not isinstance(net, dict) or "table" not in net:
            raise LightnnError(f"space file {str(path)!r}: networks[{i}] must be a mapping with 'table'")
        args = {k: v for k, v in net.items() if k != "name"}
        nets.append((f"{stem}:{net.get('name', i)}", args))
    if "search" in data:
        s = data["search"]
        base = dict(s.get("base") or {})
        for j, t in enumerate(draw_tables(s["rows"], int(s.get("samples", 8)), int(s.get("seed", 0)))):
            nets.append((f"{stem}:sample{j}", {**base, "table": t}))
    for name, args in nets:
        try:
            model = create_model("ir_net", num_classes=ncls, in_chans=size[0], **args)
        except LightnnError as e:
            raise LightnnError(f"space file {str(path)!r}: network {name}: {e}") from None
        yield name, model, size  # type: ignore[misc]
