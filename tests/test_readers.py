"""The four dataset readers, the safe unpickler, the dataset sources and data-dir names.

Every test writes its own tiny files under tmp_path; ``$FROZEN_DT_DATA`` and ``$MINARI_DATASETS_PATH`` point into
tmp dirs so that nothing touches the user's data. OGBench files are rolled out in the real ``scene-v0`` /
``cube-double-v0`` envs the way OGBench's own data-generation script records them, and checked against
``ogbench``'s loader and relabelling; Minari datasets are written with minari's own writer and read back through
the minari API. The two real D4RL pickles in ``shared/realdata`` are used when present.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest

from frozen_dt.data.dataset import check_task_dims
from frozen_dt.data.readers import (
    D4RL_KEYS,
    METADATA_ATTR,
    SafeUnpickler,
    detect_format,
    read_d4rl_hdf5,
    read_file,
    read_minari,
    safe_load_pickle,
)
from frozen_dt.data.sources import candidates, guess_task, load_any, load_task_dataset, locate, missing_message
from frozen_dt.data.views import SequenceView, TransitionView
from frozen_dt.envs.registry import TASKS, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import data_file

_ROOT = Path(__file__).resolve().parents[1]
# shared/realdata sits beside the checkout (/work/shared next to /work/main) or inside it
REALDATA = next((p for p in (_ROOT.parent / "shared" / "realdata", _ROOT / "shared" / "realdata") if p.is_dir()),
                _ROOT.parent / "shared" / "realdata")
HOPPER_PKL = REALDATA / "hopper-expert-v2_25.pkl"
WALKER_PKL = REALDATA / "walker2d-expert-v2_20.pkl"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def data_root(tmp_path, monkeypatch):
    """``$FROZEN_DT_DATA`` (returned) and ``$MINARI_DATASETS_PATH`` in tmp dirs, for every test."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("FROZEN_DT_DATA", str(root))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return root


# --- writers ---------------------------------------------------------------------------------------------------


def d4rl_arrays(n=20, obs_dim=11, act_dim=3, terminal_idx=(5,), timeout_idx=(12,), seed=0, next_obs=True):
    rng = np.random.default_rng(seed)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[list(terminal_idx)] = True
    timeouts[list(timeout_idx)] = True
    arrays = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }
    if next_obs:
        arrays["next_observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
    return arrays


def write_d4rl(path, arrays=None, *, metadata=None, d4rl_extras=True, **kwargs):
    """A D4RL-layout hdf5 file: the flat arrays, plus D4RL's ``infos/*`` and ``metadata/*`` that readers ignore."""
    arrays = d4rl_arrays(**kwargs) if arrays is None else arrays
    path = Path(path)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        if d4rl_extras:
            n = len(next(iter(arrays.values())))
            f.create_dataset("infos/qpos", data=np.zeros((n, 6), np.float32))
            f.create_dataset("infos/action_log_probs", data=np.zeros(n, np.float32))
            f.create_dataset("metadata/algorithm", data="SAC")
        if metadata is not None:
            f.attrs[METADATA_ATTR] = json.dumps(metadata)
    return path


def dt_paths(lengths=(6, 4, 5), obs_dim=11, act_dim=3, *, rewards=True, terminals=True, last_terminal=(True, False, False),
             seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for k, term in zip(lengths, last_terminal):
        p = {"observations": rng.normal(size=(k, obs_dim)).astype(np.float32),
             "actions": rng.uniform(-1, 1, size=(k, act_dim)).astype(np.float32)}
        if rewards:
            p["rewards"] = rng.normal(size=k).astype(np.float32)
        if terminals:
            p["terminals"] = np.zeros(k, bool)
            p["terminals"][-1] = term
        paths.append(p)
    return paths


def write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    path = Path(path)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# --- D4RL hdf5 -------------------------------------------------------------------------------------------------


def test_d4rl_hdf5_reads_the_real_layout(tmp_path):
    arrays = d4rl_arrays(n=20, terminal_idx=[5], timeout_idx=[12])
    path = write_d4rl(tmp_path / "hopper-medium-v2.hdf5", arrays)
    ds = read_file(path)
    for key in ("observations", "actions", "rewards", "next_observations"):
        np.testing.assert_array_equal(getattr(ds, key), arrays[key])
        assert getattr(ds, key).dtype == np.float32
    np.testing.assert_array_equal(ds.dones, arrays["terminals"])
    np.testing.assert_array_equal(ds.episode_starts, [0, 6, 13])
    np.testing.assert_array_equal(ds.episode_lengths, [6, 7, 7])
    np.testing.assert_array_equal(ds.episode_terminated, [True, False, False])
    assert ds.unterminated_tail is True
    assert ds.missing_keys == ()
    assert ds.source == {"kind": "file", "format": "d4rl-hdf5", "path": str(path), "env_version": "v4"}
    assert (ds.obs_dim, ds.act_dim, ds.n_episodes, ds.n_transitions) == (11, 3, 3, 20)
    np.testing.assert_allclose(ds.episode_returns(), [arrays["rewards"][s:e].sum() for s, e in ((0, 6), (6, 13), (13, 20))],
                               rtol=1e-6)


def test_d4rl_hdf5_without_next_observations(tmp_path):
    arrays = d4rl_arrays(next_obs=False)
    ds = read_d4rl_hdf5(write_d4rl(tmp_path / "x.hdf5", arrays, d4rl_extras=False))
    assert ds.next_observations is None
    np.testing.assert_array_equal(ds.observations, arrays["observations"])
    tv = TransitionView(ds, normalize=False)  # s' from the following step; truncated episodes lose their last step
    assert len(tv) == ds.n_transitions - int((~ds.episode_terminated).sum())


@pytest.mark.parametrize("flag_dtype", [bool, np.float32, np.float64])
def test_d4rl_hdf5_flag_dtypes(tmp_path, flag_dtype):
    arrays = d4rl_arrays(terminal_idx=[3], timeout_idx=[9, 19])
    arrays["terminals"] = arrays["terminals"].astype(flag_dtype)
    arrays["timeouts"] = arrays["timeouts"].astype(flag_dtype)
    ds = read_file(write_d4rl(tmp_path / "flags.h5", arrays))
    np.testing.assert_array_equal(ds.episode_lengths, [4, 6, 10])
    np.testing.assert_array_equal(ds.episode_terminated, [True, False, False])
    assert ds.unterminated_tail is False


def test_generated_hdf5_is_recorded_as_generated(tmp_path):
    metadata = {"env_version": "v5", "env_id": "Hopper-v5", "policy": "random", "seed": 3, "frozen_dt_version": "0.1.0"}
    path = write_d4rl(tmp_path / "hopper-random-v2.hdf5", metadata=metadata)
    ds = read_file(path)
    assert ds.source["kind"] == "generated"
    assert ds.source["format"] == "d4rl-hdf5" and ds.source["path"] == str(path)
    assert ds.source["env_version"] == "v5"
    assert ds.source["generated"] == metadata


def test_generated_hdf5_version_survives_load_task_dataset(data_root):
    write_d4rl(data_root / "hopper-random-v2.hdf5", metadata={"env_version": "v5"})
    ds = load_task_dataset("hopper-random-v2")
    assert ds.source["kind"] == "generated" and ds.source["env_version"] == "v5"
    assert ds.source["task"] == "hopper-random-v2"


@pytest.mark.parametrize("missing", D4RL_KEYS)
def test_d4rl_hdf5_missing_key_is_named(tmp_path, missing):
    arrays = d4rl_arrays()
    del arrays[missing]
    path = write_d4rl(tmp_path / "partial.hdf5", arrays)
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    msg = str(e.value)
    assert str(path) in msg and missing in msg and "missing" in msg


def test_hdf5_with_no_datasets_at_all(tmp_path):
    path = tmp_path / "empty.hdf5"
    h5py.File(path, "w").close()
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value) and "observations" in str(e.value)


@pytest.mark.parametrize("kind", ["group", "datatype", "dangling-link", "external-link"])
def test_hdf5_key_that_is_not_a_dataset(tmp_path, kind):
    arrays = d4rl_arrays()
    del arrays["observations"]
    path = write_d4rl(tmp_path / f"{kind}.hdf5", arrays, d4rl_extras=False)
    with h5py.File(path, "a") as f:
        if kind == "group":
            f.create_group("observations")
        elif kind == "datatype":
            f["observations"] = np.dtype("f4")
        elif kind == "dangling-link":
            f["observations"] = h5py.SoftLink("/nowhere")
        else:
            f["observations"] = h5py.ExternalLink("missing.h5", "/observations")
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value)


def test_read_file_with_explicit_format_ignores_the_suffix(tmp_path):
    """Downloads check a ``.part`` file with the format of their destination."""
    path = write_d4rl(tmp_path / "walker2d_medium-v2.hdf5.part", d4rl_arrays(obs_dim=17, act_dim=6))
    with pytest.raises(FrozenDTError, match="unknown dataset format"):
        read_file(path)
    ds = read_file(path, fmt=detect_format(Path("walker2d_medium-v2.hdf5")))
    assert ds.obs_dim == 17 and ds.source["format"] == "d4rl-hdf5"


# --- Decision-Transformer pickles ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_dt_pickle_with_rewards_and_terminals(tmp_path, protocol):
    paths = dt_paths()
    paths[0]["next_observations"] = paths[0]["observations"] + 1  # only some paths: not used
    ds = read_file(write_pickle(tmp_path / "hopper-medium-v2.pkl", paths, protocol))
    np.testing.assert_array_equal(ds.observations, np.concatenate([p["observations"] for p in paths]))
    np.testing.assert_array_equal(ds.actions, np.concatenate([p["actions"] for p in paths]))
    np.testing.assert_array_equal(ds.rewards, np.concatenate([p["rewards"] for p in paths]))
    np.testing.assert_array_equal(ds.dones, np.concatenate([p["terminals"] for p in paths]))
    np.testing.assert_array_equal(ds.episode_lengths, [6, 4, 5])
    np.testing.assert_array_equal(ds.episode_terminated, [True, False, False])
    assert ds.missing_keys == () and ds.next_observations is None
    assert ds.source["format"] == "dt-pickle" and ds.source["kind"] == "file"
    np.testing.assert_allclose(ds.episode_returns(), [p["rewards"].sum() for p in paths], rtol=1e-6)
    assert len(TransitionView(ds)) > 0


def test_dt_pickle_with_next_observations_everywhere(tmp_path):
    paths = dt_paths()
    for p in paths:
        p["next_observations"] = p["observations"] * 2
    ds = read_file(write_pickle(tmp_path / "x.pkl", paths))
    np.testing.assert_array_equal(ds.next_observations, np.concatenate([p["observations"] * 2 for p in paths]))


def test_dt_pickle_containers_and_numpy_scalars_load(tmp_path):
    """Tuples of OrderedDicts, numpy scalars, 1-column rewards: all plain data the safe unpickler admits."""
    paths = dt_paths()
    mixed = tuple(OrderedDict(p, rewards=p["rewards"][:, None], ret=np.float32(p["rewards"].sum()), n=np.int64(3))
                  for p in paths)
    ds = read_file(write_pickle(tmp_path / "x.pickle", mixed))
    assert ds.rewards.shape == (15,)
    np.testing.assert_array_equal(ds.rewards, np.concatenate([p["rewards"] for p in paths]))


def test_dt_pickle_without_rewards_loads_for_behaviour_cloning_only(tmp_path):
    path = write_pickle(tmp_path / "bc.pkl", dt_paths(rewards=False, terminals=False))
    ds = read_file(path)
    assert ds.missing_keys == ("rewards", "terminals")
    assert ds.rewards is None and not ds.dones.any() and not ds.episode_terminated.any()
    np.testing.assert_array_equal(ds.episode_lengths, [6, 4, 5])
    assert "behaviour cloning" in ds.source["usable_for"]
    assert_refuses_rewards(ds, str(path))
    view = SequenceView(ds, context=4, use_returns=False)
    batch = view.sample(8, np.random.default_rng(0))
    assert batch["observations"].shape == (8, 4, 11) and not batch["returns_to_go"].any()


def test_dt_pickle_with_rewards_in_only_some_paths(tmp_path):
    paths = dt_paths()
    del paths[1]["rewards"]
    ds = read_file(write_pickle(tmp_path / "x.pkl", paths))
    assert ds.missing_keys == ("rewards",) and ds.rewards is None
    np.testing.assert_array_equal(ds.episode_terminated, [True, False, False])  # terminals are still used


def assert_refuses_rewards(ds, where):
    for use in (ds.episode_returns, lambda: TransitionView(ds), lambda: SequenceView(ds, context=5, use_returns=True)):
        with pytest.raises(FrozenDTError) as e:
            use()
        assert "'rewards'" in str(e.value) and where in str(e.value)
    summary = ds.summary()
    assert summary["return_mean"] is None and summary["missing_keys"] == list(ds.missing_keys)


@pytest.mark.parametrize("obj,match", [
    ({"observations": np.zeros((2, 2))}, "list of path dicts"),
    ([], "list of path dicts"),
    ([np.zeros((3, 3))], "list of path dicts"),
    ([{"observations": np.zeros((3, 11))}], "'actions'"),
    ([{"observations": [[0.0] * 11] * 3, "actions": np.zeros((3, 3))}], "'observations'"),
])
def test_dt_pickle_with_wrong_structure(tmp_path, obj, match):
    path = write_pickle(tmp_path / "wrong.pkl", obj)
    with pytest.raises(FrozenDTError, match=match) as e:
        read_file(path)
    assert str(path) in str(e.value)


def test_dt_pickle_with_mismatched_lengths_names_path_and_keys(tmp_path):
    paths = dt_paths()
    paths[2]["actions"] = paths[2]["actions"][:-1]
    path = write_pickle(tmp_path / "x.pkl", paths)
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    msg = str(e.value)
    assert str(path) in msg and "path 2" in msg and "observations=5" in msg and "actions=4" in msg


# --- the real D4RL pickles (shared/realdata) --------------------------------------------------------------------

needs_hopper = pytest.mark.skipif(not HOPPER_PKL.is_file(), reason=f"{HOPPER_PKL} not present")
needs_walker = pytest.mark.skipif(not WALKER_PKL.is_file(), reason=f"{WALKER_PKL} not present")


@pytest.fixture(scope="module")
def hopper_real():
    if not HOPPER_PKL.is_file():
        pytest.skip(f"{HOPPER_PKL} not present")
    return read_file(HOPPER_PKL)


@needs_hopper
def test_real_hopper_pickle_loads(hopper_real):
    ds = hopper_real
    assert ds.n_episodes == 25 and ds.n_transitions == 24155
    assert sorted(ds.episode_lengths) == [531, 624] + [1000] * 23
    assert ds.episode_lengths[0] == 1000 and ds.episode_lengths[-1] == 531
    assert (ds.obs_dim, ds.act_dim) == (11, 3)
    assert ds.missing_keys == ("rewards", "terminals")
    assert ds.rewards is None and not ds.dones.any()
    assert not ds.episode_terminated.any() and ds.unterminated_tail is False
    assert ds.source["kind"] == "file" and ds.source["format"] == "dt-pickle" and ds.source["path"] == str(HOPPER_PKL)
    assert np.isfinite(ds.observations).all() and ds.observations.dtype == np.float32
    summary = ds.summary(get_task("hopper-expert-v2"))
    assert summary["n_episodes"] == 25 and summary["return_mean"] is None and summary["missing_keys"] == ["rewards", "terminals"]


@needs_hopper
def test_real_hopper_pickle_refuses_what_needs_rewards(hopper_real):
    assert_refuses_rewards(hopper_real, str(HOPPER_PKL))


@needs_hopper
def test_real_hopper_pickle_sequence_view_without_returns(hopper_real):
    ds = hopper_real
    view = SequenceView(ds, context=20, use_returns=False)
    batch = view.sample(64, np.random.default_rng(0))
    assert batch["observations"].shape == (64, 20, 11) and batch["actions"].shape == (64, 20, 3)
    assert not batch["returns_to_go"].any() and not batch["rewards"].any()
    assert batch["mask"].any(axis=1).all()
    # a window never crosses an episode: its real timesteps count up by one
    for ts, mask in zip(batch["timesteps"], batch["mask"]):
        np.testing.assert_array_equal(np.diff(ts[mask]), 1)
    idx, mask = view.window_indices(np.array([999, 1000, ds.n_transitions - 1]))
    assert mask[0].sum() == 1 and mask[1].sum() == 20 and mask[2].sum() == 1  # 999 ends episode 0


@needs_hopper
def test_real_hopper_pickle_fits_its_task(hopper_real, data_root):
    assert check_task_dims(hopper_real, get_task("hopper-expert-v2")) == "v4"
    with pytest.raises(FrozenDTError, match="walker2d-expert-v2"):
        check_task_dims(hopper_real, get_task("walker2d-expert-v2"))
    shutil.copy(HOPPER_PKL, data_root / "hopper-expert-v2.pkl")  # the registry's pickle name
    ds = load_task_dataset("hopper-expert-v2")
    assert ds.n_transitions == 24155 and ds.source["task"] == "hopper-expert-v2" and ds.source["env_version"] == "v4"
    assert ds.source["path"] == str(data_root / "hopper-expert-v2.pkl")


@needs_walker
def test_real_walker_pickle_loads_through_load_any():
    ds, task = load_any(str(WALKER_PKL))
    assert task is not None and task.name == "walker2d-expert-v2"  # guessed from the file name
    assert ds.n_episodes == 20 and ds.n_transitions == 20000
    np.testing.assert_array_equal(ds.episode_lengths, [1000] * 20)
    assert (ds.obs_dim, ds.act_dim) == (17, 6)
    assert ds.missing_keys == ("rewards", "terminals")
    assert ds.source["task"] == "walker2d-expert-v2" and ds.source["env_version"] == "v4"
    assert_refuses_rewards(ds, str(WALKER_PKL))
    assert SequenceView(ds, context=10, use_returns=False).sample(4, np.random.default_rng(0))["mask"].shape == (4, 10)


# --- the safe unpickler ---------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as ``func(*args)``: what a malicious dataset pickle does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious_payloads(marker: Path):
    import subprocess

    cmd = f"touch {marker}"
    return {
        "os.system": _Reduce(os.system, cmd),
        "eval": _Reduce(eval, f"open({str(marker)!r}, 'w').close()"),
        "exec": _Reduce(exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess": _Reduce(subprocess.check_call, ["touch", str(marker)]),
        "numpy.save": _Reduce(np.save, str(marker), np.zeros(1)),  # an allowed module, a disallowed name
        "getattr": _Reduce(getattr, str, "join"),  # harmless, but builtins.getattr is the usual gadget
    }


@pytest.mark.parametrize("name", ["os.system", "eval", "exec", "subprocess", "numpy.save", "getattr"])
@pytest.mark.parametrize("where", ["top", "inside-path"])
def test_safe_unpickler_refuses_malicious_pickles(tmp_path, name, where):
    marker = tmp_path / "pwned"
    payload = _malicious_payloads(marker)[name]
    obj = payload if where == "top" else [{"observations": np.zeros((2, 11)), "actions": np.zeros((2, 3)), "x": payload}]
    path = write_pickle(tmp_path / "evil.pkl", obj)
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value) and "refused" in str(e.value)
    assert not marker.exists() and not marker.with_suffix(".npy").exists()


def test_safe_unpickler_refuses_a_hand_written_protocol0_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(FrozenDTError, match="os.system is not allowed"):
        safe_load_pickle(path)
    assert not marker.exists()


def test_safe_unpickler_names_the_refused_global():
    data = pickle.dumps(_Reduce(os.system, "true"))
    with pytest.raises(pickle.UnpicklingError, match=r"(posix|nt|os)\.system"):
        SafeUnpickler(io.BytesIO(data)).load()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_, np.uint8])
@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_safe_unpickler_admits_numpy_arrays(dtype, protocol):
    arrays = {"a": np.arange(12).reshape(3, 4).astype(dtype), "b": np.asfortranarray(np.ones((2, 3), dtype)),
              "s": np.array(3, dtype)[()], "d": np.dtype(dtype), "t": (1, 2.0, "x", None, True),
              "o": OrderedDict(x=np.zeros(2, dtype))}
    if protocol >= 3:  # protocols < 3 name sets by their Python 2 module (__builtin__), which is not admitted
        arrays["f"], arrays["set"] = frozenset({1}), {2}
    out = SafeUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=protocol))).load()
    for key in ("a", "b"):
        np.testing.assert_array_equal(out[key], arrays[key])
        assert out[key].dtype == np.dtype(dtype)
    for key in ("s", "d", "t", "f", "set"):
        assert out.get(key) == arrays.get(key)
    assert isinstance(out["o"], OrderedDict)


# --- OGBench npz ------------------------------------------------------------------------------------------------

SCENE_TASK1_GOAL = {"block_xyz": (0.35, 0.05, 0.02), "buttons": (1, 1), "drawer": -0.16, "window": 0.2}  # scene_env.py
CUBE_DOUBLE_TASK1_GOAL = ((0.425, 0.0, 0.02), (0.425, 0.1, 0.02))  # cube_env.py, task1


def _rollout_ogbench(env_id, lengths, seed):
    """Trajectories recorded the way OGBench's generate_manipspace.py records them.

    Each step stores (ob, action, done, prev_qpos, prev_qvel[, prev_button_states]) with ``done`` on the last
    stored step of a trajectory, whose successor state is not stored.
    """
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ogbench  # noqa: F401  (registers the env ids)

        env = gym.make(env_id, terminate_at_goal=False, mode="data_collection", max_episode_steps=max(lengths) + 10)
    has_buttons = hasattr(env.unwrapped, "_cur_button_states")
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")}
    if has_buttons:
        out["button_states"] = []
    for i, length in enumerate(lengths):
        ob, info = env.reset(seed=seed + i)
        for t in range(length):
            action = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
            next_ob, _, _, _, info = env.step(action)
            out["observations"].append(ob)
            out["actions"].append(action)
            out["terminals"].append(t == length - 1)
            out["qpos"].append(info["prev_qpos"])
            out["qvel"].append(info["prev_qvel"])
            if has_buttons:
                out["button_states"].append(info["prev_button_states"])
            ob = next_ob
    env.close()
    dtypes = {"terminals": bool, "button_states": np.int64}
    return {k: np.array(v, dtype=dtypes.get(k, np.float32)) for k, v in out.items()}


def _solve_scene_task1(d, rows):
    """Put the recorded state of ``rows`` at scene task1's goal (the relabelling reads only qpos/button_states)."""
    d["qpos"][rows, 14:17] = SCENE_TASK1_GOAL["block_xyz"]
    d["button_states"][rows] = SCENE_TASK1_GOAL["buttons"]
    d["qpos"][rows, 23] = SCENE_TASK1_GOAL["drawer"]  # 14 + 1 cube * 7 + 2 buttons
    d["qpos"][rows, 24] = SCENE_TASK1_GOAL["window"]


@pytest.fixture(scope="module")
def ogbench_dir(tmp_path_factory):
    """scene-play-v0.npz / cube-double-play-v0.npz (+ their -val.npz) from short real rollouts."""
    root = tmp_path_factory.mktemp("ogbench")
    scene = _rollout_ogbench("scene-v0", [30, 45, 25, 20, 15], seed=0)
    split = 100  # the first three trajectories train, the last two validate
    _solve_scene_task1(scene, [40, 41, 42, 43, 60])  # solved mid-trajectory (and once more in trajectory 2)
    scene["button_states"][44:48] = SCENE_TASK1_GOAL["buttons"]  # partly solved: intermediate rewards
    _solve_scene_task1(scene, [105])  # in the validation split
    np.savez_compressed(root / "scene-play-v0.npz", **{k: v[:split] for k, v in scene.items()})
    np.savez_compressed(root / "scene-play-v0-val.npz", **{k: v[split:] for k, v in scene.items()})

    cube = _rollout_ogbench("cube-double-v0", [25, 20, 10], seed=1)
    cube["qpos"][[10, 11, 30], 14:17] = CUBE_DOUBLE_TASK1_GOAL[0]
    cube["qpos"][[10, 11, 30], 21:24] = CUBE_DOUBLE_TASK1_GOAL[1]
    cube["qpos"][[12], 14:17] = CUBE_DOUBLE_TASK1_GOAL[0]  # one of two cubes in place
    assert "button_states" not in cube  # OGBench's cube datasets have none
    np.savez_compressed(root / "cube-double-play-v0.npz", **{k: v[:45] for k, v in cube.items()})
    np.savez_compressed(root / "cube-double-play-v0-val.npz", **{k: v[45:] for k, v in cube.items()})
    return root


def _ogbench_load(path, **kwargs):
    import ogbench

    return ogbench.load_dataset(str(path), **kwargs)


def test_ogbench_npz_matches_ogbench_load_dataset(ogbench_dir):
    path = ogbench_dir / "scene-play-v0.npz"
    ref = _ogbench_load(path, add_info=True)
    ds = read_file(path)
    for key in ("observations", "actions", "next_observations"):
        np.testing.assert_array_equal(getattr(ds, key), ref[key])
        assert getattr(ds, key).dtype == ref[key].dtype
    for key in ("qpos", "qvel", "button_states"):
        np.testing.assert_array_equal(ds.extras[key], ref[key])
    # OGBench's regular dataset marks the last valid transition of each trajectory: our episode ends
    np.testing.assert_array_equal(np.flatnonzero(ref["terminals"]), ds.episode_ends)
    np.testing.assert_array_equal(ds.episode_lengths, [29, 44, 24])  # each trajectory loses its last stored state
    assert not ds.episode_terminated.any() and not ds.dones.any() and ds.unterminated_tail is False
    assert ds.rewards is None and ds.missing_keys == ("rewards",)
    assert ds.source == {"kind": "file", "format": "ogbench-npz", "path": str(path)}
    assert check_task_dims(ds, get_task("scene-play-v0")) is None


def test_ogbench_npz_without_info_keys(tmp_path, ogbench_dir):
    with np.load(ogbench_dir / "scene-play-v0.npz") as f:
        arrays = {k: f[k] for k in ("observations", "actions", "terminals")}
    path = tmp_path / "plain.npz"
    np.savez(path, **arrays)
    ds = read_file(path)
    assert ds.extras == {}
    np.testing.assert_array_equal(ds.next_observations, _ogbench_load(path)["next_observations"])
    with pytest.raises(FrozenDTError) as e:  # single-task relabelling needs qpos
        read_file(path, task=get_task("scene-play-singletask-task1-v0"))
    assert str(path) in str(e.value) and "qpos" in str(e.value)


def _ogbench_singletask_reference(name, path):
    import ogbench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env, train, val = ogbench.make_env_and_datasets(name, dataset_path=str(path))
    env.close()
    return train, val


def test_ogbench_singletask_relabelling_matches_ogbench(ogbench_dir):
    name = "scene-play-singletask-task1-v0"
    path = ogbench_dir / "scene-play-v0.npz"
    train, val = _ogbench_singletask_reference(name, path)
    ds = read_file(path, task=get_task(name))
    np.testing.assert_array_equal(ds.rewards, train["rewards"])
    np.testing.assert_array_equal(ds.dones, train["masks"] == 0)
    np.testing.assert_array_equal(ds.observations, train["observations"])
    np.testing.assert_array_equal(ds.next_observations, train["next_observations"])
    assert ds.dones.sum() == 5 and len(np.unique(ds.rewards)) >= 3 and ds.rewards.max() == 0  # crafted rows
    assert not ds.episode_terminated.any()  # solving the task does not end a play trajectory
    assert ds.missing_keys == () and ds.source["relabelled_for"] == name
    np.testing.assert_allclose(ds.episode_returns(), [train["rewards"][s:e + 1].sum()
                                                      for s, e in zip(ds.episode_starts, ds.episode_ends)])
    val_ds = read_file(ogbench_dir / "scene-play-v0-val.npz", task=get_task(name))
    np.testing.assert_array_equal(val_ds.rewards, val["rewards"])
    np.testing.assert_array_equal(val_ds.dones, val["masks"] == 0)
    assert val_ds.dones.sum() == 1


def test_ogbench_singletask_relabelling_without_button_states_matches_ogbench(ogbench_dir):
    """Cube datasets store no button_states (OGBench records them only for envs with buttons)."""
    name = "cube-double-play-singletask-task1-v0"
    path = ogbench_dir / "cube-double-play-v0.npz"
    train, _ = _ogbench_singletask_reference(name, path)
    ds = read_file(path, task=get_task(name))
    np.testing.assert_array_equal(ds.rewards, train["rewards"])
    np.testing.assert_array_equal(ds.dones, train["masks"] == 0)
    assert ds.dones.sum() == 3 and -1.0 in ds.rewards


def test_ogbench_task_through_load_task_dataset(ogbench_dir, data_root):
    shutil.copy(ogbench_dir / "scene-play-v0.npz", data_root / "scene-play-v0.npz")
    goal = load_task_dataset("scene-play-v0")
    assert goal.rewards is None and goal.source["task"] == "scene-play-v0" and goal.source["env_version"] is None
    single = load_task_dataset(get_task("scene-play-singletask-task1-v0"))
    assert single.rewards is not None and single.dones.sum() == 5
    assert single.source["task"] == "scene-play-singletask-task1-v0" and single.source["kind"] == "file"
    with pytest.raises(FrozenDTError) as e:  # 40-dim scene data is no cube-double data
        load_any(str(data_root / "scene-play-v0.npz"), task_name="cube-double-play-v0")
    assert str(data_root / "scene-play-v0.npz") in str(e.value) and "cube-double-play-v0" in str(e.value)


def test_load_any_on_a_shared_ogbench_file_picks_the_goal_conditioned_task(ogbench_dir):
    """scene-play-v0.npz serves scene-play-v0 and its five single-task variants: no single task is guessed."""
    ds, task = load_any(str(ogbench_dir / "scene-play-v0.npz"))
    assert task.name == "scene-play-v0" and ds.rewards is None and ds.source["task"] == "scene-play-v0"
    ds, task = load_any(str(ogbench_dir / "scene-play-v0.npz"), task_name="scene-play-singletask-task1-v0")
    assert task.name == "scene-play-singletask-task1-v0" and ds.dones.sum() == 5


@pytest.mark.parametrize("file_name,task_name", [
    ("scene-play-v0.npz", "scene-play-v0"),
    ("scene-play-v0-val.npz", "scene-play-v0"),
    ("cube-double-play-v0.npz", "cube-double-play-v0"),
    ("walker2d_medium_replay-v2.hdf5", "walker2d-medium-replay-v2"),
    ("walker2d_medium-v2.hdf5", "walker2d-medium-v2"),
    ("hopper-medium-expert-v2.hdf5", "hopper-medium-expert-v2"),
    ("hopper-expert-v2_25.pkl", "hopper-expert-v2"),
    ("halfcheetah-medium-v2.pkl", "halfcheetah-medium-v2"),
    ("my-data.hdf5", None),
])
def test_guess_task_from_file_name(file_name, task_name):
    task = guess_task(Path("/somewhere") / file_name)
    assert (task.name if task else None) == task_name


def test_ogbench_npz_missing_key_is_named(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, observations=np.zeros((4, 40), np.float32), actions=np.zeros((4, 5), np.float32))
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value) and "terminals" in str(e.value)


@pytest.mark.parametrize("terminals", [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
def test_ogbench_npz_terminals_must_close_every_trajectory(tmp_path, terminals):
    path = tmp_path / "x.npz"
    np.savez(path, observations=np.zeros((6, 40), np.float32), actions=np.zeros((6, 5), np.float32),
             terminals=np.array(terminals, bool))
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value) and "'terminals'" in str(e.value)


def test_ogbench_npz_nan_is_named(tmp_path):
    obs = np.zeros((6, 40), np.float32)
    obs[3, 7] = np.nan
    path = tmp_path / "x.npz"
    np.savez(path, observations=obs, actions=np.zeros((6, 5), np.float32), terminals=np.array([0, 0, 1, 0, 0, 1], bool))
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value) and "'observations'" in str(e.value) and "step 3" in str(e.value)


def test_npz_with_object_arrays_is_not_unpickled(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, observations=np.array([{"a": 1}] * 4, dtype=object), actions=np.zeros((4, 5)),
             terminals=np.array([0, 0, 0, 1], bool))
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value)


# --- Minari -----------------------------------------------------------------------------------------------------

MINARI_ID = "mujoco/hopper/medium-v0"  # the minari_id of hopper-medium-v2


def _hopper_buffers(n_episodes, max_steps, seed):
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer

    env = gym.make("Hopper-v5", max_episode_steps=max_steps)
    buffers = []
    for i in range(n_episodes):
        ob, _ = env.reset(seed=seed + i)
        env.action_space.seed(seed + i)
        obs, acts, rews, terms, truncs = [ob], [], [], [], []
        while True:
            action = env.action_space.sample()
            ob, reward, terminated, truncated, _ = env.step(action)
            obs.append(ob), acts.append(action), rews.append(reward), terms.append(terminated), truncs.append(truncated)
            if terminated or truncated:
                break
        buffers.append(EpisodeBuffer(id=i, seed=seed + i, observations=np.array(obs), actions=np.array(acts),
                                     rewards=rews, terminations=terms, truncations=truncs))
    return env, buffers


def _create_minari(dataset_id, root, **kwargs):
    import minari

    env, buffers = _hopper_buffers(**kwargs)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        minari.create_dataset_from_buffers(dataset_id, buffers, env=env, algorithm_name="random",
                                           author="frozen-dt tests", author_email="tests@example.invalid",
                                           code_permalink="tests/test_readers.py", description="tiny test dataset")
    env.close()


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    """A tiny Minari dataset, written by minari itself, from random Hopper-v5 episodes (some terminated)."""
    root = tmp_path_factory.mktemp("minari")
    _create_minari(MINARI_ID, root, n_episodes=6, max_steps=25, seed=0)
    return root


def _minari_episodes(dataset_id):
    import minari

    return list(minari.load_dataset(dataset_id).iterate_episodes())


def check_against_minari(ds, episodes):
    lengths = [len(ep.actions) for ep in episodes]
    assert ds.n_episodes == len(episodes) and ds.n_transitions == sum(lengths)
    np.testing.assert_array_equal(ds.episode_lengths, lengths)
    np.testing.assert_array_equal(ds.episode_terminated, [bool(ep.terminations[-1]) for ep in episodes])
    np.testing.assert_allclose(ds.episode_returns(), [ep.rewards.sum() for ep in episodes], rtol=1e-5)
    np.testing.assert_array_equal(ds.observations, np.concatenate([ep.observations[:-1] for ep in episodes]).astype(np.float32))
    np.testing.assert_array_equal(ds.next_observations, np.concatenate([ep.observations[1:] for ep in episodes]).astype(np.float32))
    np.testing.assert_array_equal(ds.actions, np.concatenate([ep.actions for ep in episodes]).astype(np.float32))
    np.testing.assert_array_equal(ds.dones, np.concatenate([ep.terminations for ep in episodes]))
    assert ds.unterminated_tail is False and ds.missing_keys == ()


def test_read_minari_matches_minari_episodes(minari_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    episodes = _minari_episodes(MINARI_ID)
    terminated = [bool(ep.terminations[-1]) for ep in episodes]
    truncated = [bool(ep.truncations[-1]) for ep in episodes]
    assert any(terminated) and any(truncated)  # both kinds of episode end are exercised
    ds = read_minari(MINARI_ID)
    check_against_minari(ds, episodes)
    assert ds.source["kind"] == "minari" and ds.source["minari_id"] == MINARI_ID and ds.source["env_version"] == "v5"
    assert Path(ds.source["path"]).is_relative_to(minari_root)


def test_minari_dataset_found_by_load_task_dataset(minari_root, monkeypatch, data_root):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    task = get_task("hopper-medium-v2")
    assert task.minari_id == MINARI_ID
    assert locate(task).kind == "minari"
    ds = load_task_dataset(task)
    check_against_minari(ds, _minari_episodes(MINARI_ID))
    assert ds.source["kind"] == "minari" and ds.source["task"] == "hopper-medium-v2" and ds.source["env_version"] == "v5"
    ds2, task2 = load_any("hopper-medium-v2")
    assert task2.name == "hopper-medium-v2" and ds2.n_transitions == ds.n_transitions


def test_minari_prefix_in_load_any(minari_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    ds, task = load_any(f"minari:{MINARI_ID}")
    assert task is None and ds.source["minari_id"] == MINARI_ID
    check_against_minari(ds, _minari_episodes(MINARI_ID))


def test_a_file_in_the_data_dir_comes_before_minari(minari_root, monkeypatch, data_root):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    path = write_d4rl(data_root / "hopper_medium-v2.hdf5")
    ds = load_task_dataset("hopper-medium-v2")
    assert ds.source["kind"] == "file" and ds.source["path"] == str(path)


def test_unknown_minari_dataset(tmp_path, monkeypatch):
    with pytest.raises(FrozenDTError, match="nope/hopper/none-v0"):
        read_minari("nope/hopper/none-v0")
    with pytest.raises(FrozenDTError, match="nope/hopper/none-v0"):
        load_any("minari:nope/hopper/none-v0")


def test_minari_data_collector_dataset(tmp_path, monkeypatch):
    """A dataset recorded with minari's DataCollector (needs minari[create], i.e. jax)."""
    import gymnasium as gym
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "collector"))
    env = minari.DataCollector(gym.make("Hopper-v5", max_episode_steps=20))
    for i in range(5):
        env.reset(seed=10 + i)
        env.action_space.seed(10 + i)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env.create_dataset("test/hopper/collector-v0", algorithm_name="random", author="tests",
                           author_email="tests@example.invalid", code_permalink="tests", description="test")
    env.close()
    ds, _ = load_any("minari:test/hopper/collector-v0")
    episodes = _minari_episodes("test/hopper/collector-v0")
    assert len(episodes) == 5
    check_against_minari(ds, episodes)


# --- corrupt and unknown files ------------------------------------------------------------------------------


def _valid_file(kind, tmp_path):
    if kind == "hdf5":
        return write_d4rl(tmp_path / "valid.hdf5", d4rl_arrays(n=300))
    if kind == "npz":
        path = tmp_path / "valid.npz"
        rng = np.random.default_rng(0)
        terminals = np.zeros(300, bool)
        terminals[[99, 299]] = True
        np.savez_compressed(path, observations=rng.normal(size=(300, 40)).astype(np.float32),
                            actions=rng.normal(size=(300, 5)).astype(np.float32), terminals=terminals,
                            qpos=rng.normal(size=(300, 25)).astype(np.float32))
        return path
    return write_pickle(tmp_path / "valid.pkl", dt_paths(lengths=(100, 100, 100), last_terminal=(True, False, True)))


@pytest.mark.parametrize("kind", ["hdf5", "npz", "pkl"])
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_files_are_refused_naming_the_file(tmp_path, kind, keep):
    path = _valid_file(kind, tmp_path)
    read_file(path)  # valid before it is cut
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FrozenDTError) as e:
        read_file(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("suffix", [".hdf5", ".h5", ".npz", ".pkl", ".pickle"])
def test_garbage_bytes_are_refused_naming_the_file(tmp_path, suffix):
    for seed in range(300):
        rng = np.random.default_rng(seed)
        path = tmp_path / f"garbage{seed}{suffix}"
        path.write_bytes(rng.bytes(int(rng.integers(0, 2000))))
        with pytest.raises(FrozenDTError) as e:
            read_file(path)
        assert str(path) in str(e.value)


@pytest.mark.parametrize("kind", ["npz", "pkl"])
def test_corrupted_bytes_load_or_are_refused_naming_the_file(tmp_path, kind):
    """Flip bytes all over a valid file: it either still loads or fails with a FrozenDTError, never a traceback.

    Not done for hdf5: some corruptions crash the HDF5 C library itself (a segfault no reader can catch).
    """
    path = _valid_file(kind, tmp_path)
    good = path.read_bytes()
    rng = np.random.default_rng(1)
    for pos in np.unique(rng.integers(0, len(good), size=400)):
        data = bytearray(good)
        data[pos] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            read_file(path)
        except FrozenDTError as e:
            assert str(path) in str(e)


def test_unknown_suffix_is_refused(tmp_path):
    path = tmp_path / "walker2d-medium-v2.csv"
    path.write_text("1,2,3\n")
    for call in (lambda: read_file(path), lambda: load_any(str(path))):
        with pytest.raises(FrozenDTError) as e:
            call()
        msg = str(e.value)
        assert str(path) in msg and "unknown dataset format" in msg
        assert ".hdf5" in msg and ".npz" in msg and ".pkl" in msg


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "nothing.hdf5"
    with pytest.raises(FrozenDTError, match="no such file") as e:
        read_file(path)
    assert str(path) in str(e.value)
    with pytest.raises(FrozenDTError, match="no such file"):
        load_any(str(path))


# --- sources: where a task's dataset is looked for -----------------------------------------------------------

LOCOMOTION_FILE_CASES = [(task.name, name) for task in (get_task("walker2d-medium-v2"), get_task("hopper-medium-replay-v2"),
                                                        get_task("halfcheetah-medium-expert-v2"), get_task("ant-random-v2"))
                         for name in task.dataset_files]


def test_registry_lists_d4rls_own_file_names():
    assert get_task("walker2d-medium-v2").dataset_files == (
        "walker2d-medium-v2.hdf5", "walker2d_medium-v2.hdf5", "walker2d-medium-v2.pkl")
    assert "hopper_medium_replay-v2.hdf5" in get_task("hopper-medium-replay-v2").dataset_files


@pytest.mark.parametrize("task_name,file_name", LOCOMOTION_FILE_CASES)
def test_a_file_under_any_registered_name_is_found(data_root, task_name, file_name):
    task = get_task(task_name)
    obs_dim, act_dim = task.obs_dim("v4"), task.act_dim
    path = data_root / file_name
    if file_name.endswith(".pkl"):
        write_pickle(path, dt_paths(obs_dim=obs_dim, act_dim=act_dim))
    else:
        write_d4rl(path, obs_dim=obs_dim, act_dim=act_dim)
    ds = load_task_dataset(task_name)
    assert ds.source["path"] == str(path) and ds.source["kind"] == "file"
    assert ds.source["task"] == task_name and ds.source["env_version"] == "v4"
    assert ds.obs_dim == obs_dim
    ds2, task2 = load_any(task_name)
    assert task2 is task and ds2.source["path"] == str(path)


def test_names_are_tried_in_registry_order(data_root):
    for name in reversed(get_task("walker2d-medium-v2").dataset_files):
        if name.endswith(".pkl"):
            write_pickle(data_root / name, dt_paths(obs_dim=17, act_dim=6))
        else:
            write_d4rl(data_root / name, obs_dim=17, act_dim=6)
        assert load_task_dataset("walker2d-medium-v2").source["path"] == str(data_root / name)


def test_downloaded_file_is_recorded_as_downloaded(data_root):
    path = write_d4rl(data_root / "walker2d_medium-v2.hdf5", obs_dim=17, act_dim=6)
    record = {"url": "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/walker2d_medium-v2.hdf5",
              "sha256": "0" * 64}
    (data_root / "walker2d_medium-v2.hdf5.source.json").write_text(json.dumps(record))
    ds = load_task_dataset("walker2d-medium-v2")
    assert ds.source["kind"] == "downloaded" and ds.source["download"] == record and ds.source["path"] == str(path)


def test_wrong_dims_through_load_task_dataset(data_root):
    path = write_d4rl(data_root / "walker2d_medium-v2.hdf5", obs_dim=11, act_dim=3)  # hopper data, walker name
    with pytest.raises(FrozenDTError) as e:
        load_task_dataset("walker2d-medium-v2")
    assert str(path) in str(e.value) and "walker2d-medium-v2" in str(e.value)
    path = write_d4rl(data_root / "walker2d_medium-v2.hdf5", obs_dim=18, act_dim=6)
    with pytest.raises(FrozenDTError, match="observations have 18 dims") as e:
        load_task_dataset("walker2d-medium-v2")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("task_name", ["walker2d-medium-v2", "halfcheetah-medium-replay-v2", "scene-play-singletask-task1-v0",
                                       "cube-double-play-v0"])
def test_missing_dataset_lists_the_paths_and_the_download_command(data_root, tmp_path, task_name):
    task = get_task(task_name)
    with pytest.raises(FrozenDTError) as e:
        load_task_dataset(task_name)
    msg = str(e.value)
    assert msg == missing_message(task)
    assert task_name in msg
    for name in task.dataset_files:
        assert str(data_root / name) in msg
    assert f"frozen-dt data download {task_name}" in msg
    if task.minari_id:
        assert str(tmp_path / "minari" / task.minari_id) in msg and "--source minari" in msg
    else:
        assert "--source minari" not in msg
    assert [str(c.path) for c in candidates(task)] == [line.strip()[2:].removesuffix(" (Minari)")
                                                         for line in msg.splitlines() if line.startswith("  - ")]
    with pytest.raises(FrozenDTError, match="frozen-dt data download"):
        load_any(task_name)


def test_unknown_task_name_suggests_close_ones():
    with pytest.raises(FrozenDTError, match="walker2d-medium-v2"):
        load_task_dataset("walker2d-medum-v2")


def test_all_registered_dataset_file_names_are_safe(data_root):
    for task in TASKS.values():
        for name in task.dataset_files:
            assert data_file(name) == data_root.resolve() / name


# --- data-dir file names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "..", ".", "", "./x", "x/../y", "..hidden", ".hidden",
                                  "a\\b", "x\n", "x y", "~/x", "a/../../etc/passwd", "walker2d-medium-v2.hdf5/"])
def test_data_file_refuses_names_that_could_escape(data_root, name):
    with pytest.raises(FrozenDTError, match="refusing data file name"):
        data_file(name)


def test_data_file_accepts_plain_names(data_root):
    for name in ("walker2d_medium-v2.hdf5", "scene-play-v0-val.npz", "x.source.json"):
        path = data_file(name)
        assert path.parent == data_root.resolve() and path.name == name
