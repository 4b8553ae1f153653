"""The parity bench's small-data pieces: the prefix file both sides train on (whole episodes only, recorded) and
Welch's test on the seed means (against scipy)."""

from __future__ import annotations

import importlib.util
import json
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
