"""Conservative Q-Learning (Kumar et al., 2020), the SAC-based continuous variant, on the shared transition view.

As CORL's ``cql.py`` runs it on D4RL locomotion (CQL(H) with importance sampling, fixed conservative weight):

* actor: a tanh-squashed Gaussian (3x256 ReLU trunk, log-std = ``a * raw + b`` with trainable scalars a=1, b=-1),
  loss ``alpha * log pi(a|s) - min Q(s, a~pi)``; ``alpha`` tuned towards entropy ``-act_dim``;
* critics: two 3x256 ReLU Q networks (orthogonal init), TD target ``r + discount * (1 - done) * min Q_target(s',
  a'~pi)`` (no entropy term in the backup), plus the conservative penalty
  ``cql_alpha * (logsumexp over {Q(s, a_rand) - log U, Q(s, a'~pi(s')) - log pi, Q(s, a~pi(s)) - log pi} - Q(s, a_data))``
  with ``cql_n_actions`` samples of each kind (uniform actions in [-1, 1]);
* target critics by Polyak averaging (``tau``) after every update. The rollout agent acts with ``tanh(mean)``.

Defaults (:class:`CQLConfig`): CORL's walker2d-medium-v2 config (tinkoff-ai/CORL configs/offline/cql/walker2d/
medium_v2.yaml): critics 3x256 with orthogonal init, actor 3x256, qf_lr 3e-4, policy_lr 3e-5 (also the entropy
temperature's), batch 256, discount 0.99, soft target rate 0.005 every update, cql_alpha 10 without the Lagrange
variant, cql_n_actions 10, importance sampling, no max-target backup, no entropy in the backup, automatic entropy
tuning, normalized states, no reward normalization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.baselines.common import (TwinCriticAlgorithm, TwinCriticConfig, as_tensors, batch_size_field,
                                        hidden_dim_field, hidden_layers_field, lr_field, make_observation_agent, mlp,
                                        no_param_grads, normalize_reward_field, obs_eps_field, optimizer_step,
                                        reward_scale, scale_last_layer)
from frozen_dt.data.views import TransitionView, sampled_on
from frozen_dt.settings import arg


@dataclass
class CQLConfig(TwinCriticConfig):
    batch_size: int = batch_size_field(256)
    lr: float = lr_field(3e-4, "Adam learning rate of the critics")
    actor_lr: float = lr_field(3e-5, "Adam learning rate of the actor and the entropy temperature")
    cql_alpha: float = arg(10.0, "weight of the conservative penalty", check="non_negative")
    cql_n_actions: int = arg(10, "sampled actions of each kind (random, policy at s, policy at s') per state",
                             check="positive")
    normalize_reward: bool = normalize_reward_field()
    hidden_dim: int = hidden_dim_field(256)
    hidden_layers: int = hidden_layers_field(3)
    obs_eps: float = obs_eps_field()

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class TanhGaussianPolicy(nn.Module):
    """``forward(obs)`` is the deterministic action ``tanh(mean)``; :meth:`sample` draws reparameterized actions
    with their log-probabilities (tanh change of variables included)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int):
        super().__init__()
        self.trunk = scale_last_layer(mlp(obs_dim, 2 * act_dim, hidden, n_hidden))
        self.log_std_scale = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def mean_log_std(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.trunk(observations).chunk(2, dim=-1)
        log_std = (self.log_std_scale * raw + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean_log_std(observations)[0])

    def sample(self, observations: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions (B, A), or (B, n, A) with ``n``, and their log-probabilities (B,) or (B, n)."""
        if n is not None:
            observations = observations.unsqueeze(1).expand(-1, n, -1)
        mean, log_std = self.mean_log_std(observations)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        action = torch.tanh(pre_tanh)
        gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(pre_tanh)
        # log(1 - tanh(x)^2), written stably as 2 * (log 2 - x - softplus(-2x))
        jacobian = 2.0 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))
        return action, (gaussian - jacobian).sum(-1)


class QNetwork(nn.Module):
    """Q(s, a) for actions (B, A) or several per state (B, n, A)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int):
        super().__init__()
        self.net = scale_last_layer(mlp(obs_dim + act_dim, 1, hidden, n_hidden), orthogonal=True)

    def forward(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if actions.dim() == 3:
            observations = observations.unsqueeze(1).expand(-1, actions.shape[1], -1)
        return self.net(torch.cat([observations, actions], -1)).squeeze(-1)


class CQLNetworks(nn.Module):
    """Everything CQL trains (actor, two critics, the entropy temperature); ``forward`` is the evaluation action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int):
        super().__init__()
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, hidden, n_hidden)
        self.q1 = QNetwork(obs_dim, act_dim, hidden, n_hidden)
        self.q2 = QNetwork(obs_dim, act_dim, hidden, n_hidden)
        self.log_alpha = nn.Parameter(torch.zeros(()))
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.actor(observations)

    def min_q(self, observations: torch.Tensor, actions: torch.Tensor, critics=None) -> torch.Tensor:
        q1, q2 = critics or (self.q1, self.q2)
        return torch.min(q1(observations, actions), q2(observations, actions))


class CQL(TwinCriticAlgorithm):
    """:class:`frozen_dt.training.trainer.Algorithm` for :class:`CQLNetworks` on a :class:`TransitionView`."""

    def __init__(self, model: CQLNetworks, view: TransitionView, config: CQLConfig, *, reward_scale: float = 1.0,
                 device: str | torch.device = "cpu"):
        super().__init__(model, view, batch_size=config.batch_size, tau=config.tau, device=device)
        self.obs_stats, self.discount = view.obs_stats, config.discount
        self.cql_alpha, self.cql_n_actions, self.reward_scale = config.cql_alpha, config.cql_n_actions, reward_scale
        self.target_entropy = -float(model.act_dim)
        self.actor_opt = torch.optim.Adam(model.actor.parameters(), lr=config.actor_lr)
        self.alpha_opt = torch.optim.Adam([model.log_alpha], lr=config.actor_lr)
        self.q_opt = torch.optim.Adam([*model.q1.parameters(), *model.q2.parameters()], lr=config.lr)

    def update(self, batch: dict) -> dict:
        self.model.train()
        m = self.model
        t = as_tensors(batch, self.device)
        obs, actions, next_obs = t["observations"], t["actions"], t["next_observations"]
        rewards, dones = t["rewards"] * self.reward_scale, t["dones"]

        # temperature and actor
        new_actions, log_pi = m.actor.sample(obs)
        alpha_loss = -(m.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        alpha = m.log_alpha.exp().detach()
        with no_param_grads(m.q1, m.q2):  # the actor's loss moves the actor only
            actor_loss = (alpha * log_pi - m.min_q(obs, new_actions)).mean()

        # critics: TD error plus the conservative penalty (actions sampled from the actor before its step, as CORL)
        with torch.no_grad():
            next_actions, _ = m.actor.sample(next_obs)
            backup = rewards + self.discount * (1.0 - dones) * m.min_q(next_obs, next_actions, self.target_q)
            n, act_dim = self.cql_n_actions, actions.shape[-1]
            random_actions = torch.empty(len(obs), n, act_dim, device=self.device).uniform_(-1.0, 1.0)
            current_actions, current_log_pi = m.actor.sample(obs, n)
            following_actions, following_log_pi = m.actor.sample(next_obs, n)
        log_uniform = act_dim * math.log(0.5)
        td_loss, penalty = 0.0, 0.0
        for q in (m.q1, m.q2):
            q_data = q(obs, actions)
            td_loss = td_loss + ((q_data - backup) ** 2).mean()
            proposals = torch.cat([q(obs, random_actions) - log_uniform, q(obs, following_actions) - following_log_pi,
                                   q(obs, current_actions) - current_log_pi], dim=1)
            penalty = penalty + (torch.logsumexp(proposals, dim=1) - q_data).mean()
        q_loss = td_loss + self.cql_alpha * penalty
        optimizer_step(self.alpha_opt, alpha_loss)
        optimizer_step(self.actor_opt, actor_loss)
        optimizer_step(self.q_opt, q_loss)
        self.update_targets()
        return {"actor_loss": actor_loss.item(), "q_loss": q_loss.item(), "td_loss": td_loss.item() / 2,
                "cql_penalty": penalty.item() / 2, "alpha": float(alpha), "log_pi": log_pi.mean().item()}

    def parts(self) -> dict:
        return {"model": self.model, "target_q": self.target_q, "actor_opt": self.actor_opt,
                "alpha_opt": self.alpha_opt, "q_opt": self.q_opt}


SPEC = AlgorithmSpec(
    name="cql", summary="Conservative Q-Learning (Kumar et al., 2020), CQL(H) on SAC, CORL's locomotion configuration",
    config=CQLConfig,
    build_model=lambda config, problem, backbone=None: CQLNetworks(problem.obs_dim, problem.act_dim, config.hidden_dim,
                                                                   config.hidden_layers),
    build_algorithm=lambda config, model, dataset, problem, run: CQL(
        model, sampled_on(TransitionView(dataset, obs_eps=config.obs_eps), run), config, device=run.device,
        reward_scale=reward_scale(dataset) if config.normalize_reward else 1.0),
    make_agent=make_observation_agent, conditioning=("none",))
