"""Readers for the four real dataset formats, each producing an :class:`~frozen_dt.data.dataset.OfflineDataset`.

* D4RL hdf5 (``observations, actions, rewards, terminals, timeouts``, optional ``next_observations``) - read
  with h5py, never through the ``d4rl`` package. Files written by ``frozen-dt data generate`` carry a
  ``frozen_dt_metadata`` attribute and are recorded as *generated*.
* Decision-Transformer pickles (a list of path dicts), read through :class:`SafeUnpickler`. Pickles without
  ``rewards``/``terminals`` (like ``shared/realdata``) are accepted for uses that need no rewards (behaviour
  cloning, ``data info``); anything that needs rewards refuses them naming the missing keys.
* OGBench npz: ``terminals`` mark the last stored state of each trajectory, which has no valid transition
  (the same convention as ``ogbench.load_dataset``); single-task variants get OGBench's own reward relabelling.
* Minari datasets, through the ``minari`` API.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from pathlib import Path

import numpy as np

from frozen_dt.data.dataset import OfflineDataset, check_arrays, from_flat_arrays
from frozen_dt.errors import FrozenDTError

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
OGBENCH_KEYS = ("observations", "actions", "terminals")
OGBENCH_INFO_KEYS = ("qpos", "qvel", "button_states", "subtask_completed")  # the last one: files generated here
METADATA_ATTR = "frozen_dt_metadata"

FORMATS = {".hdf5": "d4rl-hdf5", ".h5": "d4rl-hdf5", ".pkl": "dt-pickle", ".pickle": "dt-pickle", ".npz": "ogbench-npz"}


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FrozenDTError(f"{path}: unknown dataset format; expected one of {', '.join(sorted(FORMATS))}")
    return fmt


def read_file(path: str | Path, task=None, fmt: str | None = None) -> OfflineDataset:
    """Read a dataset file in any supported format (``fmt``, or chosen by the file's suffix)."""
    path = Path(path)
    if not path.is_file():
        raise FrozenDTError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt == "d4rl-hdf5":
        return read_d4rl_hdf5(path)
    if fmt == "dt-pickle":
        return read_dt_pickle(path)
    return read_ogbench_npz(path, task)


def _file_source(path: Path, fmt: str, **extra) -> dict:
    return {"kind": "file", "format": fmt, "path": str(path), **extra}


# --- D4RL hdf5 -------------------------------------------------------------------------------------------------


def read_d4rl_hdf5(path: Path) -> OfflineDataset:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in D4RL_KEYS if k not in f]
            if missing:
                raise FrozenDTError(
                    f"{path}: not a D4RL-layout file, missing key(s) {', '.join(missing)} "
                    f"(found: {', '.join(sorted(f.keys())) or 'nothing'})"
                )
            arrays = {k: f[k][()] for k in D4RL_KEYS}
            next_obs = f["next_observations"][()] if "next_observations" in f else None
            metadata = json.loads(f.attrs[METADATA_ATTR]) if METADATA_ATTR in f.attrs else None
    except FrozenDTError:
        raise
    except Exception as e:  # a corrupt file makes h5py raise OSError, KeyError, RuntimeError, TypeError...
        raise FrozenDTError(f"{path}: unreadable HDF5 file ({type(e).__name__}: {e}); it may be truncated or corrupt") from None
    if metadata is not None:
        source = _file_source(path, "d4rl-hdf5", kind="generated", env_version=metadata.get("env_version"))
        source["generated"] = metadata
    else:  # a D4RL file: its data matches gymnasium's v4 MuJoCo envs (D4RL used gym v3 models)
        source = _file_source(path, "d4rl-hdf5", env_version="v4")
    return from_flat_arrays(**arrays, next_observations=next_obs, where=str(path), source=source)


# --- Decision-Transformer pickles ----------------------------------------------------------------------------


class SafeUnpickler(pickle.Unpickler):
    """Admits numpy arrays, numpy scalars/dtypes and plain containers; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how pickle protocols 0-2 store the bytes of a numpy array
        ("collections", "OrderedDict"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("DType"):  # numpy>=2 dtype classes, e.g. Float32DType
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset pickle")


def safe_load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(io.BufferedReader(f)).load()
    except pickle.UnpicklingError as e:
        raise FrozenDTError(f"{path}: refused to unpickle ({e}); only numpy arrays and plain containers load") from None
    except Exception as e:  # garbage makes the unpickler raise EOFError, OverflowError, MemoryError, SystemError...
        raise FrozenDTError(f"{path}: unreadable pickle ({type(e).__name__}: {e}); it may be truncated or corrupt") from None


def read_dt_pickle(path: Path) -> OfflineDataset:
    paths = safe_load_pickle(path)
    if not isinstance(paths, (list, tuple)) or not paths or not all(isinstance(p, dict) for p in paths):
        raise FrozenDTError(f"{path}: a Decision-Transformer pickle must hold a non-empty list of path dicts")
    for i, p in enumerate(paths):
        for key in ("observations", "actions"):
            if not isinstance(p.get(key), np.ndarray):
                raise FrozenDTError(f"{path}: path {i} lacks the array {key!r}")
    has = {k: all(k in p for p in paths) for k in ("rewards", "terminals", "next_observations")}
    missing = tuple(k for k in ("rewards", "terminals") if not has[k])
    columns = {"observations": [], "actions": [], "rewards": [], "terminals": [], "timeouts": [], "next_observations": []}
    for i, p in enumerate(paths):
        arrays = {k: p.get(k) for k in ("observations", "actions", "rewards", "terminals", "next_observations")}
        arrays = {k: v for k, v in arrays.items() if k == "observations" or k == "actions" or has.get(k)}
        n = check_arrays(arrays, f"{path} (path {i})")
        timeouts = np.zeros(n, bool)
        timeouts[-1] = True  # every path ends an episode; its terminal flag (if any) decides terminated vs truncated
        columns["timeouts"].append(timeouts)
        for k, v in arrays.items():
            columns[k].append(np.asarray(v).reshape(n, -1) if k in ("observations", "actions", "next_observations") else np.asarray(v).reshape(n))
    flat = {k: (np.concatenate(v) if v else None) for k, v in columns.items()}
    source = _file_source(path, "dt-pickle", env_version="v4")
    if missing:
        source["usable_for"] = "behaviour cloning and data info only (no rewards/terminals)"
    return from_flat_arrays(**flat, where=str(path), source=source, missing_keys=missing)


# --- OGBench npz ---------------------------------------------------------------------------------------------


def read_ogbench_npz(path: Path, task=None) -> OfflineDataset:
    """Read an OGBench npz; for a single-task ``task`` also relabel rewards/dones with OGBench's own code."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in OGBENCH_KEYS if k not in f.files]
            if missing:
                raise FrozenDTError(f"{path}: not an OGBench dataset, missing key(s) {', '.join(missing)}")
            raw = {k: f[k] for k in (*OGBENCH_KEYS, *OGBENCH_INFO_KEYS) if k in f.files}
            metadata = json.loads(str(f[METADATA_ATTR])) if METADATA_ATTR in f.files else None
    except FrozenDTError:
        raise
    except Exception as e:  # a corrupt file makes zipfile/numpy raise BadZipFile, zlib.error, TokenError...
        raise FrozenDTError(f"{path}: unreadable npz file ({type(e).__name__}: {e}); it may be truncated or corrupt") from None
    check_arrays(raw, str(path))
    # The last stored state of each trajectory (terminals == 1) has no next state: drop it, shift for next_obs.
    keep = ~raw["terminals"].astype(bool)
    next_keep = np.concatenate([[False], keep[:-1]])
    if not keep.any() or not raw["terminals"][-1]:
        raise FrozenDTError(f"{path}: 'terminals' must mark the last state of every trajectory, including the final one")
    traj_end = np.concatenate([raw["terminals"][1:], [1.0]]).astype(bool)[keep]
    extras = {k: raw[k][keep] for k in OGBENCH_INFO_KEYS if k in raw}
    source = _file_source(path, "ogbench-npz")
    if metadata is not None:
        source.update(kind="generated", generated=metadata)
    dataset = from_flat_arrays(
        raw["observations"][keep],
        raw["actions"][keep],
        timeouts=traj_end,  # play data never terminates: every trajectory end is a truncation
        next_observations=raw["observations"][next_keep],
        where=str(path),
        source=source,
        extras=extras,
        missing_keys=("rewards",),
    )
    if task is not None and not task.goal_conditioned and task.family == "ogbench":
        _relabel_single_task(dataset, task, path)
    return dataset


def _relabel_single_task(dataset: OfflineDataset, task, path: Path) -> None:
    """OGBench single-task rewards: (#satisfied - #total) predicates, and ``dones`` where the task is solved."""
    from frozen_dt.envs.registry import import_ogbench

    relabel_dataset = import_ogbench().relabel_utils.relabel_dataset

    # The keys ogbench.relabel_utils reads: cube (and maze) data carry no button_states, puzzle data no qpos use.
    env_id = task.env_id()
    keys = ("button_states",) if "puzzle" in env_id else ("qpos", "button_states") if "scene" in env_id else ("qpos",)
    needed = [k for k in keys if k not in dataset.extras]
    if needed:
        raise FrozenDTError(f"{path}: single-task relabelling for {task.name} needs the key(s) {', '.join(needed)}")
    env = task.make_env()
    try:
        labels = dict(dataset.extras)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            relabel_dataset(task.env_id(), env, labels)
    finally:
        env.close()
    dataset.rewards = labels["rewards"].astype(np.float32)
    dataset.dones = labels["masks"] == 0
    dataset.missing_keys = ()
    dataset.source["relabelled_for"] = task.name


# --- Minari --------------------------------------------------------------------------------------------------


def read_minari(dataset_id: str) -> OfflineDataset:
    """Load a local Minari dataset through the minari API."""
    import minari

    try:
        ds = minari.load_dataset(dataset_id)
    except Exception as e:  # minari raises several types (FileNotFoundError, ValueError...) for bad datasets
        raise FrozenDTError(f"Minari dataset {dataset_id!r} could not be loaded ({type(e).__name__}: {e})") from None
    columns = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    for episode in ds.iterate_episodes():
        if not isinstance(episode.observations, np.ndarray):
            raise FrozenDTError(f"Minari dataset {dataset_id!r} has dict/tuple observations, which are not supported")
        obs = episode.observations.reshape(len(episode.observations), -1)
        columns["observations"].append(obs[:-1])
        columns["next_observations"].append(obs[1:])
        columns["actions"].append(np.asarray(episode.actions).reshape(len(obs) - 1, -1))
        columns["rewards"].append(np.asarray(episode.rewards))
        columns["terminals"].append(np.asarray(episode.terminations))
        ends = np.asarray(episode.truncations).astype(bool)
        ends[-1] = True  # each Minari episode is one episode, even if collection stopped it mid-way
        columns["timeouts"].append(ends)
    if not columns["observations"]:
        raise FrozenDTError(f"Minari dataset {dataset_id!r} has no episodes")
    flat = {k: np.concatenate(v) for k, v in columns.items()}
    source = {"kind": "minari", "format": "minari", "minari_id": dataset_id, "path": str(ds.spec.data_path),
              "env_version": "v5"}
    return from_flat_arrays(**flat, where=f"Minari dataset {dataset_id!r}", source=source)
