"""Behaviour cloning: an MLP from the (normalized) observation to the action, trained by MSE on the shared trainer.

The plain imitation baseline, CORL's ``any_percent_bc`` with 100 % of the data (its defaults in :class:`BCConfig`):
2 hidden layers of 256 ReLU units, a tanh head, learning rate 3e-4, batch 256, no weight decay. It needs
observations and actions only, so it also trains on sources without rewards (the real D4RL expert subsets in
``shared/realdata``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.baselines.common import (SavesParts, batch_size_field, hidden_dim_field, hidden_layers_field, lr_field,
                                        make_observation_agent, mlp, obs_eps_field, optimizers_step, stack_batches)
from frozen_dt.data.views import DeviceSampler, PairView, sampled_on
from frozen_dt.settings import arg
from frozen_dt.training.stack import stacked_call
from frozen_dt.training.trainer import metric


@dataclass
class BCConfig:
    batch_size: int = batch_size_field(256)
    lr: float = lr_field(3e-4, "AdamW learning rate")
    weight_decay: float = arg(0.0, "AdamW weight decay", check="non_negative")
    hidden_dim: int = hidden_dim_field(256)
    hidden_layers: int = hidden_layers_field(2)
    obs_eps: float = obs_eps_field()


class MLPPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, n_hidden, out_activation=nn.Tanh())
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


class BehaviorCloning(SavesParts):
    """:class:`frozen_dt.training.trainer.Algorithm` for :class:`MLPPolicy` on a dataset's (observation, action)
    pairs."""

    def __init__(self, model: MLPPolicy, view: PairView | DeviceSampler, config: BCConfig, *,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.view, self.obs_stats = view, view.obs_stats
        self.batch_size = config.batch_size
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def sample_batch(self, rng: np.random.Generator) -> dict:
        return self.view.sample(self.batch_size, rng)

    def update(self, batch: dict) -> dict:
        return self.update_stack([self], [batch])[0]

    @staticmethod
    def update_stack(algorithms: list["BehaviorCloning"], batches: list[dict], rngs=None) -> list[dict]:
        """One update of each seed's policy (one seed: :meth:`update`); several seeds' policies as one vmapped
        call, each optimizer stepping its own seed on its own loss."""
        t = stack_batches(batches, algorithms[0].device)
        for a in algorithms:
            a.model.train()
        loss = ((stacked_call([a.model for a in algorithms], t["observations"]) - t["actions"]) ** 2).mean((-2, -1))
        optimizers_step([a.optimizer for a in algorithms], loss)
        return [{"loss": metric(value)} for value in loss.detach()]

    def parts(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer}


SPEC = AlgorithmSpec(
    name="bc", summary="behaviour cloning, an MLP regressing actions",
    source="CORL's any_percent_bc (Tarasov et al., 2022) on all of the data",
    config=BCConfig,
    build_model=lambda config, problem, backbone=None: MLPPolicy(problem.obs_dim, problem.act_dim, config.hidden_dim,
                                                                 config.hidden_layers),
    build_algorithm=lambda config, model, dataset, problem, run: BehaviorCloning(
        model, sampled_on(PairView(dataset, obs_eps=config.obs_eps), run), config, device=run.device),
    make_agent=make_observation_agent, conditioning=("none",))
