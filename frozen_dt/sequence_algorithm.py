"""Training and acting for DT-style sequence models (the DT baseline and the frozen-LM DT) under the shared trainer.

:class:`SequenceModelAlgorithm` implements :class:`frozen_dt.trainer.Algorithm` as kzl/decision-transformer's
``SequenceTrainer`` does: MSE between predicted and dataset actions over the real (unpadded) steps, AdamW over the
parameters that require grad, a linear warm-up ``lr * min((step + 1) / warmup_steps, 1)``, gradient-norm clipping.
On CUDA the forward pass runs under bf16 autocast (the loss is computed in float32).

:class:`ReturnConditionedPolicy` rolls a trained model out: it keeps the episode's history, normalizes
observations with the training data's statistics, scales the target return by ``rtg_scale`` and subtracts each
reward from it, as DT's ``evaluate_episode_rtg``.
"""

from __future__ import annotations

import numpy as np
import torch

from frozen_dt.dataset import ObsStats
from frozen_dt.models import ReturnConditionedTransformer, load_trainable_state_dict, trainable_state_dict
from frozen_dt.views import SequenceView


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def linear_warmup(warmup_steps: int):
    return lambda step: min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0


class SequenceModelAlgorithm:
    """A :class:`ReturnConditionedTransformer` trained on :class:`SequenceView` windows by action regression."""

    def __init__(self, model: ReturnConditionedTransformer, view: SequenceView, *, batch_size: int = 64,
                 lr: float = 1e-4, weight_decay: float = 1e-4, warmup_steps: int = 10_000, grad_clip: float = 0.25,
                 rtg_scale: float = 1000.0, max_timestep: int = 1000, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.view = view
        self.batch_size = batch_size
        self.grad_clip = grad_clip
        self.rtg_scale = rtg_scale
        self.max_timestep = max_timestep
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_warmup(warmup_steps))

    def sample_batch(self, rng: np.random.Generator) -> dict:
        return self.view.sample(self.batch_size, rng)

    def loss(self, batch: dict) -> torch.Tensor:
        tensors = {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}
        with autocast(self.device):
            predicted = self.model(tensors)
        mask = tensors["mask"].to(torch.bool)
        return ((predicted.float() - tensors["actions"]) ** 2)[mask].mean()

    def update(self, batch: dict) -> dict:
        self.model.train()
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": float(lr)}

    def state_dict(self) -> dict:
        return {"model": trainable_state_dict(self.model), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        load_trainable_state_dict(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def policy(self) -> "ReturnConditionedPolicy":
        return ReturnConditionedPolicy(self.model, self.view.obs_stats, self.rtg_scale, self.max_timestep)


class ReturnConditionedPolicy:
    """``reset(target_return)``, then per step ``act(observation) -> action`` and ``record(reward)``."""

    def __init__(self, model: ReturnConditionedTransformer, obs_stats: ObsStats, rtg_scale: float,
                 max_timestep: int = 1000):
        self.model = model
        self.obs_stats = obs_stats
        self.rtg_scale = rtg_scale
        self.max_timestep = max_timestep  # timesteps are capped as in training (SequenceView)
        self.device = next(model.parameters()).device

    def reset(self, target_return: float) -> None:
        self.model.eval()
        self.observations, self.actions, self.returns_to_go = [], [], [target_return / self.rtg_scale]

    def act(self, observation: np.ndarray) -> np.ndarray:
        self.observations.append(self.obs_stats.normalize(np.asarray(observation, dtype=np.float32)))
        t = len(self.observations)
        history = self.observations[-self.model.context:]
        start = t - len(history)
        with autocast(self.device):
            action = self.model.act(
                torch.as_tensor(np.stack(history)),
                torch.as_tensor(np.asarray(self.actions[start:], dtype=np.float32).reshape(-1, self.model.act_dim)),
                torch.as_tensor(np.asarray(self.returns_to_go[start:], dtype=np.float32)),
                torch.arange(start, t).clamp(max=self.max_timestep - 1))
        action = action.float().cpu().numpy()
        self.actions.append(action)
        return action

    def record(self, reward: float) -> None:
        self.returns_to_go.append(self.returns_to_go[-1] - float(reward) / self.rtg_scale)
