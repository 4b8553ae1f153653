"""Models and algorithms for tests, built with their configs' defaults unless a test says otherwise."""

from __future__ import annotations

from frozen_dt.baselines.dt import DecisionTransformer, DTConfig
from frozen_dt.frozen_lm_dt import FrozenDTConfig, FrozenLMDecisionTransformer
from frozen_dt.sequence_models import SequenceConfig, SequenceModelAlgorithm


def make_dt(obs_dim: int, act_dim: int, **overrides) -> DecisionTransformer:
    """DT with DTConfig's defaults (``context``, ``width``, ``n_layer``, ``n_head``, ``dropout``, ``max_ep_len``
    overridable)."""
    c = DTConfig()
    kwargs = dict(context=c.context, width=c.embed_dim, n_layer=c.dt_layers, n_head=c.dt_heads, dropout=c.dropout,
                  max_ep_len=1000)
    return DecisionTransformer(obs_dim, act_dim, **{**kwargs, **overrides})


def make_frozen_dt(body, obs_dim: int, act_dim: int, **overrides) -> FrozenLMDecisionTransformer:
    """The frozen-LM DT around ``body`` with FrozenDTConfig's defaults."""
    c = FrozenDTConfig()
    kwargs = dict(context=c.context, timestep_features=c.timestep_features, dropout=c.dropout)
    return FrozenLMDecisionTransformer(body, obs_dim, act_dim, **{**kwargs, **overrides})


def sequence_algorithm(model, view, **config) -> SequenceModelAlgorithm:
    """DT-style training of ``model`` on ``view`` with SequenceConfig's defaults except ``config``."""
    return SequenceModelAlgorithm(model, view, SequenceConfig(**config))
