"""AMC's environment (He et al. 2018, "AMC: AutoML for Model Compression", section 3): an agent walks the prunable
channel groups of any model, one keep ratio per group, under a MACs budget met by construction.

What AMC's public code could not do and this does: the groups are lightnn's dependency groups
(:func:`lightnn.graph.build_dependency_graph`), so residual-coupled layers share one action and depthwise, group,
shuffle and IGC groups are cut in whole sets, on every zoo model, not only MobileNet.

- **MACs model.** Every layer's MACs (lightnn's profiler) scale with the kept fraction of its input and output
  widths, which are linear in the groups' keeps, over the fraction of conv groups left (a grouped conv loses a
  conv group when a removed set is a whole one: depthwise convs, ShuffleNet and IGC group cuts). :class:`MacsModel` evaluates that sum for any keep vector without tracing; it
  equals :func:`~lightnn.compress.sensitivity.count_macs` of the shrunk model (a test holds it to that on the
  zoo).
- **State** per group (AMC's eq. in section 3.1, adapted to groups): index, kind (conv / grouped / linear), in and
  out channels, stride, kernel, params, MACs removed so far, MACs of the groups still to come, previous action;
  each feature divided by its largest value over the groups.
- **Action clamp.** A proposed keep ratio is lowered so that, with every later group cut to its fewest sets, the
  budget can still be met; then rounded down to a whole number of hardware-friendly sets (``round_to``). The
  final keep vector therefore meets the budget on the MACs model, exactly, whatever the agent proposes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn

from .objectives import SearchError

__all__ = ["MacsModel", "AMCEnv", "GroupInfo", "STATE_FEATURES", "REWARDS", "amc_reward", "amc_search"]

STATE_FEATURES = ("index", "kind", "in_channels", "out_channels", "stride", "kernel", "params", "reduced",
                  "rest", "previous")
_KINDS = {"conv": 0.0, "grouped": 0.5, "linear": 1.0}


@dataclass
class GroupInfo:
    name: str
    size: int  # removable sets
    unit: int  # channels per set in the widest layer
    step: int  # sets per hardware-friendly step (round_to)
    min_keep: int  # fewest sets a keep may leave
    kind: str
    in_channels: int
    out_channels: int
    stride: int
    kernel: int
    params: int


class MacsModel:
    """MACs of a model as a function of how many sets each prunable group keeps (see the module docstring).

    Each layer's input and output widths are linear in the groups' keeps (a set removes
    ``members[(layer, dim)].shape[1]`` channels there; a dimension may hold several groups, after a concat, or
    only part of one, after a zero-padded shortcut); its MACs scale with the product of the two width fractions,
    divided, for a grouped or depthwise conv, by the fraction of its conv groups left."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, graph: Any) -> None:
        from ..profile import profile

        rep = profile(model, tuple(example_input.shape), strict=False, inputs=example_input)
        self.total = float(rep.macs)
        groups = graph.prunable_groups()
        self.sizes = {g.name: g.size for g in groups}
        cuts: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for g in groups:
            for (layer, dim), idx in g.members.items():
                cuts.setdefault((layer, dim), []).append((g.name, int(idx.shape[1])))
        # (macs, [(width, cuts) per scaled dimension], (conv groups, [(group, conv groups one set empties)]) | None):
        # macs x prod over dims of (width - removed) / width x groups / groups left
        self.terms: list[tuple[float, list, tuple | None]] = []
        self.fixed = 0.0
        for row in rep.layers:
            if not row.macs:
                continue
            try:
                mod = model.get_submodule(row.name)
            except AttributeError:
                mod = None
            conv_groups: tuple[int, list[tuple[str, int]]] | None = None
            if isinstance(mod, nn.modules.conv._ConvNd):
                widths = {"out": mod.out_channels, "in": mod.in_channels}
                dims = ["out", "in"]
                if mod.groups > 1:  # MACs ~ out x in / groups: count the conv groups a removed set empties
                    per = mod.out_channels // mod.groups
                    whole = []
                    for g in groups:
                        idx = g.members.get((row.name, "out"))
                        if idx is not None and int(idx.shape[1]) % per == 0 and \
                                all(len({int(c) // per for c in r}) * per == len(r) for r in idx.tolist()):
                            whole.append((g.name, int(idx.shape[1]) // per))
                    conv_groups = (mod.groups, whole)
            elif isinstance(mod, nn.Linear):
                widths = {"out": mod.out_features, "in": mod.in_features}
                dims = ["out", "in"]
            else:  # another op with MACs: it scales with its output channels
                shape = [int(v) for v in str(row.output_shape).split("x") if v.isdigit()]
                widths = {"out": shape[1] if len(shape) > 1 else 1}
                dims = ["out"]
            scaled = [(widths[d], cuts[(row.name, d)]) for d in dims if (row.name, d) in cuts]
            if scaled:
                self.terms.append((float(row.macs), scaled, conv_groups))
            else:
                self.fixed += float(row.macs)

    def __call__(self, keep: dict[str, int]) -> float:
        """MACs when group ``n`` keeps ``keep[n]`` of its sets (absent groups: all)."""
        gone = {n: s - keep.get(n, s) for n, s in self.sizes.items()}
        total = self.fixed
        for macs, scaled, conv_groups in self.terms:
            f = 1.0
            for width, cut in scaled:
                f *= max(0.0, width - sum(gone[n] * w for n, w in cut)) / width
            if conv_groups is not None:
                g0, whole = conv_groups
                left = g0 - sum(gone[n] * w for n, w in whole)
                f = f * g0 / left if left > 0 else 0.0
            total += macs * f
        return total


def _group_infos(model: nn.Module, graph: Any, round_to: int, max_ratio: float) -> list[GroupInfo]:
    from ..compress.channel import resolve_round_to

    r = resolve_round_to(round_to)
    out = []
    for g in graph.prunable_groups():
        try:
            m = model.get_submodule(g.name)
        except AttributeError:
            m = None
        step = math.lcm(max(1, r), g.unit) // g.unit
        if isinstance(m, nn.modules.conv._ConvNd):
            kind = "grouped" if m.groups > 1 else "conv"
            cin, cout, stride, k = m.in_channels, m.out_channels, int(m.stride[0]), int(m.kernel_size[0])
        elif isinstance(m, nn.Linear):
            kind, cin, cout, stride, k = "linear", m.in_features, m.out_features, 1, 1
        else:
            kind, cin, cout, stride, k = "conv", g.channels, g.channels, 1, 1
        params = int(sum(p.numel() for p in m.parameters())) if m is not None else 0
        if g.size <= step:
            min_keep = g.size  # too narrow to cut by a whole step
        else:
            min_keep = max(step, math.ceil(g.size * (1 - max_ratio) / step) * step)
            min_keep = min(min_keep, g.size)
        out.append(GroupInfo(g.name, g.size, g.unit, step, min_keep, kind, cin, cout, stride, k, params))
    return out


class AMCEnv:
    """One episode = one keep decision per prunable group, in graph order.

    ``budget``: the MACs the result may have (absolute). ``max_ratio``: the largest share of a group's sets an
    action may remove (AMC: 0.8). ``min_keep_ratio`` of the actions is the same bound seen from the agent's side:
    actions are keep ratios in ``[1 - max_ratio, 1]``.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, budget: float, *, round_to: int = 4,
                 max_ratio: float = 0.8, graph: Any = None) -> None:
        from ..compress import build_dependency_graph

        if not 0.0 < max_ratio < 1.0:
            raise SearchError(f"max_ratio must be in (0, 1), got {max_ratio!r}")
        self.model = model
        self.x = example_input
        self.graph = graph if graph is not None else build_dependency_graph(model, example_input)
        self.groups = _group_infos(model, self.graph, round_to, max_ratio)
        if not self.groups:
            raise SearchError("the model has no prunable channel groups: AMC has nothing to decide")
        self.max_ratio = float(max_ratio)
        self.macs = MacsModel(model, example_input, self.graph)
        self.budget = float(budget)
        floor = self.macs({g.name: g.min_keep for g in self.groups})
        if self.budget < floor:
            raise SearchError(f"a MACs budget of {self.budget / 1e6:.3f} M ({self.budget / self.macs.total:.1%}) "
                              f"is below the smallest this model reaches with at most {self.max_ratio:.0%} of each "
                              f"group's channels removed: {floor / 1e6:.3f} M ({floor / self.macs.total:.1%})")
        self._scale = self._feature_scale()
        self.reset()

    # -- state ----------------------------------------------------------------------------------------------------

    def _raw(self, t: int, reduced: float, rest: float, prev: float) -> list[float]:
        g = self.groups[t]
        return [float(t), _KINDS[g.kind], float(g.in_channels), float(g.out_channels), float(g.stride),
                float(g.kernel), float(g.params), reduced, rest, prev]

    def _feature_scale(self) -> list[float]:
        rows = [self._raw(t, self.macs.total, self.macs.total, 1.0) for t in range(len(self.groups))]
        return [max(abs(r[i]) for r in rows) or 1.0 for i in range(len(STATE_FEATURES))]

    def state(self) -> torch.Tensor:
        t = self.t
        done_keep = {g.name: self.keep[g.name] for g in self.groups[:t]}
        reduced = self.macs.total - self.macs(done_keep)
        # MACs of the layers the groups still to come touch, at full width (AMC's "FLOPs remaining")
        rest = self.macs(done_keep) - self.macs({**done_keep, **{g.name: 0 for g in self.groups[t + 1:]}})
        raw = self._raw(t, reduced, rest, self.prev)
        return torch.tensor([v / s for v, s in zip(raw, self._scale)], dtype=torch.float32)

    @property
    def state_dim(self) -> int:
        return len(STATE_FEATURES)

    def reset(self) -> torch.Tensor:
        self.t = 0
        self.keep: dict[str, int] = {}
        self.prev = 1.0
        return self.state()

    # -- actions --------------------------------------------------------------------------------------------------

    def allowed(self, t: int, keep: dict[str, int]) -> int:
        """The most sets group ``t`` may keep so that the budget stays reachable with every later group at its
        fewest sets (``keep`` holds the decisions before ``t``)."""
        g = self.groups[t]
        later = {h.name: h.min_keep for h in self.groups[t + 1:]}
        for k in self._choices(g):
            if self.macs({**keep, g.name: k, **later}) <= self.budget:
                return k
        return g.min_keep  # reachable: the budget was checked against every group at its fewest sets

    @staticmethod
    def _choices(g: GroupInfo) -> list[int]:
        """The keeps a group may take, most first: all its sets, then whole steps down to ``min_keep``."""
        if g.size <= g.step:
            return [g.size]
        top = (g.size // g.step) * g.step
        return [g.size] + [k for k in range(top, g.min_keep - 1, -g.step) if k != g.size]

    def _snap(self, g: GroupInfo, sets: float) -> int:
        if g.size <= g.step:
            return g.size
        k = int(math.floor(sets / g.step + 1e-9)) * g.step
        return int(min(g.size, max(g.min_keep, k)))

    def step(self, action: float) -> tuple[torch.Tensor | None, float, bool]:
        """Apply a keep ratio (clipped to ``[1 - max_ratio, 1]``, then clamped to the budget and snapped to whole
        steps) to the current group; returns ``(next state or None, the ratio kept, done)``."""
        g = self.groups[self.t]
        a = min(1.0, max(1.0 - self.max_ratio, float(action)))
        k = self._snap(g, a * g.size) if a < 1.0 else g.size
        k = min(k, self.allowed(self.t, self.keep))
        self.keep[g.name] = k
        self.prev = k / g.size
        self.t += 1
        done = self.t == len(self.groups)
        return (None if done else self.state()), self.prev, done

    def play(self, actions: Sequence[float]) -> dict[str, int]:
        """The keep vector of one episode of ``actions`` (one per group)."""
        if len(actions) != len(self.groups):
            raise SearchError(f"an episode needs {len(self.groups)} actions (one per group), got {len(actions)}")
        self.reset()
        for a in actions:
            self.step(a)
        return dict(self.keep)

    # -- the model --------------------------------------------------------------------------------------------------

    def ratios(self, keep: dict[str, int]) -> dict[str, float]:
        """``prune_channels`` ratios that keep exactly ``keep`` sets per group."""
        return {g.name: 1.0 - keep.get(g.name, g.size) / g.size for g in self.groups}

    def apply(self, keep: dict[str, int], criterion: str = "l1") -> nn.Module:
        """The shrunk model (a copy) for a keep vector; its record holds the channels transform (replayable)."""
        from ..compress import prune_channels

        round_to = 1  # keep is already in whole steps; round_keep must not move it
        return prune_channels(self.model, self.x, self.ratios(keep), criterion=criterion, round_to=round_to,
                              graph=self.graph)


# ---------------------------------------------------------------------------------------------------------------
# the search: DDPG over episodes, logged and resumable

REWARDS = ("constrained", "guaranteed")


def amc_reward(top1: float, macs: float, mode: str) -> float:
    """AMC's rewards: resource-constrained ``accuracy`` (the budget is met by the action clamp) and
    accuracy-guaranteed ``-error x log(MACs)``; ``top1`` in percent."""
    if mode == "constrained":
        return top1 / 100.0
    if mode == "guaranteed":
        return -(1.0 - top1 / 100.0) * math.log(max(macs, 1.0))
    raise SearchError(f"reward must be one of {', '.join(REWARDS)}, got {mode!r}")


def amc_search(env: AMCEnv, score: Any, *, episodes: int, agent_config: Any = None, reward: str = "constrained",
               output: str | None = None, log: Any = None) -> dict[str, Any]:
    """Run (or resume) AMC's search: ``episodes`` episodes of the DDPG agent over ``env``; ``score(model)`` gives
    the fast top-1 (%) of a shrunk model (the caller re-estimates batch-norm statistics and scores on a split of
    the training images). With ``output`` (a folder) every episode is appended to ``episodes.jsonl`` and the agent,
    the episode count and the best policy are saved after each (``agent.pt``, ``best.json``, written atomically),
    so the same call after a kill continues from the last finished episode. Returns ``{"best": ..., "episodes":
    [...]}``; ``best["keep"]`` replays with :meth:`AMCEnv.apply`."""
    import json
    from pathlib import Path

    import numpy as np

    from ..utils.io import atomic_torch_save, atomic_write_json, atomic_write_text
    from .ddpg import DDPGAgent, DDPGConfig

    def atomic_write_json_lines(path, rows):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))

    if reward not in REWARDS:
        raise SearchError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise SearchError(f"episodes must be a whole number >= 1, got {episodes!r}")
    say = log or (lambda m: None)
    cfg = agent_config or DDPGConfig(warmup_episodes=max(1, episodes // 4), bounds=(1.0 - env.max_ratio, 1.0))
    agent = DDPGAgent(env.state_dim, cfg)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    folder = Path(output) if output is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / "agent.pt"
        if saved.exists():
            d = torch.load(saved, weights_only=True)
            if d.get("groups") != [g.name for g in env.groups] or d.get("budget") != env.budget \
                    or d.get("reward") != reward:
                raise SearchError(f"{str(folder)!r} holds an AMC search of another model, budget or reward: use a "
                                  "new folder")
            agent.load_state_dict(d["agent"])
            lines = (folder / "episodes.jsonl").read_text().splitlines() if (folder / "episodes.jsonl").exists() else []
            history = [json.loads(s) for s in lines[: int(d["episodes"])]]
            # lines past the saved count belong to an episode the agent never learned from: drop them
            atomic_write_json_lines(folder / "episodes.jsonl", history)
            best = json.loads((folder / "best.json").read_text()) if (folder / "best.json").exists() else None
            say(f"resuming the AMC search in {folder}: {len(history)} of {episodes} episodes done")
    for ep in range(len(history), episodes):
        s = env.reset()
        transitions = []
        done = False
        while not done:
            a = float(np.asarray(agent.act(s.numpy(), ep)).reshape(-1)[0])
            s2, kept, done = env.step(a)
            nxt = s2 if s2 is not None else torch.zeros_like(s)
            transitions.append((s.numpy(), np.array([kept]), nxt.numpy(), done))
            s = nxt
        keep = dict(env.keep)
        macs = env.macs(keep)
        top1 = float(score(env.apply(keep)))
        r = amc_reward(top1, macs, reward)
        agent.end_episode(transitions, r)
        losses = {}
        if ep >= cfg.warmup_episodes:
            for _ in range(len(env.groups)):
                losses = agent.update()
        row = {"episode": ep, "reward": r, "top1": top1, "macs": macs, "keep": keep,
               "ratios": [keep[g.name] / g.size for g in env.groups], "sigma": agent.sigma(ep),
               "warmup": ep < cfg.warmup_episodes, **{f"loss_{k}": float(v) for k, v in (losses or {}).items()}}
        history.append(row)
        if best is None or r > best["reward"]:
            best = dict(row)
        if folder is not None:
            with open(folder / "episodes.jsonl", "a") as f:  # a torn last line is cut by the count in agent.pt
                f.write(json.dumps(row) + "\n")
            atomic_write_json(folder / "best.json", best)
            atomic_torch_save({"agent": agent.state_dict(), "episodes": ep + 1, "budget": env.budget,
                               "reward": reward, "groups": [g.name for g in env.groups]}, folder / "agent.pt")
        say(f"episode {ep}: reward {r:.4f}, top-1 {top1:.2f}%, {macs / 1e6:.2f} M MACs")
    return {"best": best, "episodes": history}
