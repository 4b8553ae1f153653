"""Training and acting for DT-style sequence models (the DT baseline and the frozen-LM DT) under the shared trainer.

:class:`SequenceModelAlgorithm` implements :class:`frozen_dt.trainer.Algorithm` as kzl/decision-transformer's
``SequenceTrainer`` does: MSE between predicted and dataset actions over the real (unpadded) steps, AdamW over the
parameters that require grad, a linear warm-up ``lr * min((step + 1) / warmup_steps, 1)``, gradient-norm clipping.
On CUDA the forward pass runs under bf16 autocast (the loss is computed in float32); on CPU too with
``precision="bf16"`` (CPUs with bf16 matrix instructions run it faster).

:class:`ReturnConditionedAgent` rolls a trained model out in a vector of envs, one context window per env, as
DT's ``evaluate_episode_rtg`` does for one env.
"""

from __future__ import annotations

import numpy as np
import torch

from frozen_dt.dataset import ObsStats
from frozen_dt.models import ReturnConditionedTransformer, load_trainable_state_dict, trainable_state_dict
from frozen_dt.views import SequenceView


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast on CUDA always, on CPU with ``precision="bf16"``; otherwise a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=device.type == "cuda" or precision == "bf16")


def linear_warmup(warmup_steps: int):
    return lambda step: min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0


class SequenceModelAlgorithm:
    """A :class:`ReturnConditionedTransformer` trained on :class:`SequenceView` windows by action regression."""

    def __init__(self, model: ReturnConditionedTransformer, view: SequenceView, *, batch_size: int = 64,
                 lr: float = 1e-4, weight_decay: float = 1e-4, warmup_steps: int = 10_000, grad_clip: float = 0.25,
                 rtg_scale: float = 1000.0, max_timestep: int = 1000, device: str | torch.device = "cpu",
                 precision: str = "fp32"):
        self.device = torch.device(device)
        self.precision = precision
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
        with autocast(self.device, self.precision):
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


class ReturnConditionedAgent:
    """A return-conditioned sequence model as a batched rollout agent (:class:`frozen_dt.eval.rollout.Agent`).

    Each env slot keeps its own window of the last ``context`` steps (observations normalized with the training
    statistics, actions, scaled returns-to-go starting at ``target_return / rtg_scale`` and decreasing by each
    reward / ``rtg_scale``, timesteps capped as in training), left-padded with zeros and masked like the training
    windows, as DT's ``evaluate_episode_rtg``. All running slots are predicted in one forward pass, in fixed-shape
    blocks (a slot's action does not depend on how many slots ran with it).

    Goal-conditioned models (OGBench) get each episode's goal (normalized like the observations) in every step's
    goal token instead of a return-to-go.

    No key/value cache: a cached token's keys and values at layer >= 2 were computed while it attended to steps that
    have since left the window, so once the window slides a cache would no longer give the trained model's
    prediction. Every step therefore recomputes its window (60 tokens for K=20), batched over the envs.
    """

    def __init__(self, model: ReturnConditionedTransformer, obs_stats: ObsStats, rtg_scale: float,
                 target_return: float | None, *, max_timestep: int = 1000, precision: str = "fp32"):
        from frozen_dt.eval.rollout import BLOCK

        self.model, self.obs_stats, self.rtg_scale = model, obs_stats, rtg_scale
        self.goal_conditioned = model.goal_dim is not None  # goal tokens (from each reset's goal), no returns
        self.target = 0.0 if self.goal_conditioned else float(target_return) / rtg_scale
        self.max_timestep = max_timestep
        self.device = next(model.parameters()).device
        self.autocast = autocast(self.device, precision)
        self.block = BLOCK
        self.k, self.obs_dim, self.act_dim = model.context, model.obs_dim, model.act_dim
        self.windows: dict[int, dict] = {}

    def start(self, slot: int, episode: int, goal=None) -> None:
        self.model.eval()
        k = self.k
        self.windows[slot] = {"observations": np.zeros((k, self.obs_dim), np.float32),
                              "actions": np.zeros((k, self.act_dim), np.float32),
                              "returns_to_go": np.zeros((k, 1), np.float32), "timesteps": np.zeros(k, np.int64),
                              "mask": np.zeros(k, bool), "rtg": self.target, "t": 0}
        if self.goal_conditioned:
            if goal is None:
                raise ValueError("a goal-conditioned model needs each episode's goal")
            self.windows[slot].update(goals=np.zeros((k, self.obs_dim), np.float32),
                                      goal=self.obs_stats.normalize(np.asarray(goal, dtype=np.float32)))

    def act(self, observations: np.ndarray, slots: np.ndarray) -> np.ndarray:
        from frozen_dt.eval.rollout import in_blocks

        keys = ("observations", "actions", "returns_to_go", "timesteps", "mask") + (("goals",) if self.goal_conditioned
                                                                                      else ())
        normalized = self.obs_stats.normalize(np.asarray(observations, dtype=np.float32))
        for row, slot in enumerate(slots):
            w = self.windows[slot]
            for key in keys:  # slide by one step; the new step goes last
                w[key][:-1] = w[key][1:]
            w["observations"][-1] = normalized[row]
            w["actions"][-1] = 0.0  # the current action's placeholder (its token follows the state token)
            w["returns_to_go"][-1] = w["rtg"]
            w["timesteps"][-1] = min(w["t"], self.max_timestep - 1)
            w["mask"][-1] = True
            if self.goal_conditioned:
                w["goals"][-1] = w["goal"]
        batch = [torch.as_tensor(np.stack([self.windows[s][key] for s in slots])).to(self.device) for key in keys]

        def predict(*tensors):
            with self.autocast:
                return self.model(dict(zip(keys, tensors)), last_step=True)[:, -1].float()

        with torch.no_grad():
            actions = in_blocks(predict, *batch, block=self.block).cpu().numpy()
        for row, slot in enumerate(slots):
            self.windows[slot]["actions"][-1] = actions[row]
        return actions

    def observe(self, slots: np.ndarray, rewards: np.ndarray) -> None:
        for slot, reward in zip(slots, rewards):
            w = self.windows[slot]
            w["rtg"] -= float(reward) / self.rtg_scale
            w["t"] += 1
