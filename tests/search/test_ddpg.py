"""AMC's DDPG agent: a toy task it learns (seed pinned), its exploration noise against the truncated-normal moments, a
killed search resumed bit for bit, seeds, the critic's and actor's steps going downhill, the episode baseline."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch

from lightnn.search import DDPGAgent, DDPGConfig, ReplayBuffer, truncated_normal

EYE = np.eye(3, dtype=np.float32)
END = np.zeros(3, np.float32)
TARGETS = np.array([0.2, 0.7, 0.5])


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add overhead, and the cores are shared
    yield
    torch.set_num_threads(n)


def play(agent: DDPGAgent, episodes: range, updates_per_step: int = 1, log: list | None = None) -> None:
    """Episodes of the toy task: 3 steps, state = one-hot step index, episode reward -sum((a_t - target_t)^2).
    AMC's loop: the reward comes at the end, then one update per step once warm-up is over."""
    for ep in episodes:
        steps, acts = [], []
        for t in range(3):
            a = agent.act(EYE[t], ep)
            acts.append(float(a[0]))
            steps.append((EYE[t], a, EYE[t + 1] if t < 2 else END, t == 2))
        agent.end_episode(steps, -float(np.sum((np.array(acts) - TARGETS) ** 2)))
        if log is not None:
            log.append(("act", acts))
        if ep >= agent.config.warmup_episodes:
            for _ in range(3 * updates_per_step):
                losses = agent.update()
                if log is not None:
                    log.append(("update", losses))


def small(**kw) -> DDPGConfig:
    return DDPGConfig(**{"hidden": 16, "batch": 8, "replay_size": 20, "warmup_episodes": 3, "seed": 1, **kw})


def test_learns_the_toy_task():
    # Settings for a 3-step task in 150 episodes, not AMC's (hidden 300, 700 episodes of ~13 layers). Not robust
    # across seeds: with these settings 3 of seeds 0-5 end within 0.1 of every target (the others 0.12-0.18); the
    # seed is pinned, so this checks that the pieces learn together, not how reliably DDPG learns this task.
    config = DDPGConfig(hidden=64, lr_actor=1e-3, lr_critic=1e-2, gamma=0.0, delta_decay=0.98, warmup_episodes=30,
                        seed=3)
    agent = DDPGAgent(3, config)
    play(agent, range(150), updates_per_step=2)
    greedy = np.array([agent.act(EYE[t], 150, explore=False)[0] for t in range(3)])
    assert np.abs(greedy - TARGETS).max() < 0.1, greedy


def test_truncated_normal_moments_and_bounds():
    rng = np.random.default_rng(0)
    # Far from the bounds it is the plain normal.
    x = truncated_normal(np.full(20000, 0.5), 0.05, 0.0, 1.0, rng)
    assert abs(x.mean() - 0.5) < 0.002 and abs(x.std() - 0.05) < 0.002
    # Mean on a bound: the half-normal, mean sigma*sqrt(2/pi), std sigma*sqrt(1 - 2/pi).
    x = truncated_normal(np.zeros(20000), 0.1, 0.0, 1.0, rng)
    assert abs(x.mean() - 0.1 * math.sqrt(2 / math.pi)) < 0.002
    assert abs(x.std() - 0.1 * math.sqrt(1 - 2 / math.pi)) < 0.002
    # Wide sigma, means anywhere (even outside): always inside the bounds.
    x = truncated_normal(rng.uniform(-1, 2, 20000), 5.0, 0.2, 1.0, rng)
    assert x.min() >= 0.2 and x.max() <= 1.0
    x = truncated_normal(np.array([-50.0, 50.0]), 0.01, 0.0, 1.0, rng)  # no mass left in float64
    assert list(x) == [0.0, 1.0]


def test_exploration_sigma_shrinks_per_episode():
    config = small(warmup_episodes=5, init_delta=0.5, delta_decay=0.9, bounds=(0.2, 1.0))
    agent = DDPGAgent(3, config)
    assert agent.sigma(5) == 0.5 and agent.sigma(15) == pytest.approx(0.5 * 0.9 ** 10)
    warm = np.array([agent.act(EYE[0], 0)[0] for _ in range(2000)])  # uniform in the bounds
    assert warm.min() >= 0.2 and warm.max() <= 1.0 and abs(warm.mean() - 0.6) < 0.02
    mu = agent.act(EYE[0], 5, explore=False)[0]
    spreads = []
    for ep in (5, 15, 30):
        x = np.array([agent.act(EYE[0], ep)[0] for _ in range(2000)])
        assert x.min() >= 0.2 and x.max() <= 1.0
        spreads.append(np.abs(x - mu).mean())
    assert spreads[0] > spreads[1] > spreads[2]
    # At episode 30 sigma = 0.5 * 0.9**25 = 0.036, far from the bounds: the normal's mean absolute deviation.
    assert spreads[2] == pytest.approx(agent.sigma(30) * math.sqrt(2 / math.pi), rel=0.1)


def test_resumed_agent_continues_bit_for_bit():
    config = small()
    first = DDPGAgent(3, config)
    play(first, range(6))  # past warm-up, and the 20-slot ring has wrapped (18 transitions then 24)
    blob = io.BytesIO()
    torch.save(first.state_dict(), blob)
    blob.seek(0)
    resumed = DDPGAgent(3, config)  # a fresh process would build it the same way
    resumed.load_state_dict(torch.load(blob, weights_only=True))

    log_first, log_resumed = [], []
    play(first, range(6, 10), log=log_first)
    play(resumed, range(6, 10), log=log_resumed)
    assert log_first == log_resumed and len(log_first) == 4 + 4 * 3
    for name in ("actor", "critic", "actor_target", "critic_target"):
        for p, q in zip(getattr(first, name).parameters(), getattr(resumed, name).parameters()):
            assert torch.equal(p, q), name
    assert first.baseline == resumed.baseline


def test_resume_refuses_another_config():
    saved = DDPGAgent(3, small()).state_dict()
    with pytest.raises(ValueError, match="differs"):
        DDPGAgent(3, small(tau=0.5)).load_state_dict(saved)
    with pytest.raises(ValueError, match="differs"):
        DDPGAgent(4, small()).load_state_dict(saved)


def test_same_seed_same_actions():
    def actions(seed: int) -> list:
        log = []
        play(DDPGAgent(3, small(seed=seed)), range(8), log=log)
        return [entry for entry in log if entry[0] == "act"]

    a, b = actions(7), actions(7)
    assert a == b
    assert a != actions(8)


def test_critic_step_lowers_td_error_and_actor_step_raises_q():
    gen = torch.Generator().manual_seed(0)
    batch = {"states": torch.rand(32, 3, generator=gen), "actions": torch.rand(32, 1, generator=gen),
             "rewards": torch.randn(32, generator=gen), "next_states": torch.rand(32, 3, generator=gen),
             "dones": (torch.rand(32, generator=gen) < 0.3).float()}
    agent = DDPGAgent(3, small(lr_critic=1e-3, lr_actor=1e-3))
    target = agent.td_target(batch)
    before = agent.td_loss(batch, target).item()
    actor_before = copy.deepcopy(agent.actor)
    losses = agent.update(batch)
    assert losses["critic"] == pytest.approx(before)
    assert agent.td_loss(batch, target).item() < before  # against the same targets: a step downhill
    s = batch["states"]
    with torch.no_grad():  # the actor's step, judged by the critic it was taken on
        assert agent.critic(s, agent.actor(s)).mean() > agent.critic(s, actor_before(s)).mean()


def test_episode_reward_less_moving_baseline_on_every_step():
    agent = DDPGAgent(3, small(baseline_alpha=0.95))
    steps = [(EYE[t], np.array([0.5]), EYE[t + 1] if t < 2 else END, t == 2) for t in range(3)]
    assert agent.end_episode(steps, -2.0) == 0.0  # the first episode sets the baseline
    assert agent.baseline == -2.0
    assert agent.end_episode(steps, -1.0) == pytest.approx(1.0)
    assert agent.baseline == pytest.approx(0.95 * -2.0 + 0.05 * -1.0)
    buf = agent.buffer
    assert len(buf) == 6 and list(buf.rewards[:6]) == pytest.approx([0, 0, 0, 1, 1, 1])
    assert list(buf.dones[:6]) == [0, 0, 1, 0, 0, 1]


def test_replay_ring_overwrites_the_oldest():
    buf = ReplayBuffer(4, state_dim=1, action_dim=1)
    for i in range(6):
        buf.add([i], [i], i, [i + 1], False)
    assert len(buf) == 4 and sorted(buf.rewards) == [2, 3, 4, 5]
    batch = buf.sample(50, np.random.default_rng(0))
    assert set(batch["rewards"].tolist()) <= {2.0, 3.0, 4.0, 5.0}
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 1, 1).sample(1, np.random.default_rng(0))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="bounds"):
        DDPGConfig(bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="tau"):
        DDPGConfig(tau=0.0)
