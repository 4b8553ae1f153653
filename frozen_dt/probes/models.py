"""The probe model and its four arms.

A probe model is ``input Linear(F, d) -> body (B, T, d) -> LayerNorm(d, no parameters) -> output Linear(d, P)``.
The two linear layers are the *interface* (the only trainable parameters of the frozen arms); the parameter-free
LayerNorm only rescales the body's un-normalised residual stream for the head. The body is one of:

* ``pretrained``: a frozen slice (``--backbone``, ``--layers``) of a text-pretrained LM (:func:`load_backbone`);
* ``random-init``: the same slice architecture freshly initialised by transformers' own init (seeded), frozen;
* ``random-transformer``: a *standard* pre-LN causal transformer (``torch.nn.TransformerEncoderLayer``, whose
  ``MultiheadAttention`` scales scores by 1/sqrt(d_k)) with fixed sinusoidal positions, randomly initialised
  (PyTorch's init, seeded) and frozen; width, depth, number of heads and MLP width matched to the slice;
* ``scratch``: the same standard transformer, trained from scratch together with the interface;
* ``shuffled``: the pretrained slice with each weight matrix's entries permuted (seeded), frozen: the pretrained
  entry distributions and norm gains survive, the learned structure does not;
* ``lstm``: FPT's control, a randomly initialised (PyTorch's init, seeded) frozen LSTM of the slice's width and
  depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from frozen_dt.errors import FrozenDTError

ARMS = ("pretrained", "random-init", "random-transformer", "scratch", "shuffled", "lstm")
SLICE_INITS = {"pretrained": "pretrained", "random-init": "random", "shuffled": "shuffled"}


class StandardTransformer(nn.Module):
    """A causal pre-LN transformer: sinusoidal positions, ``n_layers`` x (MHA with 1/sqrt(d_k), GELU MLP)."""

    def __init__(self, width: int, n_layers: int, n_heads: int, ff_width: int, max_len: int = 4096):
        super().__init__()
        if width % n_heads:
            raise FrozenDTError(f"width {width} is not divisible by {n_heads} heads")
        self.width = width
        layer = nn.TransformerEncoderLayer(width, n_heads, ff_width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10_000.0) * torch.arange(0, width, 2, dtype=torch.float32) / width)
        table = torch.zeros(max_len, width)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("positions", table, persistent=False)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        T = x.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=x.device, dtype=x.dtype)
        return self.encoder(x + self.positions[:T].to(x.dtype), mask=causal, is_causal=True)


class FrozenLSTM(nn.Module):
    """FPT's frozen random LSTM body: ``n_layers`` stacked LSTM layers of ``width`` units (PyTorch's init), frozen."""

    def __init__(self, width: int, n_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(width, width, num_layers=n_layers, batch_first=True)
        _freeze(self)  # no dropout, so train mode changes nothing (and cuDNN's LSTM backward needs it)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lstm(x)[0]


class ProbeModel(nn.Module):
    def __init__(self, body: nn.Module, width: int, in_features: int, out_bits: int):
        super().__init__()
        self.body = body
        self.input = nn.Linear(in_features, width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.head = nn.Linear(width, out_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.input(x), None)
        return self.head(self.norm(h.float()))

    def trainable_state_dict(self) -> dict:
        return {name: p.detach().clone() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict) -> None:
        expected = {name for name, p in self.named_parameters() if p.requires_grad}
        if set(state) != expected:
            raise FrozenDTError("the checkpoint's parameters do not match this probe model "
                                f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)


def _freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return module


def slice_shape(backbone: str, layers: str, seed: int = 0) -> dict:
    """Width, depth, heads and MLP width of a backbone slice (from its config)."""
    from frozen_dt.backbones.slice import load_backbone

    body = load_backbone(backbone, layers, init="random", seed=seed)
    config = body.config
    return {"width": body.width, "depth": body.layer_range[1] - body.layer_range[0],
            "heads": int(config.num_attention_heads), "ff_width": int(config.intermediate_size)}


def build_probe_model(arm: str, *, backbone: str, layers: str, seed: int, in_features: int, out_bits: int) -> ProbeModel:
    """The probe model of ``arm`` (see the module doc); torch's global seed should be set by the caller."""
    from frozen_dt.backbones.slice import load_backbone

    if arm not in ARMS:
        raise FrozenDTError(f"unknown arm {arm!r}: expected one of {', '.join(ARMS)}")
    if arm in SLICE_INITS:
        body = load_backbone(backbone, layers, init=SLICE_INITS[arm], freeze="all", seed=seed)
        width = body.width
    elif arm == "lstm":
        shape = slice_shape(backbone, layers, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            body = FrozenLSTM(shape["width"], shape["depth"])
        width = shape["width"]
    else:
        shape = slice_shape(backbone, layers, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            body = StandardTransformer(shape["width"], shape["depth"], shape["heads"], shape["ff_width"])
        width = shape["width"]
        if arm == "random-transformer":
            _freeze(body)
    return ProbeModel(body, width, in_features, out_bits)
