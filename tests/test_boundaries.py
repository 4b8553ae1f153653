"""Episode boundaries and per-step array validation.

Boundaries are decided in one place, ``frozen_dt.data.dataset.from_flat_arrays``: an episode ends at a step flagged
terminal or timeout, a step flagged both is a termination, an unterminated tail is kept as a truncated episode
(``unterminated_tail``), and ``dones`` equal the terminal flags. Every rule is checked on flat arrays and again
through the D4RL hdf5 reader (and the DT-pickle reader where it applies), on tiny files written in tmp_path.
"""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from frozen_dt.data.dataset import OfflineDataset, check_arrays, check_task_dims, from_flat_arrays
from frozen_dt.data.readers import read_d4rl_hdf5, read_dt_pickle, read_file
from frozen_dt.envs.registry import get_task
from frozen_dt.errors import FrozenDTError

OBS_DIM, ACT_DIM = 11, 3  # hopper's sizes, so that the files also fit hopper-* tasks


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Nothing a test does may touch the user's data or Minari directories."""
    monkeypatch.setenv("FROZEN_DT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def flags(n, idx):
    out = np.zeros(n, bool)
    out[list(idx)] = True
    return out


def make_arrays(n, terminal_idx=(), timeout_idx=(), seed=0):
    rng = np.random.default_rng(seed)
    return {
        "observations": rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": flags(n, terminal_idx),
        "timeouts": flags(n, timeout_idx),
    }


def write_hdf5(path, arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def via_flat(tmp_path, arrays):
    return from_flat_arrays(**arrays, where="test arrays")


def via_hdf5(tmp_path, arrays):
    return read_d4rl_hdf5(write_hdf5(tmp_path / "boundaries.hdf5", arrays))


BUILDERS = pytest.mark.parametrize("build", [via_flat, via_hdf5], ids=["flat", "hdf5"])


def check_invariants(ds: OfflineDataset, arrays: dict) -> None:
    """Invariants every dataset satisfies whatever its boundaries."""
    n = len(arrays["observations"])
    assert ds.n_transitions == n
    assert ds.episode_lengths.min() >= 1
    assert ds.episode_lengths.sum() == n
    np.testing.assert_array_equal(ds.episode_starts, np.concatenate([[0], np.cumsum(ds.episode_lengths)[:-1]]))
    assert ds.episode_ends[-1] == n - 1
    np.testing.assert_array_equal(ds.episode_index, np.repeat(np.arange(ds.n_episodes), ds.episode_lengths))
    np.testing.assert_array_equal(ds.dones, arrays["terminals"].astype(bool))  # dones equal terminals
    assert ds.dones.dtype == bool
    np.testing.assert_array_equal(ds.observations, arrays["observations"])
    np.testing.assert_array_equal(ds.actions, arrays["actions"])
    np.testing.assert_array_equal(ds.rewards, arrays["rewards"])
    returns = ds.episode_returns()
    expected = [arrays["rewards"][s : s + k].astype(np.float64).sum() for s, k in zip(ds.episode_starts, ds.episode_lengths)]
    np.testing.assert_allclose(returns, expected, rtol=1e-12)


# --- the rules, on flat arrays and through the hdf5 reader --------------------------------------------------


@BUILDERS
def test_episode_ends_at_terminal(tmp_path, build):
    arrays = make_arrays(10, terminal_idx=[3, 9])
    ds = build(tmp_path, arrays)
    check_invariants(ds, arrays)
    np.testing.assert_array_equal(ds.episode_starts, [0, 4])
    np.testing.assert_array_equal(ds.episode_lengths, [4, 6])
    np.testing.assert_array_equal(ds.episode_terminated, [True, True])
    assert ds.unterminated_tail is False


@BUILDERS
def test_episode_ends_at_timeout(tmp_path, build):
    arrays = make_arrays(10, timeout_idx=[4, 9])
    ds = build(tmp_path, arrays)
    check_invariants(ds, arrays)
    np.testing.assert_array_equal(ds.episode_starts, [0, 5])
    np.testing.assert_array_equal(ds.episode_lengths, [5, 5])
    np.testing.assert_array_equal(ds.episode_terminated, [False, False])
    assert not ds.dones.any()  # a timeout is not a termination: value targets bootstrap through it
    assert ds.unterminated_tail is False


@BUILDERS
def test_step_flagged_terminal_and_timeout_is_a_termination(tmp_path, build):
    arrays = make_arrays(8, terminal_idx=[2, 7], timeout_idx=[2, 5])
    ds = build(tmp_path, arrays)
    check_invariants(ds, arrays)
    np.testing.assert_array_equal(ds.episode_lengths, [3, 3, 2])
    np.testing.assert_array_equal(ds.episode_terminated, [True, False, True])
    assert ds.dones[2] and not ds.dones[5]
    assert ds.summary()["n_terminated"] == 2 and ds.summary()["n_truncated"] == 1


@BUILDERS
def test_unterminated_tail_is_kept_as_a_truncated_episode(tmp_path, build):
    arrays = make_arrays(12, terminal_idx=[3], timeout_idx=[7])
    ds = build(tmp_path, arrays)
    check_invariants(ds, arrays)
    np.testing.assert_array_equal(ds.episode_starts, [0, 4, 8])
    np.testing.assert_array_equal(ds.episode_lengths, [4, 4, 4])  # the last 4 steps are kept, not dropped
    np.testing.assert_array_equal(ds.episode_terminated, [True, False, False])
    assert ds.unterminated_tail is True
    assert not ds.dones[-1]  # the tail's last step is not a termination
    assert ds.summary()["unterminated_tail"] is True


@BUILDERS
def test_no_flags_at_all_is_one_truncated_episode(tmp_path, build):
    arrays = make_arrays(6)
    ds = build(tmp_path, arrays)
    check_invariants(ds, arrays)
    assert ds.n_episodes == 1
    np.testing.assert_array_equal(ds.episode_lengths, [6])
    np.testing.assert_array_equal(ds.episode_terminated, [False])
    assert ds.unterminated_tail is True


@BUILDERS
def test_consecutive_ends_make_one_step_episodes(tmp_path, build):
    arrays = make_arrays(5, terminal_idx=[0, 1], timeout_idx=[2, 4])
    ds = build(tmp_path, arrays)
    check_invariants(ds, arrays)
    np.testing.assert_array_equal(ds.episode_lengths, [1, 1, 1, 2])
    np.testing.assert_array_equal(ds.episode_terminated, [True, True, False, False])


@BUILDERS
def test_single_step_dataset(tmp_path, build):
    arrays = make_arrays(1, terminal_idx=[0])
    ds = build(tmp_path, arrays)
    check_invariants(ds, arrays)
    assert ds.n_episodes == 1 and ds.episode_terminated.tolist() == [True] and ds.unterminated_tail is False


@BUILDERS
def test_random_flags_match_a_reference_splitter(tmp_path, build):
    """Against a plain-Python statement of the rules, on random flag patterns."""
    rng = np.random.default_rng(7)
    for trial in range(5):
        n = 200
        arrays = make_arrays(n, seed=trial)
        arrays["terminals"] = rng.random(n) < 0.05
        arrays["timeouts"] = rng.random(n) < 0.05
        ds = build(tmp_path, arrays)
        check_invariants(ds, arrays)
        episodes, start = [], 0
        for t in range(n):
            term, tout = bool(arrays["terminals"][t]), bool(arrays["timeouts"][t])
            if term or tout or t == n - 1:
                episodes.append((start, t - start + 1, term))
                start = t + 1
        assert [(int(s), int(k), bool(e)) for s, k, e in zip(ds.episode_starts, ds.episode_lengths, ds.episode_terminated)] == episodes
        assert ds.unterminated_tail == (not (arrays["terminals"][-1] or arrays["timeouts"][-1]))


def test_episode_accessor_returns_views_of_one_episode():
    arrays = make_arrays(7, terminal_idx=[2], timeout_idx=[6])
    ds = from_flat_arrays(**arrays, where="x")
    first, second = ds.episode(0), ds.episode(1)
    np.testing.assert_array_equal(first["observations"], arrays["observations"][:3])
    np.testing.assert_array_equal(second["actions"], arrays["actions"][3:])
    np.testing.assert_array_equal(second["rewards"], arrays["rewards"][3:])
    assert first["terminated"] is True and second["terminated"] is False
    np.testing.assert_array_equal(first["dones"], [False, False, True])


def test_flag_dtypes_and_column_shapes_are_normalised():
    """Float 0/1 flags and (N, 1) columns, as some D4RL-style files store them, give the same episodes."""
    arrays = make_arrays(6, terminal_idx=[2], timeout_idx=[4])
    as_floats = dict(
        arrays,
        terminals=arrays["terminals"].astype(np.float32)[:, None],
        timeouts=arrays["timeouts"].astype(np.float64),
        rewards=arrays["rewards"][:, None],
    )
    a = from_flat_arrays(**arrays, where="x")
    b = from_flat_arrays(**as_floats, where="x")
    for key in ("episode_starts", "episode_lengths", "episode_terminated", "dones", "rewards"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert b.rewards.shape == (6,) and b.dones.dtype == bool
    assert b.observations.dtype == np.float32 and b.actions.dtype == np.float32


def test_dones_do_not_alias_the_callers_terminals():
    arrays = make_arrays(4, terminal_idx=[1])
    terminals = arrays["terminals"]
    ds = from_flat_arrays(**arrays, where="x")
    ds.dones[0] = True
    assert not terminals[0]


def test_source_extras_and_missing_keys_are_carried():
    arrays = make_arrays(4, terminal_idx=[3])
    ds = from_flat_arrays(**arrays, where="x", source={"kind": "file"}, extras={"qpos": np.zeros((4, 2))},
                          missing_keys=("foo",))
    assert ds.source == {"kind": "file"} and ds.missing_keys == ("foo",)
    assert ds.extras["qpos"].shape == (4, 2)


def test_hdf5_and_flat_arrays_agree_with_next_observations(tmp_path):
    arrays = make_arrays(9, terminal_idx=[4], timeout_idx=[6])
    arrays["next_observations"] = np.random.default_rng(3).normal(size=(9, OBS_DIM)).astype(np.float32)
    a = via_flat(tmp_path, arrays)
    b = via_hdf5(tmp_path, arrays)
    for key in ("episode_starts", "episode_lengths", "episode_terminated", "dones", "next_observations"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.unterminated_tail == b.unterminated_tail is True


# --- DT pickles: every path is one episode; its last terminal flag decides terminated vs truncated ------------


def test_dt_pickle_paths_are_episodes(tmp_path):
    rng = np.random.default_rng(0)
    lengths, last_terminal = [5, 3, 4], [True, False, False]
    paths = []
    for k, term in zip(lengths, last_terminal):
        paths.append({
            "observations": rng.normal(size=(k, OBS_DIM)).astype(np.float32),
            "actions": rng.normal(size=(k, ACT_DIM)).astype(np.float32),
            "rewards": rng.normal(size=k).astype(np.float32),
            "terminals": flags(k, [k - 1] if term else []),
        })
    path = tmp_path / "paths.pkl"
    path.write_bytes(pickle.dumps(paths))
    ds = read_dt_pickle(path)
    np.testing.assert_array_equal(ds.episode_lengths, lengths)
    np.testing.assert_array_equal(ds.episode_terminated, last_terminal)
    np.testing.assert_array_equal(ds.dones, np.concatenate([p["terminals"] for p in paths]))
    assert ds.unterminated_tail is False  # every path ends its episode
    np.testing.assert_allclose(ds.episode_returns(), [p["rewards"].sum() for p in paths], rtol=1e-6)


# --- bad arrays: each failure names where and which key -----------------------------------------------------


def test_mismatched_lengths_name_the_keys():
    arrays = make_arrays(5)
    arrays["actions"] = arrays["actions"][:4]
    with pytest.raises(FrozenDTError) as e:
        from_flat_arrays(**arrays, where="my-file.hdf5")
    msg = str(e.value)
    assert "my-file.hdf5" in msg and "mismatched" in msg
    assert "observations=5" in msg and "actions=4" in msg


def test_mismatched_lengths_in_hdf5_name_file_and_keys(tmp_path):
    arrays = make_arrays(6)
    arrays["rewards"] = arrays["rewards"][:5]
    path = write_hdf5(tmp_path / "short-rewards.hdf5", arrays)
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value) and "rewards=5" in str(e.value) and "observations=6" in str(e.value)


def test_mismatched_extras_are_refused():
    arrays = make_arrays(5)
    with pytest.raises(FrozenDTError, match="qpos=3"):
        from_flat_arrays(**arrays, where="x", extras={"qpos": np.zeros((3, 2))})


@pytest.mark.parametrize("key,bad_value,step", [
    ("observations", np.nan, 4),
    ("observations", np.inf, 0),
    ("actions", -np.inf, 6),
    ("rewards", np.nan, 2),
    ("next_observations", np.inf, 5),
])
def test_nan_and_inf_name_key_and_step(key, bad_value, step):
    arrays = make_arrays(8, terminal_idx=[7])
    arrays["next_observations"] = arrays["observations"].copy()
    arrays[key] = arrays[key].copy()
    if arrays[key].ndim == 2:
        arrays[key][step, 1] = bad_value
    else:
        arrays[key][step] = bad_value
    with pytest.raises(FrozenDTError) as e:
        from_flat_arrays(**arrays, where="nan-file.hdf5")
    msg = str(e.value)
    assert "nan-file.hdf5" in msg and repr(key) in msg and f"step {step}" in msg


def test_nan_in_hdf5_names_file_key_and_step(tmp_path):
    arrays = make_arrays(10, terminal_idx=[9])
    arrays["observations"][7, 3] = np.nan
    path = write_hdf5(tmp_path / "nan.hdf5", arrays)
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    msg = str(e.value)
    assert str(path) in msg and "'observations'" in msg and "step 7" in msg


def test_nan_in_dt_pickle_names_file_path_index_and_step(tmp_path):
    rng = np.random.default_rng(0)
    paths = [{"observations": rng.normal(size=(4, OBS_DIM)).astype(np.float32),
              "actions": rng.normal(size=(4, ACT_DIM)).astype(np.float32)} for _ in range(2)]
    paths[1]["actions"][2, 0] = np.inf
    path = tmp_path / "inf.pkl"
    path.write_bytes(pickle.dumps(paths))
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    msg = str(e.value)
    assert str(path) in msg and "path 1" in msg and "'actions'" in msg and "step 2" in msg


def test_empty_dataset_is_refused():
    arrays = make_arrays(0)
    with pytest.raises(FrozenDTError, match="empty"):
        from_flat_arrays(**arrays, where="empty.hdf5")


@pytest.mark.parametrize("key", ["observations", "actions"])
def test_one_dimensional_observations_or_actions_are_refused(key):
    arrays = make_arrays(5)
    arrays[key] = arrays[key][:, 0]
    with pytest.raises(FrozenDTError) as e:
        from_flat_arrays(**arrays, where="flat.hdf5")
    assert "flat.hdf5" in str(e.value) and repr(key) in str(e.value) and "2-D" in str(e.value)


@pytest.mark.parametrize("key,value,match", [
    ("rewards", np.ones((5, 2), np.float32), "one value per step"),
    ("terminals", np.zeros((5, 2), bool), "one value per step"),
    ("timeouts", np.zeros((5, 3), bool), "one value per step"),
    ("rewards", np.float32(1.0), "one entry per step"),
    ("observations", np.array([["a"] * OBS_DIM] * 5), "must hold numbers"),
    ("actions", np.array([[None] * ACT_DIM] * 5, dtype=object), "must hold numbers"),
    ("observations", np.ones((5, OBS_DIM), np.complex64), "must hold numbers"),
])
def test_malformed_step_arrays_are_refused_naming_the_key(key, value, match):
    arrays = make_arrays(5)
    arrays[key] = value
    with pytest.raises(FrozenDTError, match=match) as e:
        from_flat_arrays(**arrays, where="odd.hdf5")
    assert "odd.hdf5" in str(e.value) and repr(key) in str(e.value)


@pytest.mark.parametrize("key,value", [
    ("observations", np.array([[b"a"] * OBS_DIM] * 5)),
    ("rewards", np.ones((5, 2), np.float32)),
    ("terminals", np.zeros((5, 2), bool)),
    ("rewards", np.float32(1.0)),
])
def test_malformed_hdf5_datasets_are_refused_naming_file_and_key(tmp_path, key, value):
    arrays = make_arrays(5)
    arrays[key] = value
    path = write_hdf5(tmp_path / "odd.hdf5", arrays)
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value) and repr(key) in str(e.value)


def test_dt_pickle_with_non_numeric_or_wide_arrays_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    good = {"observations": rng.normal(size=(3, OBS_DIM)), "actions": rng.normal(size=(3, ACT_DIM))}
    for bad in ({"observations": np.array([["x"] * OBS_DIM] * 3, dtype=object)}, {"rewards": np.zeros((3, 2))}):
        path = tmp_path / "odd.pkl"
        path.write_bytes(pickle.dumps([dict(good, **bad)]))
        with pytest.raises(FrozenDTError) as e:
            read_file(path)
        assert str(path) in str(e.value) and repr(next(iter(bad))) in str(e.value)


def test_check_arrays_returns_common_length_and_ignores_none_and_integers():
    n = check_arrays({"observations": np.zeros((3, 2)), "rewards": None, "button_states": np.zeros((3, 2), int)}, "x")
    assert n == 3


def test_check_arrays_refuses_a_source_with_no_arrays_at_all():
    with pytest.raises(FrozenDTError, match="x: the dataset is empty"):
        check_arrays({"observations": None, "actions": None}, "x")


def test_an_absent_array_does_not_end_the_finiteness_checks_of_the_others():
    """A missing timeouts array (many DT pickles) comes before next_observations and the extras in the checks."""
    arrays = make_arrays(5)
    arrays["timeouts"] = None
    bad = np.ones((5, OBS_DIM), np.float32)
    bad[1, 0] = bad[3, 1] = np.nan
    with pytest.raises(FrozenDTError, match="'next_observations' contains NaN or inf \\(first at step 1\\)"):
        from_flat_arrays(**arrays, next_observations=bad, where="x")
    with pytest.raises(FrozenDTError, match="'qpos' contains NaN or inf \\(first at step 1\\)"):
        from_flat_arrays(**arrays, extras={"qpos": bad}, where="x")


def test_a_missing_key_is_named_with_the_datasets_source_or_as_this_dataset():
    arrays = make_arrays(5)
    arrays["rewards"] = None
    unnamed = from_flat_arrays(**arrays, where="x", missing_keys=("rewards",))
    with pytest.raises(FrozenDTError, match="^this dataset lacks 'rewards', which episode returns needs"):
        unnamed.episode_returns()
    named = from_flat_arrays(**arrays, where="x", missing_keys=("rewards",), source={"path": "/d/walker.pkl"})
    with pytest.raises(FrozenDTError, match="^/d/walker.pkl lacks 'rewards'"):
        named.episode_returns()


def test_observation_statistics_cannot_be_changed_after_they_are_computed():
    """A model's ObsStats travel with it (checkpoints, evaluation); they are a frozen record."""
    import dataclasses

    stats = from_flat_arrays(**make_arrays(5), where="x").obs_stats
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.mean = np.zeros_like(stats.mean)


# --- task dims ---------------------------------------------------------------------------------------------


def test_check_task_dims_accepts_fitting_data_and_returns_the_version():
    ds = from_flat_arrays(**make_arrays(4), where="x", source={"env_version": "v4"})
    assert check_task_dims(ds, get_task("hopper-medium-v2")) == "v4"  # recorded version kept when it fits
    ds.source.pop("env_version")  # nothing recorded: v4, the gymnasium envs that keep D4RL's v3 models (docs/data.md)
    assert check_task_dims(ds, get_task("hopper-medium-v2")) == "v4"
    ds.source["env_version"] = "v3"  # recorded, but not a version the task has
    assert check_task_dims(ds, get_task("hopper-medium-v2")) == "v4"


def test_check_task_dims_names_the_task_when_the_data_has_no_path():
    ds = from_flat_arrays(**make_arrays(4), where="x")
    with pytest.raises(FrozenDTError, match="^walker2d-medium-v2: actions have 3 dims"):
        check_task_dims(ds, get_task("walker2d-medium-v2"))


def test_data_summary_reports_the_d4rl_normalized_mean_return_only_for_normalized_tasks():
    from frozen_dt.eval.scores import normalized_score

    ds = from_flat_arrays(**make_arrays(6, terminal_idx=(2,)), where="x")
    task = get_task("hopper-medium-v2")
    summary = ds.summary(task)
    assert summary["task"] == "hopper-medium-v2"
    assert summary["normalized_return_mean"] == pytest.approx(float(normalized_score(task, ds.episode_returns()).mean()))
    assert ds.summary()["normalized_return_mean"] is None
    rng = np.random.default_rng(0)
    goal = from_flat_arrays(rng.normal(size=(3, 40)), rng.normal(size=(3, 5)), rewards=np.zeros(3), where="x")
    assert goal.summary(get_task("scene-play-v0"))["normalized_return_mean"] is None  # a success-rate task


@pytest.mark.parametrize("obs_dim,recorded,expected", [(111, None, "v4"), (105, None, "v5"), (111, "v5", "v4"), (105, "v5", "v5")])
def test_check_task_dims_picks_the_version_from_the_ant_obs_size(obs_dim, recorded, expected):
    rng = np.random.default_rng(0)
    ds = from_flat_arrays(rng.normal(size=(3, obs_dim)), rng.normal(size=(3, 8)), where="ant.hdf5",
                          source={"env_version": recorded} if recorded else {})
    assert check_task_dims(ds, get_task("ant-medium-v2")) == expected


def test_check_task_dims_refuses_data_of_another_env_naming_file_and_task():
    ds = from_flat_arrays(**make_arrays(4), where="x", source={"path": "/data/hopper.hdf5"})
    with pytest.raises(FrozenDTError) as e:
        check_task_dims(ds, get_task("walker2d-medium-v2"))  # hopper-sized data (11 obs, 3 act) for walker2d
    msg = str(e.value)
    assert "/data/hopper.hdf5" in msg and "walker2d-medium-v2" in msg


def test_check_task_dims_refuses_wrong_obs_dim_with_right_act_dim():
    rng = np.random.default_rng(0)
    ds = from_flat_arrays(rng.normal(size=(3, 12)), rng.normal(size=(3, ACT_DIM)), where="x",
                          source={"path": "/data/odd.hdf5"})
    with pytest.raises(FrozenDTError) as e:
        check_task_dims(ds, get_task("hopper-medium-v2"))
    msg = str(e.value)
    assert "/data/odd.hdf5" in msg and "observations have 12 dims" in msg and "hopper-medium-v2" in msg and "11" in msg


def test_check_task_dims_refuses_wrong_act_dim():
    rng = np.random.default_rng(0)
    ds = from_flat_arrays(rng.normal(size=(3, OBS_DIM)), rng.normal(size=(3, 4)), where="x",
                          source={"path": "/data/odd-actions.hdf5"})
    with pytest.raises(FrozenDTError) as e:
        check_task_dims(ds, get_task("hopper-medium-v2"))
    msg = str(e.value)
    assert "/data/odd-actions.hdf5" in msg and "actions have 4 dims" in msg and "has 3" in msg


def test_check_task_dims_for_ogbench_returns_none_or_refuses():
    rng = np.random.default_rng(0)
    fits = from_flat_arrays(rng.normal(size=(3, 40)), rng.normal(size=(3, 5)), where="x")
    assert check_task_dims(fits, get_task("scene-play-v0")) is None
    with pytest.raises(FrozenDTError, match="cube-double-play-v0"):
        check_task_dims(fits, get_task("cube-double-play-v0"))  # 37-dim observations
