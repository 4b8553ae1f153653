"""Return-conditioned sequence models: the frozen-LM Decision Transformer and the base it shares with DT.

Both models read a K-step window as the Decision Transformer does: three tokens per step, interleaved as
``(R_1, s_1, a_1, R_2, s_2, a_2, ...)`` (3K tokens), each the sum of a linear embedding of its modality and an
embedding of the step's timestep; then an input LayerNorm, dropout, a causal transformer body, an output
LayerNorm, and a ``tanh`` action head read from the *state* tokens (the action of step t is predicted from
``R_1..s_t``). :class:`ReturnConditionedTransformer` holds all of that; the models differ in their body and their
timestep embedding:

* :class:`FrozenLMDecisionTransformer`: the body is a :class:`~frozen_dt.backbone_slice.FrozenSlice` of a
  text-pretrained LM (width d of the LM). The timestep embedding is a **fixed sinusoidal encoding** of the
  timestep (``timestep_features`` sin/cos pairs, periods 2*pi .. 2*pi*10000 as in "Attention is all you need")
  followed by a trainable ``Linear(timestep_features, d)``: ~82k parameters at d = 640, where DT's learned table
  ``nn.Embedding(1000, d)`` would cost 640k and dominate the thin interface. The encoding is smooth in t, so
  nearby timesteps share their embedding, and its size does not grow with the episode length.
* :class:`frozen_dt.baselines.dt.DecisionTransformer`: the DT paper's model (a small GPT trained from scratch,
  DT's learned ``nn.Embedding(max_ep_len, 128)`` timestep table).

Batches are dicts of tensors as :class:`~frozen_dt.views.SequenceView` samples them: ``observations`` (B, K, obs),
``actions`` (B, K, act), ``returns_to_go`` (B, K, 1), ``timesteps`` (B, K) int, ``mask`` (B, K) bool (left
padding = False). Observations are expected normalized and returns-to-go scaled; :meth:`act` takes the same.

Checkpoints hold :func:`trainable_state_dict`: everything except the tensors of the modules a model lists in
``frozen_modules`` (the LM slice), of which only parameters that train (``--freeze ln``/``none``) are kept.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalTimestepEmbedding(nn.Module):
    """Fixed sin/cos features of the timestep, projected to ``width`` by one trainable linear layer."""

    def __init__(self, width: int, features: int = 128, max_period: float = 10_000.0):
        super().__init__()
        if features <= 0 or features % 2:
            raise ValueError(f"timestep features must be a positive even number, got {features}")
        half = features // 2
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)  # derived, never checkpointed
        self.project = nn.Linear(features, width)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        angles = timesteps.to(torch.float32)[..., None] * self.frequencies
        return self.project(torch.cat([angles.sin(), angles.cos()], dim=-1))


def interleave(returns: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(B, K, d) x 3 -> (B, 3K, d) ordered R_1, s_1, a_1, R_2, ... (works for (B, K) masks too)."""
    stacked = torch.stack((returns, states, actions), dim=2)  # (B, K, 3, ...)
    return stacked.reshape(stacked.shape[0], -1, *stacked.shape[3:])


class ReturnConditionedTransformer(nn.Module):
    """DT-style embeddings, a causal ``body(x (B, T, d), attention_mask (B, T) bool, last_only=False) -> (B, T, d)``
    (with ``last_only``, the last token's (B, 1, d)), tanh head.

    With ``goal_dim`` the model is goal-conditioned: each step's first token embeds the goal (``batch["goals"]``,
    (B, K, goal_dim)) instead of the return-to-go.
    """

    frozen_modules: tuple[str, ...] = ()  # submodules whose tensors checkpoints leave out (trainable params excepted)

    def __init__(self, obs_dim: int, act_dim: int, width: int, *, body: nn.Module, timestep_embedding: nn.Module,
                 context: int, dropout: float = 0.1, input_ln: bool = True, output_ln: bool = True,
                 goal_dim: int | None = None):
        super().__init__()
        self.obs_dim, self.act_dim, self.width, self.context = int(obs_dim), int(act_dim), int(width), int(context)
        self.goal_dim = goal_dim
        self.embed_timestep = timestep_embedding
        if goal_dim is None:
            self.embed_return = nn.Linear(1, width)
        else:  # goal-conditioned (OGBench): the goal token takes the return token's place
            self.embed_goal = nn.Linear(goal_dim, width)
        self.embed_state = nn.Linear(obs_dim, width)
        self.embed_action = nn.Linear(act_dim, width)
        self.input_ln = nn.LayerNorm(width) if input_ln else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.body = body
        self.output_ln = nn.LayerNorm(width) if output_ln else nn.Identity()
        self.predict_action = nn.Sequential(nn.Linear(width, act_dim), nn.Tanh())

    def forward(self, batch: dict, last_step: bool = False) -> torch.Tensor:
        """Predicted actions (B, K, act_dim), one per step, each from that step's state token.

        With ``last_step`` only the last step's action (B, 1, act_dim), which is all acting needs: the window's
        final action token (after the last state token, so unseen by it) is left out, and the body returns the
        last token alone (``last_only``; DT's GPT runs its last layer for that one query, a frozen slice runs in
        full and is sliced). The result equals ``forward(batch)[:, -1:]`` up to float rounding.
        """
        time = self.embed_timestep(batch["timesteps"])
        condition = self.embed_return(batch["returns_to_go"]) if self.goal_dim is None else \
            self.embed_goal(batch["goals"])
        tokens = interleave(condition + time,
                            self.embed_state(batch["observations"]) + time,
                            self.embed_action(batch["actions"]) + time)
        mask = batch["mask"].to(torch.bool)
        mask = interleave(mask, mask, mask)
        x = self.drop(self.input_ln(tokens))
        if last_step:
            x, mask = x[:, :-1], mask[:, :-1]  # ends on the last state token
            return self.predict_action(self.output_ln(self.body(x, mask, last_only=True)))
        x = self.output_ln(self.body(x, mask))
        steps = x.shape[1] // 3
        state_tokens = x.reshape(x.shape[0], steps, 3, self.width)[:, :, 1]
        return self.predict_action(state_tokens)

    @torch.no_grad()
    def act(self, observations: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
            timesteps: torch.Tensor) -> torch.Tensor:
        """The next action (act_dim,) from an episode's history, as DT's ``get_action``.

        ``observations`` (T, obs) normalized, ``returns_to_go`` (T,) or (T, 1) scaled, ``timesteps`` (T,): the
        current step last. ``actions``: the T - 1 actions taken so far (a T-th row, a placeholder for the current
        action, is accepted and ignored: the state token precedes it). Only the last ``context`` steps are read;
        shorter histories are left-padded like the training windows.
        """
        t = observations.shape[0]
        if actions.shape[0] == t - 1:
            actions = torch.cat([actions, actions.new_zeros(1, self.act_dim)])
        k = min(t, self.context)
        pad = self.context - k
        device = self.embed_state.weight.device

        def window(x: torch.Tensor, dtype) -> torch.Tensor:
            x = x[-k:].to(device=device, dtype=dtype)
            return torch.cat([x.new_zeros((pad, *x.shape[1:])), x])[None]

        batch = {
            "observations": window(observations, torch.float32),
            "actions": window(actions, torch.float32),
            "returns_to_go": window(returns_to_go.reshape(-1, 1), torch.float32),
            "timesteps": window(timesteps.reshape(-1), torch.long),
            "mask": window(torch.ones(t, dtype=torch.bool), torch.bool),
        }
        return self(batch)[0, -1]


class FrozenLMDecisionTransformer(ReturnConditionedTransformer):
    """A Decision Transformer whose transformer is a frozen LM slice; only the thin interface around it trains.

    Trainable: the three modality embeddings, the timestep projection, the input/output LayerNorms and the action
    head (plus whatever the slice itself leaves trainable with ``freeze="ln"``/``"none"``).
    """

    frozen_modules = ("body",)

    def __init__(self, backbone: nn.Module, obs_dim: int, act_dim: int, *, context: int = 20,
                 timestep_features: int = 128, dropout: float = 0.1, input_ln: bool = True, output_ln: bool = True,
                 goal_dim: int | None = None):
        width = int(backbone.width)
        super().__init__(obs_dim, act_dim, width, body=backbone,
                         timestep_embedding=SinusoidalTimestepEmbedding(width, timestep_features),
                         context=context, dropout=dropout, input_ln=input_ln, output_ln=output_ln, goal_dim=goal_dim)


def param_counts(model: nn.Module) -> dict:
    """``trainable_params`` and ``frozen_params`` of ``model`` (shared parameters counted once)."""
    params = list(model.parameters())
    return {"trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "frozen_params": sum(p.numel() for p in params if not p.requires_grad)}


def _in_frozen_module(model: nn.Module, name: str) -> bool:
    return any(name.startswith(prefix + ".") for prefix in getattr(model, "frozen_modules", ()))


def trainable_state_dict(model: nn.Module) -> dict:
    """``model.state_dict()`` without the frozen modules' tensors (their trainable parameters stay)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: tensor for name, tensor in model.state_dict().items()
            if name in trainable or not _in_frozen_module(model, name)}


def load_trainable_state_dict(model: nn.Module, state: dict) -> None:
    """Load a :func:`trainable_state_dict`; every key the model expects outside the frozen modules must be there."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    missing = [k for k in missing if k in trainable or not _in_frozen_module(model, k)]
    if missing or unexpected:
        raise KeyError(f"checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def frozen_fingerprint(model: nn.Module) -> list[float]:
    """(sum, sum of squares) over the frozen parameters in float64: a cheap check that a run resumes on the same
    frozen weights, which its checkpoints do not hold."""
    frozen = [p.detach().double() for p in model.parameters() if not p.requires_grad]
    return [float(sum(p.sum() for p in frozen)), float(sum((p * p).sum() for p in frozen))]
