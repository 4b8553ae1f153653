"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behaviour-cloning term, on the shared transition view and trainer.

As the paper and CORL's ``td3_bc.py``:

* critics Q1, Q2: MSE to ``r + discount * (1 - done) * min Q_target(s', a')`` with target policy smoothing,
  ``a' = clip(pi_target(s') + clip(policy_noise * N(0, 1), -noise_clip, noise_clip), -1, 1)``;
* actor (every ``policy_freq`` updates): ``-lambda * Q1(s, pi(s)) + (pi(s) - a)^2`` averaged, with
  ``lambda = alpha / mean |Q1(s, pi(s))|`` (detached), so the Q term is scale-free and alpha sets the balance;
* target actor and critics by Polyak averaging (``tau``) after each actor update. The agent acts with ``pi(s)``.

Defaults (:class:`TD3BCConfig`): CORL's walker2d-medium-v2 config (tinkoff-ai/CORL configs/offline/td3_bc/walker2d/
medium_v2.yaml): 2x256 ReLU MLPs, Adam lr 3e-4 for actor and critics, batch 256, discount 0.99, tau 0.005,
policy_noise 0.2, noise_clip 0.5, policy_freq 2, alpha 2.5, normalized states, no reward normalization.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.baselines.common import (TwinCriticAlgorithm, TwinCriticConfig, batch_size_field, hidden_dim_field,
                                        hidden_layers_field, lr_field, make_observation_agent, mlp, no_param_grads,
                                        obs_eps_field, optimizers_step, soft_update, stack_batches)
from frozen_dt.data.views import TransitionView, sampled_on
from frozen_dt.settings import arg
from frozen_dt.training.stack import stacked_call
from frozen_dt.training.trainer import metric


@dataclass
class TD3BCConfig(TwinCriticConfig):
    batch_size: int = batch_size_field(256)
    lr: float = lr_field(3e-4, "Adam learning rate of the actor and the critics")
    alpha: float = arg(2.5, "weight of the Q term against behaviour cloning (lambda = alpha / mean |Q|)",
                       check="non_negative")
    policy_noise: float = arg(0.2, "std of the target policy smoothing noise", check="non_negative")
    noise_clip: float = arg(0.5, "clip of the target policy smoothing noise", check="non_negative")
    policy_freq: int = arg(2, "critic updates per actor (and target) update", check="positive")
    hidden_dim: int = hidden_dim_field(256)
    hidden_layers: int = hidden_layers_field(2)
    obs_eps: float = obs_eps_field()


class TD3BCNetworks(nn.Module):
    """A deterministic tanh actor and two Q networks; ``forward`` is the evaluation action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, n_hidden: int):
        super().__init__()
        self.actor = mlp(obs_dim, act_dim, hidden, n_hidden, out_activation=nn.Tanh())
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, n_hidden)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, n_hidden)
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.actor(observations)


class TD3BC(TwinCriticAlgorithm):
    """:class:`frozen_dt.training.trainer.Algorithm` for :class:`TD3BCNetworks` on a :class:`TransitionView`."""

    def __init__(self, model: TD3BCNetworks, view: TransitionView, config: TD3BCConfig, *,
                 device: str | torch.device = "cpu"):
        super().__init__(model, view, batch_size=config.batch_size, tau=config.tau, device=device)
        self.obs_stats, self.config = view.obs_stats, config
        self.target_actor = copy.deepcopy(model.actor).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(model.actor.parameters(), lr=config.lr)
        self.q_opt = torch.optim.Adam([*model.q1.parameters(), *model.q2.parameters()], lr=config.lr)
        self.updates = 0

    def update(self, batch: dict) -> dict:
        return self.update_stack([self], [batch])[0]

    @staticmethod
    def update_stack(algorithms: list["TD3BC"], batches: list[dict], rngs=None) -> list[dict]:
        """One TD3+BC update of each seed's instance (one seed: :meth:`update`): tensors with a leading seed
        dimension, networks as batched calls (:func:`stacked_call`), each seed's smoothing noise drawn from its own
        torch RNG (``rngs``) and its actor's Q normalized by its own batch's mean |Q|."""
        first, n = algorithms[0], len(algorithms)
        rngs = rngs or [contextlib.nullcontext] * n
        c, models = first.config, [a.model for a in algorithms]
        for model in models:
            model.train()
        t = stack_batches(batches, first.device)
        obs, actions, next_obs = t["observations"], t["actions"], t["next_observations"]
        with torch.no_grad():
            draws = []
            for i, rng in enumerate(rngs):
                with rng():
                    draws.append(torch.randn_like(actions[i]))
            noise = (torch.stack(draws) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_actions = (stacked_call([a.target_actor for a in algorithms], next_obs) + noise).clamp(-1.0, 1.0)
            next_sa = torch.cat([next_obs, next_actions], -1)
            next_q = torch.min(stacked_call([a.target_q[0] for a in algorithms], next_sa),
                               stacked_call([a.target_q[1] for a in algorithms], next_sa)).squeeze(-1)
            backup = t["rewards"] + c.discount * (1.0 - t["dones"]) * next_q
        sa = torch.cat([obs, actions], -1)
        critic_loss = sum(((stacked_call(qs, sa).squeeze(-1) - backup) ** 2).mean(-1)
                          for qs in ([m.q1 for m in models], [m.q2 for m in models]))
        optimizers_step([a.q_opt for a in algorithms], critic_loss)
        for a in algorithms:
            a.updates += 1
        metrics = [{"critic_loss": metric(v)} for v in critic_loss]
        if first.updates % c.policy_freq == 0:
            pi = stacked_call([m.actor for m in models], obs)
            with no_param_grads(*(m.q1 for m in models)):  # the actor's loss moves the actor only
                q = stacked_call([m.q1 for m in models], torch.cat([obs, pi], -1)).squeeze(-1)
            lam = c.alpha / (q.abs().mean(-1).detach() + 1e-6)  # per seed
            q_term = -lam * q.mean(-1)
            bc_term = ((pi - actions) ** 2).mean((-2, -1))
            optimizers_step([a.actor_opt for a in algorithms], q_term + bc_term)
            for a in algorithms:
                soft_update(a.target_actor, a.model.actor, a.tau)
                a.update_targets()
            for row, qt, bc in zip(metrics, q_term, bc_term):
                row.update(actor_q_term=metric(qt), bc_loss=metric(bc))
        return metrics

    def parts(self) -> dict:
        return {"model": self.model, "target_q": self.target_q, "target_actor": self.target_actor,
                "actor_opt": self.actor_opt, "q_opt": self.q_opt}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.updates = int(state["updates"])


SPEC = AlgorithmSpec(
    name="td3bc", summary="TD3+BC, TD3 with a behaviour-cloning term in the actor's loss",
    source="Fujimoto & Gu, 2021; CORL's locomotion configuration",
    config=TD3BCConfig,
    build_model=lambda config, problem, backbone=None: TD3BCNetworks(problem.obs_dim, problem.act_dim,
                                                                     config.hidden_dim, config.hidden_layers),
    build_algorithm=lambda config, model, dataset, problem, run: TD3BC(
        model, sampled_on(TransitionView(dataset, obs_eps=config.obs_eps), run), config, device=run.device),
    make_agent=make_observation_agent, conditioning=("none",))
