"""Behaviour cloning: an MLP from the (normalized) observation to the action, trained by MSE on the shared trainer.

The plain imitation baseline (CORL's ``any_percent_bc`` with 100 % of the data): 2 hidden layers of 256 ReLU units,
a tanh head, Adam. It needs observations and actions only, so it also trains on sources without rewards (the real
D4RL expert subsets in ``shared/realdata``). :class:`ObservationPolicyAgent` rolls any stateless observation ->
action policy out through the vectorized harness.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from frozen_dt.baselines.common import SavesParts, mlp, optimizer_step
from frozen_dt.dataset import ObsStats, OfflineDataset


class MLPPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, n_hidden: int = 2):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, n_hidden, out_activation=nn.Tanh())
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


class BehaviorCloning(SavesParts):
    """:class:`frozen_dt.trainer.Algorithm` for :class:`MLPPolicy` on a dataset's (observation, action) pairs."""

    def __init__(self, model: MLPPolicy, dataset: OfflineDataset, *, batch_size: int = 256, lr: float = 1e-3,
                 weight_decay: float = 0.0, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.obs_stats = ObsStats.from_observations(dataset.observations)
        self.observations = self.obs_stats.normalize(dataset.observations)
        self.actions = np.asarray(dataset.actions, dtype=np.float32)
        self.batch_size = batch_size
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)

    def sample_batch(self, rng: np.random.Generator) -> dict:
        idx = rng.integers(0, len(self.observations), size=self.batch_size)
        return {"observations": self.observations[idx], "actions": self.actions[idx]}

    def update(self, batch: dict) -> dict:
        self.model.train()
        obs = torch.as_tensor(batch["observations"], device=self.device)
        actions = torch.as_tensor(batch["actions"], device=self.device)
        loss = ((self.model(obs) - actions) ** 2).mean()
        optimizer_step(self.optimizer, loss)
        return {"loss": float(loss.detach())}

    def parts(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer}


class ObservationPolicyAgent:
    """A stateless policy as a rollout agent (fixed-shape blocks): ``model(normalized observation) -> action``, or
    ``model(observation, goal) -> action`` for goal-conditioned policies (the goal each slot's reset reported).
    ``obs_stats`` None: the model takes raw observations (and goals)."""

    def __init__(self, model: nn.Module, obs_stats: ObsStats | None):
        self.model, self.obs_stats = model, obs_stats
        self.device = next(model.parameters()).device
        self.goals: dict[int, np.ndarray] = {}

    def start(self, slot: int, episode: int, goal: np.ndarray | None = None) -> None:
        self.model.eval()
        if goal is not None:
            self.goals[slot] = self.normalize(goal[None])[0]

    def normalize(self, observations: np.ndarray) -> np.ndarray:
        observations = np.asarray(observations, dtype=np.float32)
        return observations if self.obs_stats is None else self.obs_stats.normalize(observations)

    def act(self, observations: np.ndarray, slots: np.ndarray) -> np.ndarray:
        from frozen_dt.eval.rollout import in_blocks

        inputs = [torch.as_tensor(self.normalize(observations), device=self.device)]
        if self.goals:
            inputs.append(torch.as_tensor(np.stack([self.goals[s] for s in slots]), device=self.device))
        with torch.no_grad():
            return in_blocks(self.model, *inputs).float().cpu().numpy()

    def observe(self, slots: np.ndarray, rewards: np.ndarray) -> None:
        pass
