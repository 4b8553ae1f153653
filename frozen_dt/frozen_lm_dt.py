"""The method: a Decision Transformer whose transformer is a frozen slice of a text-pretrained LM, of which only a
thin interface trains.

:class:`FrozenLMDecisionTransformer` is the DT-style model of :mod:`frozen_dt.sequence_models` with a
:class:`~frozen_dt.backbones.slice.FrozenSlice` as its body (width d of the LM). Its timestep embedding is a
**fixed sinusoidal encoding** of the timestep (``timestep_features`` sin/cos pairs, periods 2*pi .. 2*pi*10000 as
in "Attention is all you need") followed by a trainable ``Linear(timestep_features, d)``: ~82k parameters at
d = 640, where DT's learned table ``nn.Embedding(1000, d)`` would cost 640k and dominate the thin interface. The
encoding is smooth in t, so nearby timesteps share their embedding, and its size does not grow with the episode
length.

Trainable: the modality embeddings, the timestep projection, the input/output LayerNorms and the action head (plus
whatever the slice leaves trainable with ``freeze="ln"``/``"none"``). Checkpoints hold only those
(:func:`frozen_dt.parameters.trainable_state_dict`); the slice is reloaded from its package and checked against the
run's frozen fingerprint.

:class:`FrozenDTConfig`: the DT paper's optimisation (:class:`~frozen_dt.sequence_models.SequenceConfig`) and the
backbone: a frozen 5-layer slice of Gemma 3 270M, the setting quoted from Borrowed Geometry (2026) in
shared/ANCHORS.md (which 5 layers is not stated there; 0:5 is our choice).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.backbones.catalog import check_backbone_and_layers
from frozen_dt.errors import FrozenDTError
from frozen_dt.sequence_models import (ReturnConditionedTransformer, SequenceConfig, build_sequence_algorithm,
                                       make_sequence_agent)
from frozen_dt.settings import arg


@dataclass
class FrozenDTConfig(SequenceConfig):
    backbone: str = arg("gemma3-270m", "frozen LM backbone: gemma3-270m, smollm2-135m, minilm-l6 or hf:<id or path>")
    layers: str = arg("0:5", "slice of the backbone's layers, Python slice syntax a:b")
    init: str = arg("pretrained", "backbone weights: pretrained, the same architecture freshly initialized (random), "
                                  "or the pretrained weights with each matrix's entries permuted (shuffled)",
                    choices=("pretrained", "random", "shuffled"))
    freeze: str = arg("all", "what stays frozen: all, all but layer norms (ln, FPT-style), or nothing",
                      choices=("all", "ln", "none"))
    timestep_features: int = arg(128, "sinusoidal timestep features projected to the backbone width",
                                 check="positive")

    def validate(self) -> None:
        check_backbone_and_layers(self.backbone, self.layers)
        if self.timestep_features % 2:
            raise FrozenDTError(f"--timestep-features must be even (sin/cos pairs), got {self.timestep_features}")


class SinusoidalTimestepEmbedding(nn.Module):
    """Fixed sin/cos features of the timestep, projected to ``width`` by one trainable linear layer."""

    def __init__(self, width: int, features: int, max_period: float = 10_000.0):
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


class FrozenLMDecisionTransformer(ReturnConditionedTransformer):
    """A Decision Transformer whose transformer is a frozen LM slice; only the thin interface around it trains.

    Trainable: the three modality embeddings, the timestep projection, the input/output LayerNorms and the action
    head (plus whatever the slice itself leaves trainable with ``freeze="ln"``/``"none"``).
    """

    frozen_modules = ("body",)

    def __init__(self, backbone: nn.Module, obs_dim: int, act_dim: int, *, context: int,
                 timestep_features: int, dropout: float, input_ln: bool = True, output_ln: bool = True,
                 goal_dim: int | None = None):
        width = int(backbone.width)
        super().__init__(obs_dim, act_dim, width, body=backbone,
                         timestep_embedding=SinusoidalTimestepEmbedding(width, timestep_features),
                         context=context, dropout=dropout, input_ln=input_ln, output_ln=output_ln, goal_dim=goal_dim)


_SHARED_SLICES = weakref.WeakValueDictionary()  # pretrained, fully frozen slices in use, by what they are


def load_backbone(config: FrozenDTConfig, seed: int):
    """The run's slice. A pretrained slice that stays wholly frozen is the same for every seed: while one is in use
    (seeds stacked in one process) the same object is returned, so its weights are held once; a random-init slice
    (seeded) or one that trains is each seed's own."""
    from frozen_dt.backbones.slice import load_backbone as load

    key = (config.backbone, config.layers)
    if config.init == "pretrained" and config.freeze == "all":
        shared = _SHARED_SLICES.get(key)
        if shared is None:
            shared = _SHARED_SLICES[key] = load(config.backbone, config.layers, config.init, config.freeze, seed=seed)
        return shared
    return load(config.backbone, config.layers, config.init, config.freeze, seed=seed)


def build_model(config: FrozenDTConfig, problem, backbone) -> FrozenLMDecisionTransformer:
    if backbone.max_positions is not None and 3 * config.context > backbone.max_positions:
        raise FrozenDTError(f"--context {config.context} makes {3 * config.context} tokens, more than the "
                            f"{backbone.max_positions} learned positions of {config.backbone}")
    return FrozenLMDecisionTransformer(backbone, problem.obs_dim, problem.act_dim, context=config.context,
                                       timestep_features=config.timestep_features, dropout=config.dropout,
                                       goal_dim=problem.goal_dim)


SPEC = AlgorithmSpec(
    name="frozen-dt", summary="Decision Transformer on a frozen slice of a text-pretrained LM (this package's method)",
    source="this package; the DT recipe of kzl/decision-transformer, a frozen 5-layer Gemma slice as Borrowed Geometry (2026)",
    config=FrozenDTConfig, build_model=build_model, build_algorithm=build_sequence_algorithm,
    make_agent=make_sequence_agent, conditioning=("returns", "goals"), load_backbone=load_backbone,
    cuda_precision="bf16")
