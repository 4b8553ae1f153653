"""The parity bench's small-data pieces: the prefix file both sides train on (whole episodes only, recorded) and
Welch's test on the seed means (against scipy)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats

_spec = importlib.util.spec_from_file_location("run_parity", Path(__file__).resolve().parents[1] / "bench" / "parity"
                                               / "run_parity.py")
run_parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_parity)


@pytest.fixture
def episodes_3_4_5(tmp_path):
    """12 steps in episodes of 3, 4 and 5 steps (the last one a timeout); step i's reward is i."""
    path = tmp_path / "toy.hdf5"
    terminals, timeouts = np.zeros(12, bool), np.zeros(12, bool)
    terminals[[2, 6]] = True
    timeouts[11] = True
    with h5py.File(path, "w") as f:
        f["observations"] = np.arange(24, dtype=np.float32).reshape(12, 2)
        f["actions"] = np.zeros((12, 1), np.float32)
        f["rewards"] = np.arange(12, dtype=np.float32)
        f["terminals"], f["timeouts"] = terminals, timeouts
        f.attrs["frozen_dt_metadata"] = "{}"
    return path


@pytest.mark.parametrize("asked, kept, episodes", [(3, 3, 1), (6, 3, 1), (7, 7, 2), (11, 7, 2)])
def test_prefix_keeps_the_whole_episodes_within_the_transitions_asked(episodes_3_4_5, tmp_path, asked, kept, episodes):
    path, prefix = run_parity.prefix_file(str(episodes_3_4_5), asked, tmp_path / "out")
    assert prefix["transitions"] == kept and prefix["episodes"] == episodes and prefix["requested"] == asked
    with h5py.File(path, "r") as f:
        assert f["rewards"][()].tolist() == list(range(kept))
        assert json.loads(f.attrs[run_parity.PREFIX_ATTR]) == prefix and "frozen_dt_metadata" in f.attrs


@pytest.mark.parametrize("asked", [2, 12, 20])
def test_a_prefix_without_a_whole_episode_or_as_long_as_the_file_is_refused(episodes_3_4_5, tmp_path, asked):
    with pytest.raises(SystemExit, match="whole episode"):
        run_parity.prefix_file(str(episodes_3_4_5), asked, tmp_path / "out")


def test_welch_matches_scipy():
    xa, xb = np.array([40.6, 51.3, 43.4, 24.6, 64.4]), np.array([39.7, 66.6, 74.5, 19.9, 13.9, 50.3])
    w = run_parity.welch(xa, xb)
    ref = stats.ttest_ind(xa, xb, equal_var=False)
    assert w["t"] == pytest.approx(ref.statistic) and w["p"] == pytest.approx(ref.pvalue)
    low, high = ref.confidence_interval(0.95)
    assert w["ci"] == pytest.approx([low, high])
    assert run_parity.welch(np.array([1.0, 1.0]), np.array([1.0, 1.0])) is None


def side(scores_per_seed):
    """Records of one side, one per seed, holding returns that normalize to ``scores`` (identity normalization)."""
    return [{"returns": list(s), "updates_per_s": 10.0} for s in scores_per_seed]


def test_the_difference_over_2_to_4_seeds_is_welchs_interval_and_from_5_the_bootstrap():
    identity = np.asarray
    ours, theirs = side([[10.0, 12.0], [30.0, 32.0], [20.0, 22.0]]), side([[5.0], [6.0], [10.0]])
    d = run_parity.difference(ours, theirs, identity)
    ref = stats.ttest_ind([11.0, 31.0, 21.0], [5.0, 6.0, 10.0], equal_var=False)
    assert d["ci_over"] == "seeds (Welch t)" and d["ci"] == pytest.approx(list(ref.confidence_interval(0.95)))
    assert d["difference"] == pytest.approx(21.0 - 7.0) and d["within_ci"] == (d["ci"][0] <= 0 <= d["ci"][1])
    summary = run_parity.side_summary(ours, identity)
    half = stats.t.ppf(0.975, 2) * np.std([11.0, 31.0, 21.0], ddof=1) / np.sqrt(3)
    assert summary["ci_seeds"] == pytest.approx([21.0 - half, 21.0 + half]) and summary["ci_seeds_over"] == \
        "seeds (t, n=3)"
    five = side([[v] for v in (1.0, 2.0, 3.0, 4.0, 5.0)])
    d5 = run_parity.difference(five, side([[v] for v in (0.0, 1.0, 1.0, 2.0, 2.0)]), identity)
    assert d5["ci_over"] == "seeds (bootstrap)" and d5["welch"] is not None
    assert run_parity.side_summary(five, identity)["ci_seeds_over"] == "seeds (bootstrap, n=5)"
    flat = run_parity.difference(side([[5.0]] * 3), side([[3.0], [3.0], [3.0]]), identity)  # no spread: no interval
    assert (flat["difference"], flat["ci"], flat["within_ci"]) == (2.0, None, None)
    assert flat["ci_over"] == "seeds (no spread on either side: no interval)"
    assert run_parity.interval_text(flat) == "no interval" and run_parity.interval_text(d5).startswith("[+")


def test_recompute_rewrites_a_records_intervals_from_its_stored_runs_and_leaves_others_alone(tmp_path, capsys,
                                                                                             monkeypatch):
    runs = {"ours": side([[1000.0, 1100.0], [2000.0, 2100.0], [1500.0]]), "d3rlpy": side([[900.0], [950.0], [1000.0]])}
    record = {"task": "hopper-medium-v2", "algo": "bc", "difference": {"ci": [0, 1], "ci_over": "seeds"},
              "runs": runs, "git": "kept"}
    path, other = tmp_path / "hopper-medium-v2-bc.json", tmp_path / "hopper-medium-v2-throughput.json"
    path.write_text(json.dumps(record))
    other.write_text(json.dumps({"algos": {}}))
    run_parity.recompute([str(path), str(other)])
    got = json.loads(path.read_text())
    assert got["git"] == "kept" and got["runs"] == runs and got["difference"]["ci_over"] == "seeds (Welch t)"
    ref_min, ref_max = -20.272305, 3234.3  # D4RL's hopper references
    assert got["ours"]["per_seed"] == [round(100 * (m - ref_min) / (ref_max - ref_min), 2) for m in (1050, 2050, 1500)]
    assert json.loads(other.read_text()) == {"algos": {}} and "left as it is" in capsys.readouterr().out
    ours = got["ours"]  # the score is the mean of the seed means, the centre of their t-interval
    assert ours["score"] == pytest.approx(np.mean(ours["per_seed"]), abs=0.01) == np.mean(ours["ci_seeds"])
    monkeypatch.setattr(sys, "argv", ["run_parity.py", "--recompute", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit, match="missing.json: not a readable parity record"):
        run_parity.main()
    monkeypatch.setattr(sys, "argv", ["run_parity.py", "--recompute", str(path)])
    run_parity.main()
    assert "difference" in capsys.readouterr().out
