"""The Decision Transformer of Chen et al. (2021), as kzl/decision-transformer's gym code builds it.

``DecisionTransformer`` follows ``gym/decision_transformer/models/decision_transformer.py`` with the GPT-2 of
``trajectory_gpt2.py`` (Hugging Face GPT-2 without position embeddings) written out in plain torch:

* a learned timestep table ``nn.Embedding(max_ep_len, width)`` added to the return, state and action embeddings
  (DT's only position signal); tokens interleaved (R_1, s_1, a_1, ...); ``embed_ln`` LayerNorm;
* GPT-2's embedding dropout, then pre-LN blocks (causal self-attention with ``n_head`` heads scaled by
  1/sqrt(head dim), attention and residual dropout; a 4x MLP with ReLU, as ``experiment.py`` configures
  ``activation_function='relu'``, ``n_inner=4*embed_dim``), GPT-2's final ``ln_f``;
* ``predict_action = Linear + Tanh`` on the state tokens; loss MSE on the real steps' actions
  (:class:`frozen_dt.sequence_models.SequenceModelAlgorithm`, shared with the frozen-LM DT).

Initialisation as the reference's: ``trajectory_gpt2.py``'s ``GPT2PreTrainedModel._init_weights`` for the blocks
(every weight matrix normal(0, 0.02) - the residual output projections too: that copy of GPT-2 predates the
1/sqrt(2 * n_layer) scaling of later transformers versions - zero biases, LayerNorms 1 and 0); the DT's own
embeddings and head keep PyTorch's defaults, because the reference's ``init_weights()`` runs inside ``GPT2Model`` only.

Left out because they never train: DT's unused ``predict_state``/``predict_return`` heads (the gym experiments put
no loss on them) and GPT-2's unused word/position tables. The parameter count therefore covers exactly the
weights that learn. Padded key positions are masked; each padded query still attends to itself so that no
attention row is empty (real tokens see exactly what GPT-2's additive mask lets them see).

Hyperparameters (:class:`DTConfig`): the DT paper's (kzl/decision-transformer gym/experiment.py: K=20, embed 128,
3 layers, 1 head, dropout 0.1, AdamW lr 1e-4, weight decay 1e-4, 10k warm-up steps, grad clip 0.25, batch 64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frozen_dt.algorithms import AlgorithmSpec
from frozen_dt.errors import FrozenDTError
from frozen_dt.sequence_models import (ReturnConditionedTransformer, SequenceConfig, build_sequence_algorithm,
                                       make_sequence_agent)
from frozen_dt.settings import arg


@dataclass
class DTConfig(SequenceConfig):
    embed_dim: int = arg(128, "transformer width", check="positive")
    dt_layers: int = arg(3, "transformer layers", check="positive")
    dt_heads: int = arg(1, "attention heads", check="positive")

    def validate(self) -> None:
        if self.embed_dim % self.dt_heads:
            raise FrozenDTError(f"--embed-dim {self.embed_dim} is not divisible by --dt-heads {self.dt_heads}")


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, n_head: int):
        super().__init__()
        if width % n_head:
            raise ValueError(f"width {width} is not divisible by {n_head} heads")
        self.n_head = n_head
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False,
                noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Attention output for every token, or with ``last_only`` for the last token alone (B, 1, d): keys and
        values of all tokens, the query of the last. ``noise``: the dropout masks of the attention probabilities
        (B, heads, T, T) and of the output (B, T, d), as GPT-2 drops them; without, no dropout (fused attention)."""
        b, t, d = x.shape
        if last_only:
            q = F.linear(x[:, -1:], self.c_attn.weight[:d], self.c_attn.bias[:d])
            k, v = F.linear(x, self.c_attn.weight[d:], self.c_attn.bias[d:]).split(d, -1)
            allowed = allowed[..., -1:, :]
        else:
            q, k, v = self.c_attn(x).split(d, -1)
        q, k, v = (y.reshape(b, y.shape[1], self.n_head, d // self.n_head).transpose(1, 2) for y in (q, k, v))
        if noise is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        else:  # GPT-2's eager attention: softmax of the scaled, masked scores, dropped, times the values
            scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
            y = (probs * noise[0].to(probs.dtype)).to(v.dtype) @ v
        out = self.c_proj(y.transpose(1, 2).reshape(b, q.shape[2], d))
        return out if noise is None else out * noise[1].to(out.dtype)


class Block(nn.Module):
    def __init__(self, width: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, n_head)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False,
                noise: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``noise``: this block's dropout masks (attention probabilities, attention output, MLP output)."""
        x = (x[:, -1:] if last_only else x) + self.attn(self.ln_1(x), allowed, last_only,
                                                         None if noise is None else noise[:2])
        out = self.mlp(self.ln_2(x))
        return x + (out if noise is None else out * noise[2].to(out.dtype))


class GPT(nn.Module):
    """GPT-2 blocks without token or position embeddings: ``(x (B, T, d), attention_mask (B, T)) -> (B, T, d)``.

    The final ``ln_f`` is the DT's output LayerNorm (applied by :class:`ReturnConditionedTransformer`), and the
    embedding dropout its input dropout, so this module is the blocks alone. Its dropout (attention probabilities,
    attention and MLP outputs, each with the DT's rate) comes in as masks drawn by the model
    (:meth:`DecisionTransformer.dropout_shapes`).
    """

    def __init__(self, width: int, n_layer: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.blocks = nn.ModuleList(Block(width, n_head) for _ in range(n_layer))
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(param)
            elif param.dim() > 1:  # trajectory_gpt2.py's _init_weights: normal(0, 0.02), no residual scaling
                nn.init.normal_(param, 0.0, 0.02)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, last_only: bool = False,
                noise: dict | None = None) -> torch.Tensor:
        """(B, T, d) hidden states; with ``last_only`` the last token's alone (B, 1, d), its last layer run for
        that token only (acting reads nothing else). ``noise``: the dropout masks by name (``attn<i>``,
        ``resid<i>``, ``mlp<i>`` for block i); None for none."""
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        allowed = causal & (attention_mask[:, None, :] | torch.eye(t, dtype=torch.bool, device=x.device))
        allowed = allowed[:, None]  # (B, 1, T, T), broadcast over heads
        for i, block in enumerate(self.blocks):
            masks = None if noise is None else (noise[f"attn{i}"], noise[f"resid{i}"], noise[f"mlp{i}"])
            x = block(x, allowed, last_only and i == len(self.blocks) - 1, masks)
        return x


class DecisionTransformer(ReturnConditionedTransformer):
    """DT (kzl/decision-transformer): ``forward(batch) -> actions (B, K, act)``, ``act(...)`` as its ``get_action``."""

    vmappable = True  # plain torch throughout, its dropout drawn up front: several seeds train as one vmapped call

    def __init__(self, obs_dim: int, act_dim: int, *, context: int, width: int, n_layer: int, n_head: int,
                 dropout: float, max_ep_len: int, goal_dim: int | None = None):
        super().__init__(obs_dim, act_dim, width, body=GPT(width, n_layer, n_head),
                         timestep_embedding=nn.Embedding(max_ep_len, width), context=context, dropout=dropout,
                         goal_dim=goal_dim)

    def dropout_shapes(self, batch_size: int) -> dict[str, tuple[int, ...]]:
        """The embeddings' mask, then each block's: attention probabilities, attention output, MLP output."""
        shapes, t = super().dropout_shapes(batch_size), 3 * self.context
        for i in range(len(self.body.blocks)):
            shapes.update({f"attn{i}": (batch_size, self.body.n_head, t, t), f"resid{i}": (batch_size, t, self.width),
                           f"mlp{i}": (batch_size, t, self.width)})
        return shapes

    def run_body(self, x: torch.Tensor, mask: torch.Tensor, noise: dict | None, last_only: bool = False):
        return self.body(x, mask, last_only=last_only, noise=noise)


def build_model(config: DTConfig, problem, backbone=None) -> DecisionTransformer:
    return DecisionTransformer(problem.obs_dim, problem.act_dim, context=config.context, width=config.embed_dim,
                               n_layer=config.dt_layers, n_head=config.dt_heads, dropout=config.dropout,
                               max_ep_len=problem.max_timestep, goal_dim=problem.goal_dim)


SPEC = AlgorithmSpec(
    name="dt", summary="the Decision Transformer, a small GPT trained from scratch",
    source="Chen et al., 2021; kzl/decision-transformer's gym recipe",
    config=DTConfig, build_model=build_model, build_algorithm=build_sequence_algorithm,
    make_agent=make_sequence_agent, conditioning=("returns", "goals"))
