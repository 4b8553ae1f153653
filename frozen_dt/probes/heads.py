"""Per-head measurements: a text token-copying score, task ablation, and their comparison.

**Copy probe** (``frozen-dt heads copy-probe``). The 100 English sentences of ``copy_sentences.json`` (written
for frozen-dt; each repeats at least one word) are tokenized with the backbone's own tokenizer (GGUF backbones:
transformers reads the tokenizer from the GGUF file) and run through the backbone's **full pretrained model**
(word embeddings, all layers, eager attention so that attention weights are returned). A
:class:`~frozen_dt.backbones.slice.FrozenSlice` has no word-embedding table and its first layer would not see the
residual stream the earlier layers build, so the probe uses the whole model and scores the heads of layers
``--layers``. For every token at position j whose token id occurred earlier, at position i (the *most recent*
earlier occurrence) with i + 1 < j, the copy target is i + 1, the token that followed the earlier occurrence
(the induction pattern "A B ... A -> B"). A head's score in one sentence is its attention weight from j to i + 1,
averaged over the sentence's repeated tokens; its copy score is the mean over the sentences that have at least
one. ``ratio_to_mean`` divides by the mean score of all scored heads. Special tokens (BOS/CLS/SEP) never count.
BERT-type backbones (minilm-l6) attend in both directions in their full model; the score is still defined.

**Ablation** (``frozen-dt heads ablate RUN_DIR``). The output projection of an attention block (``o_proj`` in
Gemma/Llama, ``attention.output.dense`` in BERT) takes the concatenation of the heads' outputs; a forward
pre-hook zeroes head h's slice ``[h*d_head, (h+1)*d_head)`` of that input, which removes exactly that head's
contribution (its value-weighted sum) from the residual stream. Each head is zeroed alone and the per-bit test
error of the trained probe is measured again on the run's fixed test set; ``delta_err_<set>`` is the change.

**Compare** (``frozen-dt heads compare``): joins both tables on the head (``L<layer>.<head>``, absolute layer
index in the full model), ranks heads on each measurement (rank 1 = highest copy score / largest error
increase), reports Spearman's rank correlation (scipy), and writes a Markdown table, a CSV and a scatter plot.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_path, atomic_write_text
from frozen_dt.run_dir import read_csv, write_csv


@dataclass
class HeadSite:
    """An attention block: its absolute layer index, the projection fed the concatenated heads, the head sizes."""

    layer: int
    projection: nn.Linear
    n_heads: int
    head_dim: int


def head_name(layer: int, head: int) -> str:
    return f"L{layer}.{head}"


def attention_sites(body: nn.Module, first_layer: int = 0) -> list[HeadSite]:
    """The attention blocks of a HF slice (Gemma/Llama ``self_attn.o_proj``; BERT ``attention.output.dense``)."""
    sites = []
    for name, module in body.named_modules():
        numbers = re.findall(r"\.(\d+)\.", f".{name}.")
        if not numbers:
            continue
        layer = first_layer + int(numbers[0])
        if isinstance(getattr(module, "o_proj", None), nn.Linear) and hasattr(module, "head_dim"):
            n_heads = module.o_proj.in_features // module.head_dim
            sites.append(HeadSite(layer, module.o_proj, n_heads, module.head_dim))
        elif hasattr(module, "self") and hasattr(getattr(module, "self"), "attention_head_size") \
                and isinstance(getattr(getattr(module, "output", None), "dense", None), nn.Linear):
            sites.append(HeadSite(layer, module.output.dense, module.self.num_attention_heads,
                                  module.self.attention_head_size))
    if not sites:
        raise FrozenDTError(f"cannot find per-head attention projections in {type(body).__name__} (supported: "
                            "Gemma/Llama-style o_proj, BERT-style attention.output.dense)")
    return sites


@contextmanager
def ablated(sites: list[HeadSite], heads: set[tuple[int, int]]):
    """Within the block, the heads ``{(layer, head)}`` contribute nothing (their slice of the projection input is 0)."""
    handles = []
    try:
        for site in sites:
            chosen = [h for (layer, h) in heads if layer == site.layer]
            if not chosen:
                continue

            def zero(module, args, chosen=chosen, d=site.head_dim):
                x = args[0].clone()
                for h in chosen:
                    x[..., h * d:(h + 1) * d] = 0
                return (x, *args[1:])

            handles.append(site.projection.register_forward_pre_hook(zero))
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- copy score ---------------------------------------------------------------------------------------------------


def copy_targets(token_ids, special=()) -> list[tuple[int, int]]:
    """(j, i + 1) for every position j whose token occurred before at i (most recent) with i + 1 < j."""
    last, pairs = {}, []
    for j, token in enumerate(token_ids):
        if token in special:
            continue
        i = last.get(token)
        if i is not None and i + 1 < j:
            pairs.append((j, i + 1))
        last[token] = j
    return pairs


def sentence_copy_scores(attentions: np.ndarray, token_ids, special=()) -> np.ndarray | None:
    """Per-head copy score of one sentence from its attention weights ``(layers, heads, T, T)`` (query, key);
    None if the sentence has no repeated token."""
    return pair_scores(attentions, copy_targets(list(token_ids), special))


def pair_scores(attentions: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray | None:
    """Per-head mean attention weight over the (query, key) ``pairs`` of ``(layers, heads, T, T)`` weights; None
    when there are no pairs."""
    if not pairs:
        return None
    rows = np.array([j for j, _ in pairs])
    cols = np.array([k for _, k in pairs])
    return attentions[:, :, rows, cols].mean(axis=-1)


def sentences(path: str | None = None) -> list[str]:
    try:
        text = Path(path).expanduser().read_text() if path else \
            resources.files("frozen_dt.probes").joinpath("copy_sentences.json").read_text()
        items = json.loads(text)
    except FileNotFoundError:
        raise FrozenDTError(f"no such sentences file: {path}") from None
    except json.JSONDecodeError as error:
        raise FrozenDTError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(items, list) or not items or not all(isinstance(s, str) for s in items):
        raise FrozenDTError(f"{path}: expected a JSON list of sentences")
    return items


def load_full_model(backbone: str):
    """(full pretrained model with eager attention, tokenizer) of a named or hf: backbone."""
    from frozen_dt.backbones.slice import _load_pretrained, _offline_kwargs, _package_version, _transformers, \
        _weights_location
    from frozen_dt.backbones.catalog import BACKBONES, HF_PREFIX

    if backbone.startswith(HF_PREFIX):
        local = Path(backbone[len(HF_PREFIX):]).expanduser()
        directory, gguf_file = (local.parent, local.name) if local.suffix == ".gguf" else (local, None)
    else:
        spec = BACKBONES[backbone]
        _package_version(spec)
        directory, gguf_file = _weights_location(spec)
    transformers = _transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(directory), **({"gguf_file": gguf_file} if gguf_file else {}), **_offline_kwargs())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FrozenDTError(f"backbone {backbone!r}: no tokenizer can be loaded for it ({' '.join(str(error).split())}); "
                            "the copy probe needs the backbone's own tokenizer") from None
    model = _load_pretrained(directory, gguf_file, backbone)
    model.set_attn_implementation("eager")
    model.eval()
    return model, tokenizer


@torch.no_grad()
def copy_probe(model, tokenizer, texts: list[str], layers: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """(scores (n_layers_scored, heads), sentences with repeats, repeated tokens) over ``texts``."""
    special = set(tokenizer.all_special_ids)
    total, n_sentences, n_tokens = None, 0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        out = model(input_ids=ids, output_attentions=True, use_cache=False, return_dict=True)
        attn = torch.stack([a[0].float() for a in out.attentions[layers[0]:layers[1]]]).numpy()
        scores = sentence_copy_scores(attn, ids[0].tolist(), special)
        if scores is None:
            continue
        n_sentences += 1
        n_tokens += len(copy_targets(ids[0].tolist(), special))
        total = scores if total is None else total + scores
    if not n_sentences:
        raise FrozenDTError("no sentence has a repeated token")
    return total / n_sentences, n_sentences, n_tokens


def run_copy_probe(args) -> list[dict]:
    from frozen_dt.backbones.catalog import BACKBONES, parse_layers

    texts = sentences(args.sentences)
    model, tokenizer = load_full_model(args.backbone)
    depth = BACKBONES[args.backbone].n_layers if args.backbone in BACKBONES else model.config.num_hidden_layers
    a, b = parse_layers(args.layers, depth)
    scores, n_sentences, n_tokens = copy_probe(model, tokenizer, texts, (a, b))
    mean = float(scores.mean())
    rows = [{"head": head_name(a + i, h), "layer": a + i, "index": h, "copy_score": round(float(s), 6),
             "ratio_to_mean": round(float(s) / mean, 4), "backbone": args.backbone,
             "sentences": n_sentences, "repeated_tokens": n_tokens}
            for i, layer_scores in enumerate(scores) for h, s in enumerate(layer_scores)]
    write_csv(Path(args.out), rows)
    top = sorted(rows, key=lambda r: -r["copy_score"])[:5]
    print(f"copy probe {args.backbone} layers {a}:{b}: {n_sentences} sentences, {n_tokens} repeated tokens; "
          f"mean score {mean:.4f}; top: " + ", ".join(f"{r['head']} {r['copy_score']:.3f} "
                                                       f"({r['ratio_to_mean']:.1f}x)" for r in top))
    print(f"wrote {args.out}")
    return rows


# --- ablation -----------------------------------------------------------------------------------------------------


def run_ablation(args) -> list[dict]:
    from frozen_dt.probes.tasks import parse_lengths
    from frozen_dt.probes.train import evaluate, load_run, test_sets

    model, spec, config = load_run(args.run_dir)
    if config["arm"] not in ("pretrained", "random-init", "shuffled"):
        raise FrozenDTError(f"{args.run_dir}: head ablation needs a backbone-slice arm (pretrained, random-init or "
                            "shuffled), "
                            f"not {config['arm']!r}")
    sites = attention_sites(model.body.model, model.body.layer_range[0])
    lengths = parse_lengths(config["lengths"]) if spec.name == "recall" else []
    sets = test_sets(spec, lengths, args.n_test or config["n_test"])
    precision = config.get("precision", "fp32")
    base = evaluate(model, sets, precision)
    rows = []
    for site in sites:
        for h in range(site.n_heads):
            with ablated(sites, {(site.layer, h)}):
                errors = evaluate(model, sets, precision)
            rows.append({"head": head_name(site.layer, h), "layer": site.layer, "index": h,
                         **{f"delta_{k}": round(errors[k] - base[k], 6) for k in base},
                         **{k: round(v, 6) for k, v in errors.items()}})
            print(f"{rows[-1]['head']}: " + " ".join(f"{k}={v:+.4f}" for k, v in rows[-1].items()
                                                     if k.startswith("delta_")), flush=True)
    write_csv(Path(args.out), rows)
    print("baseline " + " ".join(f"{k}={v:.4f}" for k, v in base.items()) + f"; wrote {args.out}")
    return rows


# --- compare ------------------------------------------------------------------------------------------------------


def rank(values: np.ndarray) -> np.ndarray:
    """Rank 1 = largest value (ties share the mean rank)."""
    from scipy.stats import rankdata

    return rankdata(-values, method="average")


def run_compare(args) -> dict:
    from scipy.stats import spearmanr

    copy_rows = {r["head"]: r for r in read_csv(args.copy)}
    ablation_rows = {r["head"]: r for r in read_csv(args.ablation)}
    heads = [h for h in ablation_rows if h in copy_rows]
    if len(heads) < 2:
        raise FrozenDTError(f"{args.copy} and {args.ablation} share {len(heads)} head(s); score the same layers "
                            "(copy-probe --layers as the ablated run's slice)")
    metric = args.metric
    if metric is None:
        deltas = [k for k in next(iter(ablation_rows.values())) if k.startswith("delta_err_")]
        lengths = [int(k[len("delta_err_L"):]) for k in deltas if k[len("delta_err_L"):].isdigit()]
        metric = f"delta_err_L{max(lengths)}" if lengths else deltas[0]
    if metric not in next(iter(ablation_rows.values())):
        raise FrozenDTError(f"--metric {metric!r} is not a column of {args.ablation}")
    copy = np.array([float(copy_rows[h]["copy_score"]) for h in heads])
    delta = np.array([float(ablation_rows[h][metric]) for h in heads])
    copy_rank, delta_rank = rank(copy), rank(delta)
    rho, p = spearmanr(copy, delta)
    rows = sorted(({"head": h, "copy_score": round(float(c), 4), "copy_rank": float(cr), metric: round(float(d), 4),
                    "ablation_rank": float(dr)} for h, c, cr, d, dr in zip(heads, copy, copy_rank, delta, delta_rank)),
                  key=lambda r: r["ablation_rank"])
    out = Path(args.out)
    write_csv(out.with_suffix(".csv"), rows)
    lines = [f"Heads ranked by ablation ({metric}: change in per-bit test error when the head is zeroed) and by "
             f"text copy score. Spearman rank correlation over {len(heads)} heads: rho = {rho:.3f} (p = {p:.3g}).", "",
             "| head | ablation rank | " + metric + " | copy rank | copy score |", "|---|---|---|---|---|"]
    lines += [f"| {r['head']} | {r['ablation_rank']:g} | {r[metric]:+.4f} | {r['copy_rank']:g} | {r['copy_score']:.4f} |"
              for r in rows]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(copy, delta)
    for h, c, d in zip(heads, copy, delta):
        ax.annotate(h, (c, d), fontsize=7)
    ax.set_xlabel("text copy score (attention to the token after the earlier occurrence)")
    ax.set_ylabel(f"{metric} when ablated")
    ax.set_title(f"heads: Spearman rho = {rho:.2f} (n = {len(heads)})", fontsize=10)
    fig.tight_layout()
    with atomic_path(out.with_suffix(".png"), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    print(f"Spearman rho = {rho:.3f} (p = {p:.3g}) over {len(heads)} heads; wrote {out}.md, {out}.csv, {out}.png")
    return {"rho": float(rho), "p": float(p), "heads": len(heads), "metric": metric}
