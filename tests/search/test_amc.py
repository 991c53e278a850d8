"""AMC's environment on the zoo: an episode's keep vector meets the MACs budget on lightnn's own counter, exactly
as the environment's MACs model predicts, whatever the actions; the shrunk model equals the masked one; budgets
the action bounds cannot reach and models with nothing to prune are refused in one line."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn as nn

import lightnn
from lightnn.compress import verify_shrink
from lightnn.compress.sensitivity import count_macs
from lightnn.errors import LightnnError
from lightnn.search import SearchError
from lightnn.search.amc import STATE_FEATURES, AMCEnv

# the default suite walks one model per kind of coupling (residual, padded shortcut, depthwise, shuffle and split,
# IGC permutations); CI's slow pass walks the rest of the CIFAR zoo
FAST = {"resnet20", "mobilenet_v1_cifar", "shufflenet_v2_cifar", "igcv2_cifar"}
UNSUPPORTED = {"alexnet_grouped_cifar", "alexnet_small_cifar"}  # LocalResponseNorm: refused by the analysis
CIFAR = sorted(n for n in lightnn.list_models() if n.endswith("_cifar") and n not in UNSUPPORTED) + ["resnet20"]


def _model(name):
    torch.manual_seed(0)
    return lightnn.create_model(name, num_classes=10).eval(), torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in CIFAR])
def test_an_episode_meets_the_budget_exactly_and_shrinks_like_the_mask(name):
    model, x = _model(name)
    full = count_macs(model, x)
    probe = AMCEnv(model, x, full)  # no budget: find the floor the action bounds allow
    floor = probe.macs({g.name: g.min_keep for g in probe.groups})
    budget = max(0.5 * full, floor + 0.25 * (full - floor))
    env = AMCEnv(model, x, budget, graph=probe.graph)
    rng = random.Random(0)
    for actions in ([1.0] * len(env.groups), [rng.uniform(0.0, 1.0) for _ in env.groups]):
        keep = env.play(actions)
        pruned = env.apply(keep)
        real = count_macs(pruned, x)
        assert real == pytest.approx(env.macs(keep), rel=1e-9, abs=1.0)  # the MACs model is the counter
        assert real <= budget + 1.0
        verify_shrink(model, pruned, x)
    assert real < full


def test_keeping_everything_is_clamped_into_the_budget_and_states_are_normalised():
    model, x = _model("resnet20")
    full = count_macs(model, x)
    env = AMCEnv(model, x, 0.5 * full)
    s = env.reset()
    states = [s]
    done = False
    while not done:
        s, kept, done = env.step(1.0)
        if s is not None:
            states.append(s)
    assert len(states) == len(env.groups) and states[0].shape == (len(STATE_FEATURES),)
    st = torch.stack(states)
    assert float(st.min()) >= 0.0 and float(st.max()) <= 1.0 + 1e-6
    assert env.macs(env.keep) <= 0.5 * full
    # the budget binds: a step more of any group would break it
    for g in env.groups:
        if env.keep[g.name] < g.size:
            more = dict(env.keep, **{g.name: min(g.size, env.keep[g.name] + g.step)})
            assert env.macs(more) > 0.5 * full or more[g.name] == env.keep[g.name]
            break


def test_a_budget_below_the_action_bounds_names_the_smallest_reachable():
    model, x = _model("resnet20")
    full = count_macs(model, x)
    with pytest.raises(SearchError) as e:
        AMCEnv(model, x, 0.01 * full, max_ratio=0.8)
    msg = str(e.value)
    assert "\n" not in msg and "below the smallest this model reaches" in msg and "80%" in msg


def test_nothing_to_prune_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(LightnnError, match="no prunable channel groups"):
        AMCEnv(model, torch.randn(1, 3, 8, 8), 1e9)


def _cheap_score(model):
    """A deterministic stand-in for the fast accuracy: wider kept convs score higher (no data, no training)."""
    w = sum(float(m.weight.detach().abs().sum()) for m in model.modules() if isinstance(m, nn.Conv2d))
    return 100.0 * w / (1.0 + w)


def test_amc_search_resumes_its_episode_count_bit_for_bit(tmp_path):
    from lightnn.search.amc import amc_search
    from lightnn.search.ddpg import DDPGConfig

    model, x = _model("resnet20")
    env = AMCEnv(model, x, 0.5 * count_macs(model, x))
    cfg = DDPGConfig(warmup_episodes=2, batch=8, hidden=16, bounds=(0.2, 1.0), seed=3)
    whole = amc_search(env, _cheap_score, episodes=5, agent_config=cfg, output=str(tmp_path / "a"))
    amc_search(env, _cheap_score, episodes=3, agent_config=cfg, output=str(tmp_path / "b"))
    with open(tmp_path / "b" / "episodes.jsonl", "a") as f:  # an episode the kill cut short
        f.write('{"episode": 3, "rew')
    said = []
    resumed = amc_search(env, _cheap_score, episodes=5, agent_config=cfg, output=str(tmp_path / "b"),
                         log=said.append)
    assert "3 of 5 episodes done" in said[0]
    assert [e["episode"] for e in resumed["episodes"]] == [0, 1, 2, 3, 4]
    assert [e["keep"] for e in resumed["episodes"]] == [e["keep"] for e in whole["episodes"]]
    assert [e["reward"] for e in resumed["episodes"]] == [e["reward"] for e in whole["episodes"]]
    assert len((tmp_path / "b" / "episodes.jsonl").read_text().splitlines()) == 5
    best = resumed["best"]
    assert best["reward"] == max(e["reward"] for e in whole["episodes"])
    assert count_macs(env.apply(best["keep"]), x) <= 0.5 * count_macs(model, x)  # the best policy replays
    with pytest.raises(SearchError, match="another model, budget or reward"):
        amc_search(env, _cheap_score, episodes=6, agent_config=cfg, reward="guaranteed", output=str(tmp_path / "b"))


def test_rewards():
    from lightnn.search.amc import amc_reward

    assert amc_reward(70.0, 1e6, "constrained") == pytest.approx(0.7)
    assert amc_reward(70.0, 1e6, "guaranteed") == pytest.approx(-0.3 * math.log(1e6))
    with pytest.raises(SearchError, match="reward must be one of"):
        amc_reward(70.0, 1e6, "accuracy")
