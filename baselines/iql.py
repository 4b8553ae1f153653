"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2021) on the shared transition view and trainer.

Three losses per update, as in the paper and CORL's ``iql.py``:

* value: expectile regression of ``min(Q1_target, Q2_target)(s, a) - V(s)`` with expectile ``expectile`` (0.7);
* critics: MSE of ``Q_i(s, a)`` to ``r + discount * (1 - done) * V(s')``;
* actor: advantage-weighted regression, ``-exp(beta * (Q_target - V)) clipped at 100`` times the Gaussian policy's
  log-likelihood of the dataset action (a tanh mean and a state-independent log-std).

Target critics follow by Polyak averaging (``tau``); the actor's learning rate decays by a cosine schedule over the
run (``--deterministic-actor``: the weighted squared error of the mean instead of the log-likelihood, as CORL's
``iql_deterministic``). With ``--normalize-reward``, rewards are scaled by ``1000 / (max episode return - min episode return)``
(CORL's ``modify_reward``). The rollout agent acts with the policy mean.

Defaults (:class:`IQLConfig`): CORL's walker2d-medium-v2 config (tinkoff-ai/CORL configs/offline/iql/walker2d/
medium_v2.yaml): 2x256 MLPs, Adam lr 3e-4 for actor, critics and value, batch 256, discount 0.99, tau 0.005,
expectile (iql_tau) 0.7, beta 3.0, normalized states, no reward normalization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.baselines.common import (TwinCriticAlgorithm, TwinCriticConfig, batch_size_field, expectile_loss,
                                        hidden_dim_field, hidden_layers_field, lr_field, make_observation_agent, mlp,
                                        normalize_reward_field, obs_eps_field, optimizers_step, reward_scale,
                                        stack_batches)
from frozen_dt.data.views import TransitionView, sampled_on
from frozen_dt.settings import arg
from frozen_dt.training.stack import stacked_call


@dataclass
class IQLConfig(TwinCriticConfig):
    batch_size: int = batch_size_field(256)
    lr: float = lr_field(3e-4, "Adam learning rate of the actor, critics and value (the actor's decays by a cosine)")
    expectile: float = arg(0.7, "expectile of the value regression", check="open_unit")
    beta: float = arg(3.0, "inverse temperature of the advantage weights", check="non_negative")
    deterministic_actor: bool = arg(False, "advantage-weighted squared error of the actor's mean instead of its "
                                           "log-likelihood (CORL's iql_deterministic)")
    normalize_reward: bool = normalize_reward_field()
    hidden_dim: int = hidden_dim_field(256)
    hidden_layers: int = hidden_layers_field(2)
    obs_eps: float = obs_eps_field()


EXP_ADV_MAX = 100.0
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class GaussianPolicy(nn.Module):
    """``forward(obs)`` is the tanh-squashed mean (the action the agent takes); ``log_prob(obs, action)`` scores
    dataset actions under N(mean, exp(log_std))."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int):
        super().__init__()
        self.mean = mlp(obs_dim, act_dim, hidden, n_hidden, out_activation=nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.mean(observations)

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(self(observations), self.log_std, actions)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, exp(log_std clamped to [LOG_STD_MIN, LOG_STD_MAX])), summed over the action dims."""
    std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
    return torch.distributions.Normal(mean, std).log_prob(actions).sum(-1)


class IQLNetworks(nn.Module):
    """Everything IQL trains, in one module so checkpoints and parameter counts see it whole; ``forward`` is the
    policy's action (what evaluation rolls out)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int):
        super().__init__()
        self.actor = GaussianPolicy(obs_dim, act_dim, hidden, n_hidden)
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, n_hidden)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, n_hidden)
        self.value = mlp(obs_dim, 1, hidden, n_hidden)
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.actor(observations)


class IQL(TwinCriticAlgorithm):
    """:class:`frozen_dt.training.trainer.Algorithm` for :class:`IQLNetworks` on a :class:`TransitionView`."""

    def __init__(self, model: IQLNetworks, view: TransitionView, config: IQLConfig, *, steps: int,
                 reward_scale: float = 1.0, device: str | torch.device = "cpu"):
        super().__init__(model, view, batch_size=config.batch_size, tau=config.tau, device=device)
        self.obs_stats, self.discount = view.obs_stats, config.discount
        self.expectile, self.beta, self.reward_scale = config.expectile, config.beta, reward_scale
        self.deterministic = config.deterministic_actor
        self.value_opt = torch.optim.Adam(model.value.parameters(), lr=config.lr)
        self.q_opt = torch.optim.Adam([*model.q1.parameters(), *model.q2.parameters()], lr=config.lr)
        self.actor_opt = torch.optim.Adam(model.actor.parameters(), lr=config.lr)
        self.actor_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, max(steps, 1))

    def update(self, batch: dict) -> dict:
        return self.update_stack([self], [batch])[0]

    @staticmethod
    def update_stack(algorithms: list["IQL"], batches: list[dict], rngs=None) -> list[dict]:
        """One IQL update of each seed's instance (one seed: :meth:`update`). Tensors carry a leading seed dimension
        (N, B, ...); several seeds' networks run as batched calls (:func:`stacked_call`) and every loss is per seed
        (N,), each optimizer stepping its own seed's parameters on its own loss."""
        first = algorithms[0]
        models = [a.model for a in algorithms]
        for model in models:
            model.train()
        t = stack_batches(batches, first.device)
        obs, actions, next_obs = t["observations"], t["actions"], t["next_observations"]
        scales = torch.tensor([a.reward_scale for a in algorithms], device=first.device)[:, None]
        rewards, dones = t["rewards"] * scales, t["dones"]
        sa = torch.cat([obs, actions], -1)
        with torch.no_grad():
            target_q = torch.min(stacked_call([a.target_q[0] for a in algorithms], sa),
                                 stacked_call([a.target_q[1] for a in algorithms], sa)).squeeze(-1)
            next_v = stacked_call([m.value for m in models], next_obs).squeeze(-1)
        # value: expectile of the target critics' estimate
        advantage = target_q - stacked_call([m.value for m in models], obs).squeeze(-1)
        value_loss = expectile_loss(advantage, first.expectile)
        optimizers_step([a.value_opt for a in algorithms], value_loss)
        # critics: one-step backup through V(s')
        backup = rewards + first.discount * (1.0 - dones) * next_v
        q_loss = sum(((stacked_call(qs, sa).squeeze(-1) - backup) ** 2).mean(-1)
                     for qs in ([m.q1 for m in models], [m.q2 for m in models])) / 2
        optimizers_step([a.q_opt for a in algorithms], q_loss)
        for a in algorithms:
            a.update_targets()
        # actor: advantage-weighted regression
        weights = torch.exp(first.beta * advantage.detach()).clamp(max=EXP_ADV_MAX)
        mean = stacked_call([m.actor.mean for m in models], obs)
        if first.deterministic:  # CORL's iql_deterministic: squared error of the (tanh) mean
            bc_losses = ((mean - actions) ** 2).sum(-1)
        else:
            log_std = torch.stack([m.actor.log_std for m in models])[:, None]
            bc_losses = -gaussian_log_prob(mean, log_std, actions)
        actor_loss = (weights * bc_losses).mean(-1)
        optimizers_step([a.actor_opt for a in algorithms], actor_loss)
        for a in algorithms:
            a.actor_schedule.step()
        rows = torch.stack([value_loss, q_loss, actor_loss, advantage.mean(-1)], 1).detach()
        if rows.device.type == "cpu":
            rows = rows.tolist()  # floats; on an accelerator the tensors stay there until the trainer logs them
        return [dict(zip(("value_loss", "q_loss", "actor_loss", "advantage"), row)) for row in rows]

    def load_state_dict(self, state: dict) -> None:
        """Restore everything; the cosine horizon stays this run's ``steps`` (a run extended with ``--resume
        --steps N`` follows the cosine to N from where it stands)."""
        horizon = self.actor_schedule.T_max
        super().load_state_dict(state)
        self.actor_schedule.T_max = horizon

    def parts(self) -> dict:
        return {"model": self.model, "target_q": self.target_q, "value_opt": self.value_opt, "q_opt": self.q_opt,
                "actor_opt": self.actor_opt, "actor_schedule": self.actor_schedule}


def build_algorithm(config: IQLConfig, model, dataset, problem, run) -> IQL:
    return IQL(model, sampled_on(TransitionView(dataset, obs_eps=config.obs_eps), run), config, steps=run.steps, device=run.device,
               reward_scale=reward_scale(dataset) if config.normalize_reward else 1.0)


SPEC = AlgorithmSpec(
    name="iql", summary="Implicit Q-Learning",
    source="Kostrikov et al., 2022; CORL's locomotion configuration",
    config=IQLConfig,
    build_model=lambda config, problem, backbone=None: IQLNetworks(problem.obs_dim, problem.act_dim, config.hidden_dim,
                                                                   config.hidden_layers),
    build_algorithm=build_algorithm, make_agent=make_observation_agent, conditioning=("none",))
