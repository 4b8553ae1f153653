"""The shipped SAC behaviour policies as numpy actors, and as rollout agents (used by data generation and by
behaviour-policy evaluation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frozen_dt.envs.registry import Task
from frozen_dt.errors import FrozenDTError
from frozen_dt.eval.rollout import in_blocks

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # stable-baselines3's SAC actor clamp


@dataclass
class ActorPolicy:
    """A shipped SAC actor (stable-baselines3 layout): tanh-squashed Gaussian over a 2-layer ReLU MLP."""

    layers: list  # [(weight, bias)] of latent_pi's linear layers
    mu: tuple
    log_std: tuple
    file: str = ""

    @classmethod
    def load(cls, path: Path) -> "ActorPolicy":
        from safetensors.numpy import load_file

        if not path.is_file():
            raise FrozenDTError(f"behaviour policy {path} is missing")
        state = {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}
        n_layers = len([k for k in state if k.startswith("latent_pi.") and k.endswith(".weight")])
        layers = [(state[f"latent_pi.{2 * i}.weight"], state[f"latent_pi.{2 * i}.bias"]) for i in range(n_layers)]
        return cls(layers, (state["mu.weight"], state["mu.bias"]), (state["log_std.weight"], state["log_std.bias"]),
                   file=path.name)

    def act(self, obs: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """Actions in [-1, 1] for a batch of observations; ``noise`` (standard normal) makes them stochastic.

        Runs in fixed-shape blocks (:func:`frozen_dt.eval.rollout.in_blocks`): a row's action does not depend on
        how many rows were batched with it (tests/test_generate.py checks this bit for bit) as long as the BLAS
        gives a row the same result wherever it sits in a block. Single-threaded OpenBLAS does not (2e-5 apart;
        README, Rollouts).
        """
        obs = np.asarray(obs, dtype=np.float32)
        if noise is None:
            return in_blocks(lambda o: self._forward(o, None), obs)
        return in_blocks(self._forward, obs, np.asarray(noise, dtype=np.float32))

    def _forward(self, obs: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        h = obs
        for w, b in self.layers:
            h = np.maximum(h @ w.T + b, 0.0)
        mean = h @ self.mu[0].T + self.mu[1]
        if noise is not None:
            log_std = np.clip(h @ self.log_std[0].T + self.log_std[1], LOG_STD_MIN, LOG_STD_MAX)
            mean = mean + np.exp(log_std) * noise
        return np.tanh(mean)


class ActorAgent:
    """A behaviour policy as a rollout agent (:class:`frozen_dt.eval.rollout.Agent`): episode ``i`` draws its
    action noise from its own generator ``default_rng([seed, i])``, so the data does not depend on the vector width."""

    def __init__(self, policy: ActorPolicy, low: np.ndarray, high: np.ndarray, *, seed: int,
                 deterministic: bool = False):
        self.policy, self.low, self.high, self.seed, self.deterministic = policy, low, high, seed, deterministic
        self.rngs: dict[int, np.random.Generator] = {}

    @classmethod
    def for_task(cls, task: Task, policy: ActorPolicy, *, seed: int, env_version: str = "v5",
                 deterministic: bool = False) -> "ActorAgent":
        env = task.make_env(env_version)
        low, high = env.action_space.low, env.action_space.high
        env.close()
        return cls(policy, low, high, seed=seed, deterministic=deterministic)

    def start(self, slot: int, episode: int, goal=None) -> None:
        self.rngs[slot] = np.random.default_rng([self.seed, episode])

    def act(self, observations: np.ndarray, slots: np.ndarray) -> np.ndarray:
        noise = None if self.deterministic else np.stack([self.rngs[s].standard_normal(len(self.low)) for s in slots])
        return (self.low + (self.policy.act(observations, noise) + 1.0) * 0.5 * (self.high - self.low)).astype(np.float32)

    def observe(self, slots: np.ndarray, rewards: np.ndarray) -> None:
        pass
