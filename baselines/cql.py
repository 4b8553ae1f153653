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

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.baselines.common import (MethodCall, TwinCriticAlgorithm, TwinCriticConfig, batch_size_field,
                                        hidden_dim_field, hidden_layers_field, lr_field, make_observation_agent, mlp,
                                        no_param_grads, normalize_reward_field, obs_eps_field, optimizers_step,
                                        reward_scale, scale_last_layer, stack_batches)
from frozen_dt.data.views import TransitionView, sampled_on
from frozen_dt.settings import arg
from frozen_dt.training.stack import stacked_call


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
        return tanh_gaussian(mean, log_std, torch.randn_like(mean))


def tanh_gaussian(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reparameterized action ``tanh(mean + std * noise)`` and its log-probability (tanh change of variables
    included), summed over the action dims."""
    pre_tanh = mean + log_std.exp() * noise
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
        return self.update_stack([self], [batch])[0]

    @staticmethod
    def update_stack(algorithms: list["CQL"], batches: list[dict], rngs=None) -> list[dict]:
        """One CQL update of each seed's instance (one seed: :meth:`update`): a leading seed dimension, networks as
        batched calls (:func:`stacked_call`), each seed's random draws (its actions' noise, the uniform proposals)
        from its own torch RNG in the order one seed's update draws them, each loss and temperature its own."""
        first, n_seeds = algorithms[0], len(algorithms)
        rngs = rngs or [contextlib.nullcontext] * n_seeds
        models = [a.model for a in algorithms]
        for model in models:
            model.train()
        t = stack_batches(batches, first.device)
        obs, actions, next_obs = t["observations"], t["actions"], t["next_observations"]
        scales = torch.tensor([a.reward_scale for a in algorithms], device=first.device)[:, None]
        rewards, dones = t["rewards"] * scales, t["dones"]
        b, n, act_dim = obs.shape[1], first.cql_n_actions, actions.shape[-1]
        draws = []
        for rng in rngs:
            with rng():
                draws.append((torch.randn(b, act_dim, device=first.device), torch.randn(b, act_dim, device=first.device),
                              torch.empty(b, n, act_dim, device=first.device).uniform_(-1.0, 1.0),
                              torch.randn(b, n, act_dim, device=first.device),
                              torch.randn(b, n, act_dim, device=first.device)))
        noise = [torch.stack(d) for d in zip(*draws)]
        heads = [MethodCall(m.actor, "mean_log_std") for m in models]

        def per_state(head, n_samples):  # one state's distribution, for each of its n_samples actions
            return [h.detach().unsqueeze(2).expand(-1, -1, n_samples, -1) for h in head]

        q1s, q2s = [m.q1 for m in models], [m.q2 for m in models]
        targets = ([a.target_q[0] for a in algorithms], [a.target_q[1] for a in algorithms])

        def min_q(critics, o, a):
            return torch.min(stacked_call(critics[0], o, a), stacked_call(critics[1], o, a))

        # temperature and actor
        at_obs = stacked_call(heads, obs)  # the actor runs once per state; its n proposals share the head's output
        new_actions, log_pi = tanh_gaussian(*at_obs, noise[0])
        log_alpha = torch.stack([m.log_alpha for m in models])[:, None]
        alpha_loss = -(log_alpha * (log_pi.detach() + first.target_entropy)).mean(-1)
        alpha = log_alpha.exp().detach()
        with no_param_grads(*q1s, *q2s):  # the actor's loss moves the actor only
            actor_loss = (alpha * log_pi - min_q((q1s, q2s), obs, new_actions)).mean(-1)

        # critics: TD error plus the conservative penalty (actions sampled from the actor before its step, as CORL)
        with torch.no_grad():
            at_next_obs = stacked_call(heads, next_obs)
            next_actions, _ = tanh_gaussian(*at_next_obs, noise[1])
            backup = rewards + first.discount * (1.0 - dones) * min_q(targets, next_obs, next_actions)
            random_actions = noise[2]
            current_actions, current_log_pi = tanh_gaussian(*per_state(at_obs, n), noise[3])
            following_actions, following_log_pi = tanh_gaussian(*per_state(at_next_obs, n), noise[4])
        log_uniform = act_dim * math.log(0.5)
        td_loss, penalty = 0.0, 0.0
        for qs in (q1s, q2s):
            q_data = stacked_call(qs, obs, actions)
            td_loss = td_loss + ((q_data - backup) ** 2).mean(-1)
            proposals = torch.cat([stacked_call(qs, obs, random_actions) - log_uniform,
                                   stacked_call(qs, obs, following_actions) - following_log_pi,
                                   stacked_call(qs, obs, current_actions) - current_log_pi], dim=2)
            penalty = penalty + (torch.logsumexp(proposals, dim=2) - q_data).mean(-1)
        q_loss = td_loss + first.cql_alpha * penalty
        optimizers_step([a.alpha_opt for a in algorithms], alpha_loss)
        optimizers_step([a.actor_opt for a in algorithms], actor_loss)
        optimizers_step([a.q_opt for a in algorithms], q_loss)
        for a in algorithms:
            a.update_targets()
        names = ("actor_loss", "q_loss", "td_loss", "cql_penalty", "alpha", "log_pi")
        rows = torch.stack([actor_loss, q_loss, td_loss / 2, penalty / 2, alpha[:, 0], log_pi.mean(-1)], 1).detach()
        return [dict(zip(names, row.tolist() if row.device.type == "cpu" else row)) for row in rows]

    def parts(self) -> dict:
        return {"model": self.model, "target_q": self.target_q, "actor_opt": self.actor_opt,
                "alpha_opt": self.alpha_opt, "q_opt": self.q_opt}


SPEC = AlgorithmSpec(
    name="cql", summary="Conservative Q-Learning, CQL(H) on SAC",
    source="Kumar et al., 2020; CORL's locomotion configuration",
    config=CQLConfig,
    build_model=lambda config, problem, backbone=None: CQLNetworks(problem.obs_dim, problem.act_dim, config.hidden_dim,
                                                                   config.hidden_layers),
    build_algorithm=lambda config, model, dataset, problem, run: CQL(
        model, sampled_on(TransitionView(dataset, obs_eps=config.obs_eps), run), config, device=run.device,
        reward_scale=reward_scale(dataset) if config.normalize_reward else 1.0),
    make_agent=make_observation_agent, conditioning=("none",))
