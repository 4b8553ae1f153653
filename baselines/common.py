"""What the observation-policy baselines share (BC and the value-based IQL, CQL, GCIQL, TD3+BC): config fields,
networks, updates, batches, reward scaling, the twin-critic base and the rollout agent.

One definition each, so the algorithms differ only in their losses.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from frozen_dt.data.dataset import ObsStats
from frozen_dt.settings import arg


# --- config fields several baselines have (each algorithm passes its own default) ----------------------------------


@dataclass
class TwinCriticConfig:
    """The settings every twin-critic baseline has, with the same defaults (each algorithm's config adds its own)."""

    discount: float = arg(0.99, "discount factor", check="open_unit")
    tau: float = arg(0.005, "Polyak rate of the target critics", check="open_unit")


def batch_size_field(default: int):
    return arg(default, "batch size", check="positive")


def lr_field(default: float, what: str = "Adam learning rate"):
    return arg(default, what, check="positive")


def hidden_dim_field(default: int):
    return arg(default, "MLP width", check="positive")


def hidden_layers_field(default: int):
    return arg(default, "MLP hidden layers", check="positive")


def obs_eps_field():
    return arg(1e-3, "added to the observation std when normalizing observations (CORL's compute_mean_std eps)",
               check="positive", legacy=1e-6)


def normalize_reward_field():
    return arg(False, "scale rewards by 1000 / (max - min episode return), as CORL")


def mlp(in_dim: int, out_dim: int, hidden: int, n_hidden: int, out_activation: nn.Module | None = None,
        activation: type[nn.Module] = nn.ReLU, layer_norm: bool = False) -> nn.Sequential:
    """``n_hidden`` layers of width ``hidden`` (each: linear, ``activation``, then LayerNorm if ``layer_norm``, as
    OGBench's MLP), then a linear output (and ``out_activation``, if any)."""
    layers, width = [], in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(width, hidden), activation()]
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)


def scale_last_layer(net: nn.Sequential, gain: float = 1e-2, orthogonal: bool = False) -> nn.Sequential:
    """CORL's init: small last layer (xavier or orthogonal, gain 1e-2); with ``orthogonal``, the hidden layers
    orthogonal with gain sqrt(2); all biases of the layers it touches zero."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if orthogonal:
        for layer in linears[:-1]:
            nn.init.orthogonal_(layer.weight, gain=math.sqrt(2))
            nn.init.zeros_(layer.bias)
    (nn.init.orthogonal_ if orthogonal else nn.init.xavier_uniform_)(linears[-1].weight, gain=gain)
    nn.init.zeros_(linears[-1].bias)
    return net


@contextmanager
def no_param_grads(*modules: nn.Module):
    """Within the block, ``modules`` pass gradients to their inputs but collect none in their own parameters."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging: ``target <- (1 - tau) * target + tau * online``."""
    for p_t, p in zip(target.parameters(), online.parameters()):
        p_t.mul_(1.0 - tau).add_(p, alpha=tau)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss: weight ``expectile`` where ``diff > 0``, ``1 - expectile`` elsewhere; the mean over
    the last dimension (a batch (B,) -> a scalar; seeds' batches (N, B) -> one loss per seed)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff**2).mean(-1)


class MethodCall(nn.Module):
    """``module.<name>(...)`` as a module's forward, so that :func:`~frozen_dt.training.stack.stacked_call` can batch a method other than
    ``forward`` (its parameters are the wrapped module's, under ``module.``)."""

    def __init__(self, module: nn.Module, name: str):
        super().__init__()
        self.module, self.name = module, name

    def forward(self, *inputs):
        return getattr(self.module, self.name)(*inputs)


def stack_batches(batches: list[dict], device: torch.device) -> dict:
    """Several seeds' numpy batches as float32 tensors with a leading seed dimension (N, B, ...)."""
    return {k: torch.stack([torch.as_tensor(b[k], device=device, dtype=torch.float32) for b in batches])
            for k in batches[0]}


def optimizers_step(optimizers: list[torch.optim.Optimizer], losses: torch.Tensor) -> None:
    """One step of each seed's optimizer on its own loss (``losses`` (N,); their sum back-propagates once: each
    seed's parameters get exactly their own loss's gradient)."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    for optimizer in optimizers:
        optimizer.step()


def reward_scale(dataset) -> float:
    """CORL's locomotion reward normalization: 1000 / (max - min episode return)."""
    returns = dataset.episode_returns()
    spread = float(returns.max() - returns.min()) if len(returns) else 0.0
    return 1000.0 / spread if spread > 0 else 1.0


class SavesParts:
    """``state_dict``/``load_state_dict`` over the modules, optimizers and schedulers that ``parts()`` names."""

    def parts(self) -> dict:
        raise NotImplementedError

    def all_parts(self) -> dict:
        """``parts()``, and a device sampler's generator (``--device-sampling``) when the algorithm has one."""
        parts = dict(self.parts())
        if hasattr(getattr(self, "view", None), "state_dict"):
            parts["sampler"] = self.view
        return parts

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.all_parts().items()}

    def load_state_dict(self, state: dict) -> None:
        for name, part in self.all_parts().items():
            part.load_state_dict(state[name])


class TwinCriticAlgorithm(SavesParts):
    """What IQL, CQL and GCIQL share: the model on its device, batches from a view, and Polyak-averaged target copies
    of the model's twin critics ``q1``/``q2`` (:meth:`update_targets` after each update)."""

    def __init__(self, model: nn.Module, view, *, batch_size: int, tau: float, device: str | torch.device):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.view, self.batch_size, self.tau = view, batch_size, tau
        self.target_q = copy.deepcopy(nn.ModuleList([model.q1, model.q2])).requires_grad_(False)

    def sample_batch(self, rng) -> dict:
        return self.view.sample(self.batch_size, rng)

    def update_targets(self) -> None:
        soft_update(self.target_q, nn.ModuleList([self.model.q1, self.model.q2]), self.tau)


def make_observation_agent(config, model, obs_stats, problem, target=None, precision: str = "fp32"):
    """The spec's ``make_agent`` of every observation policy (no return target; bf16 is not used for MLPs)."""
    return ObservationPolicyAgent(model, obs_stats)


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
