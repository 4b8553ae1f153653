"""Choosing the slice by measurement: per-head previous-token and copy scores, and each layer's residual rewrite.

For every layer of a backbone's **full** model (word embeddings, eager attention) on the shipped sentences
(``frozen_dt/probes/copy_sentences.json``, tokenized with the backbone's own tokenizer):

* **previous-token score** of a head: its attention weight from position j to j - 1, averaged over the positions
  j >= 1 whose token and predecessor are not special tokens (BOS), per sentence, then over sentences;
* **copy score** of a head: :func:`frozen_dt.probes.heads.sentence_copy_scores` (weight from a repeated token to
  the token after its most recent earlier occurrence), over the sentences with a repeat;
* **residual rewrite** of a layer: ``|block(x) - x| / |x|`` (L2 norms over the width, per non-special token,
  averaged per sentence, then over sentences), where x is the layer's input and block(x) its output, read by
  forward hooks on the decoder layer. Measured for the pretrained weights and for a random init of the same
  architecture (transformers' own init, seeded) fed the **pretrained word embeddings**, so both see the same x
  at layer 0.

The slice rule (:func:`choose_slice`): among slices a:b of ``depth`` layers, the ones with a previous-token head
(score >= ``prev_threshold``) in a layer strictly below a copy head (score >= ``copy_threshold``) qualify; among
them, the one with the largest product of its best previous-token score (below) and best copy score (above) is
chosen. Ties go to the shallower slice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from frozen_dt.errors import FrozenDTError
from frozen_dt.probes.heads import (copy_targets, head_name, load_full_model, pair_scores, sentence_copy_scores,
                                    sentences)
from frozen_dt.run_dir import write_csv
from frozen_dt.science import exit_code


def previous_token_pairs(token_ids, special=()) -> list[tuple[int, int]]:
    """(j, j - 1) for every position j >= 1 where neither token is special."""
    return [(j, j - 1) for j in range(1, len(token_ids))
            if token_ids[j] not in special and token_ids[j - 1] not in special]


def sentence_previous_token_scores(attentions: np.ndarray, token_ids, special=()) -> np.ndarray | None:
    """Per-head previous-token score of one sentence from ``(layers, heads, T, T)`` attention (query, key)."""
    return pair_scores(attentions, previous_token_pairs(list(token_ids), special))


def rewrite_ratio(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean over the kept tokens of |y - x| / |x| (norms over the last dimension)."""
    ratio = (y - x).float().norm(dim=-1) / x.float().norm(dim=-1).clamp_min(1e-12)
    return float(ratio[keep].mean())


def decoder_layers(model) -> torch.nn.ModuleList:
    for path in ("model.layers", "model.language_model.layers", "language_model.model.layers"):
        module = model
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise FrozenDTError(f"cannot find the decoder layers of {type(model).__name__}")


@torch.no_grad()
def scan(model, tokenizer, texts: list[str], attentions: bool = True) -> dict:
    """{'prev': (layers, heads), 'copy': (layers, heads), 'rewrite': (layers,), counts} over ``texts``."""
    special = set(tokenizer.all_special_ids)
    layers = decoder_layers(model)
    captured: dict[int, tuple] = {}

    def hook(index):
        def record(module, args, kwargs, output):
            x = kwargs.get("hidden_states", args[0] if args else None)
            y = output[0] if isinstance(output, tuple) else output
            captured[index] = (x, y)
        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    prev_sum = copy_sum = None
    rewrite_sum = np.zeros(len(layers))
    n_prev = n_copy = n_rewrite = n_copy_tokens = 0
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            out = model(input_ids=ids, output_attentions=attentions, use_cache=False, return_dict=True)
            token_ids = ids[0].tolist()
            keep = torch.tensor([t not in special for t in token_ids])
            if keep.any():
                rewrite_sum += [rewrite_ratio(captured[i][0][0], captured[i][1][0], keep) for i in range(len(layers))]
                n_rewrite += 1
            if not attentions:
                continue
            attn = torch.stack([a[0].float() for a in out.attentions]).numpy()
            prev = sentence_previous_token_scores(attn, token_ids, special)
            if prev is not None:
                prev_sum = prev if prev_sum is None else prev_sum + prev
                n_prev += 1
            copy = sentence_copy_scores(attn, token_ids, special)
            if copy is not None:
                copy_sum = copy if copy_sum is None else copy_sum + copy
                n_copy += 1
                n_copy_tokens += len(copy_targets(token_ids, special))
    finally:
        for handle in handles:
            handle.remove()
    if not n_rewrite:
        raise FrozenDTError("no sentence has a non-special token")
    result = {"rewrite": rewrite_sum / n_rewrite, "sentences": n_rewrite}
    if attentions:
        if not n_copy or not n_prev:
            raise FrozenDTError("the sentences have no repeated token or no token pair")
        result.update(prev=prev_sum / n_prev, copy=copy_sum / n_copy, copy_sentences=n_copy,
                      copy_tokens=n_copy_tokens)
    return result


def random_init_like(model, seed: int):
    """The same architecture as ``model`` with transformers' own init (seeded) and ``model``'s word embeddings."""
    import transformers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = transformers.AutoModelForCausalLM.from_config(model.config, attn_implementation="eager")
    fresh.get_input_embeddings().weight.data.copy_(model.get_input_embeddings().weight.data)
    fresh.eval()
    return fresh


def choose_slice(prev: np.ndarray, copy: np.ndarray, depth: int, prev_threshold: float,
                 copy_threshold: float) -> dict | None:
    """The slice a:a+depth chosen by the module's rule, or None if no slice qualifies."""
    n_layers = prev.shape[0]
    best = None
    for a in range(n_layers - depth + 1):
        b = a + depth
        for lp in range(a, b):
            for lc in range(lp + 1, b):
                hp, hc = int(prev[lp].argmax()), int(copy[lc].argmax())
                sp, sc = float(prev[lp, hp]), float(copy[lc, hc])
                if sp < prev_threshold or sc < copy_threshold:
                    continue
                score = sp * sc
                if best is None or score > best["score"] + 1e-12:
                    best = {"layers": f"{a}:{b}", "prev_head": head_name(lp, hp), "prev_score": sp,
                            "copy_head": head_name(lc, hc), "copy_score": sc, "score": score}
    return best


def run_scan(backbone: str, out_dir: Path, seed: int = 0, sentences_path: str | None = None) -> dict:
    from frozen_dt.backbones.catalog import check_backbone_name

    check_backbone_name(backbone)
    texts = sentences(sentences_path)
    model, tokenizer = load_full_model(backbone)
    pre = scan(model, tokenizer, texts)
    rand = scan(random_init_like(model, seed), tokenizer, texts, attentions=False)
    n_layers, n_heads = pre["prev"].shape
    head_rows = [{"backbone": backbone, "head": head_name(layer, h), "layer": layer, "index": h,
                  "prev_token_score": round(float(pre["prev"][layer, h]), 6),
                  "copy_score": round(float(pre["copy"][layer, h]), 6)}
                 for layer in range(n_layers) for h in range(n_heads)]
    layer_rows = [{"backbone": backbone, "layer": layer,
                   "max_prev_token": round(float(pre["prev"][layer].max()), 4),
                   "max_prev_head": head_name(layer, int(pre["prev"][layer].argmax())),
                   "max_copy": round(float(pre["copy"][layer].max()), 4),
                   "max_copy_head": head_name(layer, int(pre["copy"][layer].argmax())),
                   "rewrite_pretrained": round(float(pre["rewrite"][layer]), 4),
                   "rewrite_random_init": round(float(rand["rewrite"][layer]), 4)}
                  for layer in range(n_layers)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"heads_{backbone}.csv", head_rows)
    write_csv(out_dir / f"layers_{backbone}.csv", layer_rows)
    return {"backbone": backbone, "prev": pre["prev"], "copy": pre["copy"], "layers": layer_rows,
            "sentences": pre["sentences"], "copy_sentences": pre["copy_sentences"], "copy_tokens": pre["copy_tokens"]}


def choose_from_csv(path: Path, depth: int, prev_threshold: float, copy_threshold: float) -> dict | None:
    """:func:`choose_slice` on a heads table written by :func:`run_scan`."""
    from frozen_dt.run_dir import read_csv

    rows = read_csv(path)
    n_layers = max(int(r["layer"]) for r in rows) + 1
    n_heads = max(int(r["index"]) for r in rows) + 1
    prev, copy = np.zeros((n_layers, n_heads)), np.zeros((n_layers, n_heads))
    for r in rows:
        prev[int(r["layer"]), int(r["index"])] = float(r["prev_token_score"])
        copy[int(r["layer"]), int(r["index"])] = float(r["copy_score"])
    return choose_slice(prev, copy, depth, prev_threshold, copy_threshold)


def main(argv=None) -> int:
    """``python -m frozen_dt.science.slice_scan BACKBONE... [--out DIR] [--seed S]``: the tables of the module doc."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m frozen_dt.science.slice_scan", description=main.__doc__)
    parser.add_argument("backbones", nargs="+")
    parser.add_argument("--out", default="results/science/slice_scan")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random init")
    parser.add_argument("--choose", type=int, metavar="DEPTH", help="only choose a slice of DEPTH layers from the "
                        "written heads tables (no model is run)")
    parser.add_argument("--prev-threshold", type=float, default=0.3)
    parser.add_argument("--copy-threshold", type=float, default=0.2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return exit_code(lambda: _choose_all(args) if args.choose else _scan_all(args))


def _choose_all(args) -> None:
    for backbone in args.backbones:
        table = Path(args.out) / f"heads_{backbone}.csv"
        if not table.is_file():
            raise FrozenDTError(f"no heads table {table}: run the scan of {backbone} first")
        chosen = choose_from_csv(table, args.choose, args.prev_threshold, args.copy_threshold)
        print(f"{backbone}, {args.choose} layers (previous-token >= {args.prev_threshold} below copy >= "
              f"{args.copy_threshold}): " + (json.dumps(chosen) if chosen else "no slice qualifies"))


def _scan_all(args) -> None:
    for backbone in args.backbones:
        result = run_scan(backbone, Path(args.out), args.seed)
        print(f"{backbone}: {result['sentences']} sentences ({result['copy_sentences']} with repeats, "
              f"{result['copy_tokens']} repeated tokens)")
        print("layer | best prev-token head | best copy head | rewrite pretrained | rewrite random-init")
        for row in result["layers"]:
            print(f"{row['layer']:>5} | {row['max_prev_head']} {row['max_prev_token']:.3f} | {row['max_copy_head']} "
                  f"{row['max_copy']:.3f} | {row['rewrite_pretrained']:.3f} | {row['rewrite_random_init']:.3f}",
                  flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
