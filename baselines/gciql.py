"""Goal-conditioned IQL for OGBench, as OGBench's reference implementation (``impls/agents/gciql.py``) defines it.

On :class:`~frozen_dt.data.views.GoalView` batches (OGBench's goal mix; reward 0 at the goal, -1 elsewhere):

* value V(s, g): expectile (0.9) regression of ``min(Q1_target, Q2_target)(s, a, g) - V(s, g)`` on value goals;
* critics Q1, Q2: MSE to ``r + discount * mask * V(s', g)``;
* actor: DDPG+BC on actor goals. A Gaussian with unit standard deviation and mean ``mu(s, g)``;
  loss ``-min Q(s, clip(mu, -1, 1), g) / mean|Q| + alpha * -log N(a_data; mu, 1)``.

Networks are OGBench's: 3 hidden layers of 512 GELU units, LayerNorm after each activation in the value and critic
networks, a small last actor layer; one Adam (lr 3e-4) over everything, target critics by Polyak averaging.
Observations are not normalized (OGBench does not). The rollout agent acts with ``clip(mu(s, g), -1, 1)``.

Defaults (:class:`GCIQLConfig`): OGBench's ``get_config`` (seohongpark/ogbench impls/agents/gciql.py): lr 3e-4,
batch 1024, 3x512 MLPs, discount 0.99, tau 0.005, expectile 0.9, alpha 0.3 (impls/hyperparameters.sh sets 1.0 for
scene-play and cube-double-play: the recipe gciql-ogbench.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.baselines.common import (TwinCriticAlgorithm, TwinCriticConfig, batch_size_field, expectile_loss,
                                        hidden_dim_field, hidden_layers_field, lr_field, make_observation_agent, mlp,
                                        no_param_grads, optimizers_step, scale_last_layer, stack_batches)
from frozen_dt.data.views import GoalView, sampled_on
from frozen_dt.settings import arg
from frozen_dt.training.stack import stacked_call


@dataclass
class GCIQLConfig(TwinCriticConfig):
    batch_size: int = batch_size_field(1024)
    lr: float = lr_field(3e-4, "Adam learning rate (one optimizer over all networks)")
    expectile: float = arg(0.9, "expectile of the value regression", check="open_unit")
    alpha: float = arg(0.3, "behaviour-cloning coefficient of the DDPG+BC actor loss", check="non_negative")
    hidden_dim: int = hidden_dim_field(512)
    hidden_layers: int = hidden_layers_field(3)


class GoalConditionedNetworks(nn.Module):
    """V(s, g), Q1/Q2(s, a, g) and the actor mean mu(s, g); ``forward(obs, goals)`` is the evaluation action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int, goal_dim: int | None = None):
        super().__init__()
        goal_dim = obs_dim if goal_dim is None else goal_dim
        critic = dict(hidden=hidden, n_hidden=n_hidden, activation=nn.GELU, layer_norm=True)
        self.value = mlp(obs_dim + goal_dim, 1, **critic)
        self.q1 = mlp(obs_dim + goal_dim + act_dim, 1, **critic)
        self.q2 = mlp(obs_dim + goal_dim + act_dim, 1, **critic)
        self.actor = scale_last_layer(mlp(obs_dim + goal_dim, act_dim, hidden, n_hidden, activation=nn.GELU),
                                      gain=0.1)
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, observations: torch.Tensor, goals: torch.Tensor) -> torch.Tensor:
        return self.actor(torch.cat([observations, goals], -1)).clamp(-1.0, 1.0)


class GCIQL(TwinCriticAlgorithm):
    """:class:`frozen_dt.training.trainer.Algorithm` for :class:`GoalConditionedNetworks` on a :class:`GoalView`."""

    def __init__(self, model: GoalConditionedNetworks, view: GoalView, config: GCIQLConfig, *,
                 device: str | torch.device = "cpu"):
        super().__init__(model, view, batch_size=config.batch_size, tau=config.tau, device=device)
        self.obs_stats = None  # raw observations, as OGBench
        self.discount, self.expectile, self.alpha = config.discount, config.expectile, config.alpha
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

    def update(self, batch: dict) -> dict:
        return self.update_stack([self], [batch])[0]

    @staticmethod
    def update_stack(algorithms: list["GCIQL"], batches: list[dict], rngs=None) -> list[dict]:
        """One GCIQL update of each seed's instance (one seed: :meth:`update`): a leading seed dimension, networks as
        batched calls (:func:`stacked_call`), each seed's loss and actor normalization its own."""
        first, models = algorithms[0], [a.model for a in algorithms]
        for model in models:
            model.train()
        t = stack_batches(batches, first.device)
        obs, actions, value_goals, actor_goals = t["observations"], t["actions"], t["value_goals"], t["actor_goals"]

        def min_q(pairs, inputs):
            return torch.min(stacked_call([p[0] for p in pairs], inputs),
                             stacked_call([p[1] for p in pairs], inputs)).squeeze(-1)

        values, critics = [m.value for m in models], [(m.q1, m.q2) for m in models]
        with torch.no_grad():
            target_q = min_q([a.target_q for a in algorithms], torch.cat([obs, value_goals, actions], -1))
            next_v = stacked_call(values, torch.cat([t["next_observations"], value_goals], -1)).squeeze(-1)
        v = stacked_call(values, torch.cat([obs, value_goals], -1)).squeeze(-1)
        value_loss = expectile_loss(target_q - v, first.expectile)
        backup = t["rewards"] + first.discount * t["masks"] * next_v
        inputs = torch.cat([obs, value_goals, actions], -1)
        critic_loss = sum(((stacked_call([c[i] for c in critics], inputs).squeeze(-1) - backup) ** 2).mean(-1)
                          for i in (0, 1))
        mean = stacked_call([m.actor for m in models], torch.cat([obs, actor_goals], -1))
        with no_param_grads(*(q for pair in critics for q in pair)):  # the actor's loss moves the actor only
            q = min_q(critics, torch.cat([obs, actor_goals, mean.clamp(-1.0, 1.0)], -1))
        q_loss = -q.mean(-1) / (q.abs().mean(-1).detach() + 1e-6)
        log_prob = -0.5 * ((actions - mean) ** 2).sum(-1) - 0.5 * first.model.act_dim * math.log(2 * math.pi)
        bc_loss = -first.alpha * log_prob.mean(-1)
        optimizers_step([a.optimizer for a in algorithms], value_loss + critic_loss + q_loss + bc_loss)
        for a in algorithms:
            a.update_targets()
        names = ("value_loss", "critic_loss", "q_loss", "bc_loss", "v_mean")
        rows = torch.stack([value_loss, critic_loss, q_loss, bc_loss, v.mean(-1)], 1).detach()
        return [dict(zip(names, row.tolist() if row.device.type == "cpu" else row)) for row in rows]

    def parts(self) -> dict:
        return {"model": self.model, "target_q": self.target_q, "optimizer": self.optimizer}


SPEC = AlgorithmSpec(
    name="gciql", summary="goal-conditioned IQL with a DDPG+BC actor",
    source="OGBench's reference agent (Park et al., 2025; impls/agents/gciql.py)",
    config=GCIQLConfig,
    build_model=lambda config, problem, backbone=None: GoalConditionedNetworks(
        problem.obs_dim, problem.act_dim, config.hidden_dim, config.hidden_layers, goal_dim=problem.goal_dim),
    build_algorithm=lambda config, model, dataset, problem, run: GCIQL(
        model, sampled_on(GoalView(dataset, discount=config.discount), run), config, device=run.device),
    make_agent=make_observation_agent, conditioning=("goals",), raw_observations=True)
