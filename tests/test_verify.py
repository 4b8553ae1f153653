"""``frozen-dt data verify``: a dataset's statistics against the published D4RL dataset's, and the verdict."""

from __future__ import annotations

import json

import h5py
import numpy as np

from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.data.verify import MEAN_TOLERANCE, compare
from frozen_dt.envs.registry import get_task
from test_cli import assert_user_error, run

HOPPER = get_task("hopper-medium-v2")


def episodes_with_returns(returns, length: int):
    """Flat arrays of episodes of ``length`` steps whose undiscounted returns are ``returns`` (timeouts)."""
    n = len(returns) * length
    rewards = np.repeat(np.asarray(returns, dtype=np.float64) / length, length).astype(np.float32)
    timeouts = (np.arange(n) % length) == length - 1
    return np.zeros((n, 1), np.float32), np.zeros((n, 3), np.float32), rewards, np.zeros(n, bool), timeouts


def hopper_return(normalized: float) -> float:
    return normalized / 100.0 * (HOPPER.ref_max - HOPPER.ref_min) + HOPPER.ref_min


def test_a_dataset_of_d4rls_size_and_mean_is_within_tolerance_and_one_a_point_off_the_band_is_not():
    d4rl_mean = 100.0 * (HOPPER.d4rl.return_mean - HOPPER.ref_min) / (HOPPER.ref_max - HOPPER.ref_min)
    assert abs(d4rl_mean - 44.32) < 0.01  # D4RL hopper-medium-v2: 1422.06 mean return
    spread = np.tile([-10.0, 10.0], 500)  # 1000 episodes of 1000 steps: D4RL's 1M transitions
    inside = compare(from_flat_arrays(*episodes_with_returns(hopper_return(d4rl_mean + 4.5) + spread, 1000), where="test"), HOPPER)
    assert inside["ours"]["transitions"] == inside["d4rl"]["transitions"] == 1_000_000
    assert abs(inside["ours"]["normalized_mean"] - (d4rl_mean + 4.5)) < 1e-3
    assert inside["checks"] == {"normalized_mean": True, "transitions": True} and inside["within_tolerance"]
    outside = compare(from_flat_arrays(*episodes_with_returns(hopper_return(d4rl_mean - MEAN_TOLERANCE - 0.5)
                                                              + spread, 1000), where="test"), HOPPER)
    assert outside["checks"] == {"normalized_mean": False, "transitions": True} and not outside["within_tolerance"]


def test_verify_prints_both_columns_and_exits_1_outside_tolerance(data, capsys, tmp_path):
    obs, actions, rewards, terminals, timeouts = episodes_with_returns([hopper_return(44.3)] * 20, 100)
    path = tmp_path / "hopper-medium-v2.hdf5"
    with h5py.File(path, "w") as f:
        for key, value in (("observations", np.zeros((len(rewards), 11), np.float32)), ("actions", actions),
                           ("rewards", rewards), ("terminals", terminals), ("timeouts", timeouts)):
            f.create_dataset(key, data=value)
    code, out, _ = run(capsys, "data", "verify", "hopper-medium-v2", "--dataset", str(path))
    assert code == 1  # the right mean, but 2,000 transitions instead of 1M
    lines = {line.split()[0]: line for line in out.splitlines()[3:9]}
    assert "OUTSIDE TOLERANCE" in lines["transitions"] and lines["normalized_mean"].rstrip().endswith("ok")
    assert lines["transitions"].split()[1:3] == ["2000", "1000000"]
    code, out, _ = run(capsys, "data", "verify", "hopper-medium-v2", "--dataset", str(path), "--json")
    record = json.loads(out)
    assert code == 1 and record["checks"] == {"normalized_mean": True, "transitions": False}
    assert record["d4rl"]["episodes"] == 2187 and "YuweiYin/UBC_CPSC_533V" in record["d4rl_source"]


def test_tasks_without_published_statistics_are_refused_before_any_data_is_read(data, capsys):
    code, _, err = run(capsys, "data", "verify", "ant-medium-v2")
    assert_user_error(code, err, "no published D4RL statistics")
    code, _, err = run(capsys, "data", "verify", "scene-play-v0")
    assert_user_error(code, err, "no published D4RL statistics")
