"""AMC's DDPG agent (He et al., "AMC: AutoML for Model Compression", ECCV 2018, Sec. 3.3), written on torch.

Deep deterministic policy gradient (Lillicrap et al. 2016): an actor ``mu(s)`` that outputs a bounded action
(for AMC a layer's keep ratio), a critic ``Q(s, a)``, target copies of both moved towards them by ``tau`` after
each step, and a replay buffer. The parts that are AMC's own:

- exploration is a truncated normal around ``mu(s)`` whose sigma decays per episode,
  ``init_delta * delta_decay ** (episode - warmup_episodes)``, after ``warmup_episodes`` of uniform actions;
- the reward is known only at the end of an episode (the compressed model's score), so every transition of the
  episode gets that reward, less a moving-average baseline of episode rewards (:meth:`DDPGAgent.end_episode`),
  and the discount is 1.

A search is resumable bit for bit: :meth:`DDPGAgent.state_dict` holds the networks, targets, optimizers, replay
buffer, baseline and both random generators as tensors, numbers and lists only, for
``torch.load(weights_only=True)``.

Loop, as in mit-han-lab/amc ``amc_search.py``::

    for episode in range(n_episodes):
        steps = []
        for s, s_next, done in layers:            # one step per prunable layer
            a = agent.act(s, episode)
            steps.append((s, a, s_next, done))
        agent.end_episode(steps, reward)           # reward of the compressed model
        if episode >= config.warmup_episodes:
            for _ in steps:
                agent.update()
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["DDPGConfig", "DDPGAgent", "ReplayBuffer", "truncated_normal"]


@dataclass(frozen=True)
class DDPGConfig:
    """Hyper-parameters; the defaults are AMC's (mit-han-lab/amc ``amc_search.py``)."""

    hidden: int = 300               # units in each of the two hidden layers of actor and critic
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01               # soft target update: target <- (1 - tau) target + tau online
    gamma: float = 1.0              # AMC: no discount within an episode
    batch: int = 64
    replay_size: int = 2000
    warmup_episodes: int = 100      # episodes of uniform random actions before the actor is used
    init_delta: float = 0.5         # exploration sigma in the first episode after warm-up
    delta_decay: float = 0.95       # sigma multiplier per episode
    bounds: tuple[float, float] = (0.0, 1.0)  # action (low, high)
    baseline_alpha: float = 0.95    # baseline <- alpha baseline + (1 - alpha) episode reward
    seed: int = 0

    def __post_init__(self):
        low, high = self.bounds
        checks = (
            (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
            (self.lr_actor > 0 and self.lr_critic > 0,
             f"learning rates must be > 0, got lr_actor={self.lr_actor}, lr_critic={self.lr_critic}"),
            (0 < self.tau <= 1, f"tau must be in (0, 1], got {self.tau}"),
            (0 <= self.gamma <= 1, f"gamma must be in [0, 1], got {self.gamma}"),
            (self.batch >= 1, f"batch must be >= 1, got {self.batch}"),
            (self.replay_size >= 1, f"replay_size must be >= 1, got {self.replay_size}"),
            (self.warmup_episodes >= 0, f"warmup_episodes must be >= 0, got {self.warmup_episodes}"),
            (self.init_delta >= 0, f"init_delta must be >= 0, got {self.init_delta}"),
            (0 < self.delta_decay <= 1, f"delta_decay must be in (0, 1], got {self.delta_decay}"),
            (low < high, f"bounds must be (low, high) with low < high, got {self.bounds}"),
            (0 <= self.baseline_alpha < 1, f"baseline_alpha must be in [0, 1), got {self.baseline_alpha}"),
        )
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"DDPGConfig: {msg}")
        object.__setattr__(self, "bounds", (float(low), float(high)))


def truncated_normal(mu: np.ndarray, sigma: float, low: float, high: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Samples of N(mu, sigma) truncated to [low, high], by the inverse CDF: one uniform draw per sample, so the
    generator advances by the same amount whatever the values (rejection sampling would not)."""
    mu = np.asarray(mu, dtype=np.float64)
    u = rng.random(mu.shape)
    if sigma <= 0:
        return np.clip(mu, low, high)
    m = torch.from_numpy(mu)
    cdf = lambda x: 0.5 * (1 + torch.erf((x - m) / (sigma * math.sqrt(2))))  # noqa: E731
    lo, hi = cdf(torch.tensor(low, dtype=torch.float64)), cdf(torch.tensor(high, dtype=torch.float64))
    p = lo + torch.from_numpy(u) * (hi - lo)
    x = m + sigma * math.sqrt(2) * torch.erfinv((2 * p - 1).clamp(-1 + 1e-16, 1 - 1e-16))
    # A mean far outside the bounds leaves no probability mass in float64: the nearest bound is the answer.
    x = torch.where(hi - lo > 1e-12, x, m)
    return x.clamp(low, high).numpy()


class ReplayBuffer:
    """A fixed-size ring of transitions in numpy arrays; the oldest is overwritten when full."""

    def __init__(self, capacity: int, state_dim: int, action_dim: int):
        self.capacity = capacity
        self.states = np.zeros((capacity, state_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.next_states = np.zeros((capacity, state_dim), np.float32)
        self.dones = np.zeros(capacity, np.float32)
        self.pos = 0   # next slot to write
        self.size = 0

    _FIELDS = ("states", "actions", "rewards", "next_states", "dones")

    def __len__(self) -> int:
        return self.size

    def add(self, state, action, reward: float, next_state, done: bool) -> None:
        i = self.pos
        self.states[i] = state
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_states[i] = next_state
        self.dones[i] = float(done)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``n`` transitions drawn uniformly with replacement, as float32 tensors."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty (observe transitions before update())")
        idx = rng.integers(0, self.size, n)
        return {f: torch.from_numpy(getattr(self, f)[idx]) for f in self._FIELDS}

    def state_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: torch.from_numpy(getattr(self, f)[:self.size].copy()) for f in self._FIELDS}
        d.update(pos=self.pos, size=self.size, capacity=self.capacity)
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d["capacity"] != self.capacity:
            raise ValueError(f"ReplayBuffer: saved capacity {d['capacity']} != this buffer's {self.capacity}")
        self.size, self.pos = int(d["size"]), int(d["pos"])
        for f in self._FIELDS:
            arr = getattr(self, f)
            arr[:] = 0
            arr[:self.size] = d[f].numpy()


class _Actor(nn.Module):
    def __init__(self, state_dim: int, action_dim: int, hidden: int, bounds: tuple[float, float]):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, action_dim))
        self.low, self.high = bounds

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.net(s))


class _Critic(nn.Module):
    """AMC's critic: state and action each through their own first layer, summed, then two layers to Q."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.fs, self.fa = nn.Linear(state_dim, hidden), nn.Linear(action_dim, hidden)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.head(self.fs(s) + self.fa(a)).squeeze(-1)


def _init(module: nn.Module, last: nn.Linear, g: torch.Generator) -> None:
    """DDPG's initialization, from a private generator (the global torch RNG is left alone): hidden layers
    U(+-1/sqrt(fan_in)), the output layer U(+-3e-3) so the first actions and Q values are near the middle/0."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                b = 3e-3 if m is last else 1 / math.sqrt(m.in_features)
                m.weight.uniform_(-b, b, generator=g)
                m.bias.uniform_(-b, b, generator=g)


class DDPGAgent:
    """AMC's agent over states of ``state_dim`` numbers and actions of ``action_dim`` numbers (AMC: 1, the
    layer's keep ratio) in ``config.bounds``."""

    def __init__(self, state_dim: int, config: DDPGConfig | None = None, action_dim: int = 1):
        if state_dim < 1 or action_dim < 1:
            raise ValueError(f"DDPGAgent: state_dim and action_dim must be >= 1, got {state_dim}, {action_dim}")
        self.config = config = config or DDPGConfig()
        self.state_dim, self.action_dim = state_dim, action_dim
        self.torch_gen = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.actor = _Actor(state_dim, action_dim, config.hidden, config.bounds)
        self.critic = _Critic(state_dim, action_dim, config.hidden)
        _init(self.actor, self.actor.net[-1], self.torch_gen)
        _init(self.critic, self.critic.head[-1], self.torch_gen)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        for p in (*self.actor_target.parameters(), *self.critic_target.parameters()):
            p.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr_critic)
        self.buffer = ReplayBuffer(config.replay_size, state_dim, action_dim)
        self.baseline: float | None = None  # moving average of episode rewards; None before the first episode

    # -- acting ------------------------------------------------------------------------------------------------

    def sigma(self, episode: int) -> float:
        """Exploration sigma of ``episode`` (AMC: ``init_delta * delta_decay ** (episode - warmup)``)."""
        c = self.config
        return c.init_delta * c.delta_decay ** max(episode - c.warmup_episodes, 0)

    def greedy(self, state) -> np.ndarray:
        """``mu(state)``: the actor's action, no exploration."""
        with torch.no_grad():
            s = torch.as_tensor(np.asarray(state, np.float32)).reshape(1, self.state_dim)
            return self.actor(s)[0].numpy().astype(np.float64)

    def act(self, state, episode: int, explore: bool = True) -> np.ndarray:
        """An action (shape ``(action_dim,)``) for ``state`` in ``episode`` (counted from 0): uniform in the
        bounds during warm-up, else ``mu(state)`` plus truncated-normal noise; ``explore=False``: ``mu(state)``."""
        low, high = self.config.bounds
        if not explore:
            return self.greedy(state)
        if episode < self.config.warmup_episodes:
            return self.rng.uniform(low, high, self.action_dim)
        return truncated_normal(self.greedy(state), self.sigma(episode), low, high, self.rng)

    # -- memory ------------------------------------------------------------------------------------------------

    def observe(self, state, action, reward: float, next_state, done: bool) -> None:
        """Store one transition as given (no baseline)."""
        self.buffer.add(state, action, reward, next_state, done)

    def end_episode(self, transitions: Sequence[tuple[Any, Any, Any, bool]], reward: float) -> float:
        """AMC's episode reward: store every ``(state, action, next_state, done)`` of the episode with the
        reward ``reward - baseline``, then move the baseline towards ``reward``. The first episode sets the
        baseline (so its transitions get 0). Returns the reward stored."""
        reward = float(reward)
        if self.baseline is None:
            self.baseline = reward
        r = reward - self.baseline
        for s, a, s_next, done in transitions:
            self.observe(s, a, r, s_next, done)
        a = self.config.baseline_alpha
        self.baseline = a * self.baseline + (1 - a) * reward
        return r

    # -- learning ----------------------------------------------------------------------------------------------

    def td_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``r + gamma (1 - done) Q'(s', mu'(s'))`` from the target networks."""
        with torch.no_grad():
            s2 = batch["next_states"]
            q2 = self.critic_target(s2, self.actor_target(s2))
            return batch["rewards"] + self.config.gamma * (1 - batch["dones"]) * q2

    def td_loss(self, batch: dict[str, torch.Tensor], target: torch.Tensor | None = None) -> torch.Tensor:
        """The critic's loss: mean squared TD error on ``batch`` (``target`` default: :meth:`td_target`)."""
        if target is None:
            target = self.td_target(batch)
        return nn.functional.mse_loss(self.critic(batch["states"], batch["actions"]), target)

    def update(self, batch: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One gradient step of the critic, then of the actor (maximize ``Q(s, mu(s))``), then the soft target
        update, on ``batch`` (default: ``config.batch`` transitions sampled from the replay buffer). Returns
        ``{"critic": TD loss, "actor": -mean Q}`` before the step."""
        if batch is None:
            batch = self.buffer.sample(self.config.batch, self.rng)
        critic_loss = self.td_loss(batch)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        s = batch["states"]
        actor_loss = -self.critic(s, self.actor(s)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()  # also fills the critic's grads; zeroed before the critic's next step
        self.actor_opt.step()

        tau = self.config.tau
        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, pt in zip(net.parameters(), target.parameters()):
                    pt.mul_(1 - tau).add_(p, alpha=tau)
        return {"critic": critic_loss.item(), "actor": actor_loss.item()}

    # -- resuming ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed search needs to continue bit for bit, as tensors, numbers, strings and lists
        (``torch.save`` it; it loads with ``torch.load(weights_only=True)``)."""
        bg = self.rng.bit_generator.state
        return {
            "config": asdict(self.config), "state_dim": self.state_dim, "action_dim": self.action_dim,
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
            "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
            "buffer": self.buffer.state_dict(), "baseline": self.baseline,
            # PCG64's 128-bit state as decimal strings: plain data whatever the unpickler makes of big ints.
            "numpy_rng": {"bit_generator": bg["bit_generator"], "state": str(bg["state"]["state"]),
                          "inc": str(bg["state"]["inc"]), "has_uint32": int(bg["has_uint32"]),
                          "uinteger": int(bg["uinteger"])},
            "torch_rng": self.torch_gen.get_state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output into an agent built with the same dimensions and config."""
        saved = DDPGConfig(**{**d["config"], "bounds": tuple(d["config"]["bounds"])})
        if (d["state_dim"], d["action_dim"]) != (self.state_dim, self.action_dim) or saved != self.config:
            raise ValueError(f"DDPGAgent.load_state_dict: saved agent (state_dim={d['state_dim']}, action_dim="
                             f"{d['action_dim']}, {saved}) differs from this one (state_dim={self.state_dim}, "
                             f"action_dim={self.action_dim}, {self.config})")
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt", "buffer"):
            getattr(self, name).load_state_dict(d[name])
        self.baseline = None if d["baseline"] is None else float(d["baseline"])
        r = d["numpy_rng"]
        if r["bit_generator"] != type(self.rng.bit_generator).__name__:
            raise ValueError(f"DDPGAgent.load_state_dict: saved numpy generator {r['bit_generator']} is not "
                             f"{type(self.rng.bit_generator).__name__}")
        self.rng.bit_generator.state = {"bit_generator": r["bit_generator"],
                                        "state": {"state": int(r["state"]), "inc": int(r["inc"])},
                                        "has_uint32": r["has_uint32"], "uinteger": r["uinteger"]}
        self.torch_gen.set_state(d["torch_rng"])
