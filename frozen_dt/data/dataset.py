"""The one in-memory form every reader produces: an offline dataset as flat step arrays plus episode boundaries.

Episode boundaries (the classic bug source) are decided in exactly one place, :func:`from_flat_arrays`:

* an episode ends at a step flagged ``terminal`` or ``timeout``;
* a step flagged both is a *termination* (no bootstrapping past it);
* an unterminated tail (the last steps of a file, neither terminal nor timeout) is **kept as a truncated
  episode**; ``OfflineDataset.unterminated_tail`` records that it happened.

``dones`` is the per-step "stop bootstrapping here" flag used by value-based methods. For D4RL-style data it
equals the terminal flags; OGBench single-task data sets it wherever the task is solved, mid-trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from frozen_dt.errors import FrozenDTError


DEFAULT_OBS_EPS = 1e-6  # kzl/decision-transformer's state_std + 1e-6; CORL's baselines use 1e-3 (their obs_eps)


@dataclass(frozen=True)
class ObsStats:
    """Observation mean/std, computed once from a dataset and carried with every model trained on it."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_observations(cls, observations: np.ndarray, eps: float = DEFAULT_OBS_EPS) -> "ObsStats":
        obs = np.asarray(observations, dtype=np.float64)
        return cls(obs.mean(0).astype(np.float32), (obs.std(0) + eps).astype(np.float32))

    def normalize(self, observations: np.ndarray) -> np.ndarray:
        return ((observations - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ObsStats":
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


@dataclass
class OfflineDataset:
    """Steps of all episodes concatenated; episode ``e`` spans ``starts[e] : starts[e] + lengths[e]``."""

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray | None  # (N,) float32; None when the source has no rewards
    dones: np.ndarray  # (N,) bool: value targets do not bootstrap past this step
    episode_starts: np.ndarray  # (E,) int64
    episode_lengths: np.ndarray  # (E,) int64
    episode_terminated: np.ndarray  # (E,) bool: the episode ended in a termination (else truncated)
    next_observations: np.ndarray | None = None  # (N, obs_dim) when the source stores them
    source: dict = field(default_factory=dict)  # where the data came from; recorded wherever it is used
    extras: dict = field(default_factory=dict)  # other per-step arrays (OGBench qpos, button_states...)
    missing_keys: tuple = ()  # keys the source lacked (e.g. rewards and terminals in some DT pickles)
    unterminated_tail: bool = False  # the source's last steps were neither terminal nor timeout

    @property
    def n_transitions(self) -> int:
        return int(self.observations.shape[0])

    @property
    def n_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def episode_ends(self) -> np.ndarray:
        """Index of the last step of each episode."""
        return self.episode_starts + self.episode_lengths - 1

    @cached_property
    def episode_index(self) -> np.ndarray:
        """(N,) episode number of every step."""
        return np.repeat(np.arange(self.n_episodes), self.episode_lengths)

    @cached_property
    def obs_stats(self) -> ObsStats:
        return ObsStats.from_observations(self.observations)

    def require(self, *keys: str, purpose: str) -> None:
        """Refuse, naming the missing keys, when ``purpose`` needs data this source does not have."""
        missing = [k for k in keys if k in self.missing_keys]
        if missing:
            where = self.source.get("path") or self.source.get("minari_id") or "this dataset"
            raise FrozenDTError(
                f"{where} lacks {', '.join(repr(k) for k in missing)}, which {purpose} needs. "
                "Data without rewards/terminals can still be used for behaviour cloning (sequence view with "
                "returns masked) and for `frozen-dt data info`."
            )

    def episode_returns(self) -> np.ndarray:
        self.require("rewards", purpose="episode returns")
        sums = np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts) if self.n_episodes else []
        return np.asarray(sums, dtype=np.float64)

    def episode(self, e: int) -> dict:
        """Episode ``e`` as a dict of array views (observations, actions, rewards, dones, terminated)."""
        s = slice(int(self.episode_starts[e]), int(self.episode_starts[e] + self.episode_lengths[e]))
        return {
            "observations": self.observations[s],
            "actions": self.actions[s],
            "rewards": None if self.rewards is None else self.rewards[s],
            "dones": self.dones[s],
            "terminated": bool(self.episode_terminated[e]),
        }

    def summary(self, task=None) -> dict:
        """The facts ``frozen-dt data info`` reports."""
        lengths = self.episode_lengths
        out = {
            "task": task.name if task is not None else None,
            "n_episodes": self.n_episodes,
            "n_transitions": self.n_transitions,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "n_terminated": int(self.episode_terminated.sum()),
            "n_truncated": int((~self.episode_terminated).sum()),
            "unterminated_tail": self.unterminated_tail,
            "episode_length_mean": float(lengths.mean()),
            "episode_length_min": int(lengths.min()),
            "episode_length_max": int(lengths.max()),
            "missing_keys": list(self.missing_keys),
            "source": self.source,
        }
        if "subtask_completed" in self.extras:  # OGBench play data generated here: oracle subtasks finished
            out["subtasks_completed"] = int(np.count_nonzero(self.extras["subtask_completed"]))
        if self.rewards is None:
            out.update(return_mean=None, return_min=None, return_max=None, normalized_return_mean=None)
            return out
        returns = self.episode_returns()
        out.update(
            return_mean=float(returns.mean()),
            return_std=float(returns.std()),
            return_min=float(returns.min()),
            return_max=float(returns.max()),
            normalized_return_mean=None,
        )
        if task is not None and task.score_type == "normalized":
            from frozen_dt.eval.scores import normalized_score

            out["normalized_return_mean"] = float(normalized_score(task, returns).mean())
        return out


def check_arrays(arrays: dict, where: str) -> int:
    """Validate step arrays: present ones share one length, are 1-D/2-D as expected, and hold finite numbers.

    Returns the common length. Every failure names ``where`` (the file) and the offending key.
    """
    for key, value in arrays.items():
        if value is not None and np.ndim(value) == 0:
            raise FrozenDTError(f"{where}: {key!r} must hold one entry per step, got a single value")
    lengths = {k: len(v) for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise FrozenDTError(f"{where}: arrays have mismatched lengths ({detail})")
    n = next(iter(lengths.values()), 0)
    if n == 0:
        raise FrozenDTError(f"{where}: the dataset is empty")
    for key in ("observations", "actions", "next_observations"):
        if arrays.get(key) is not None and np.ndim(arrays[key]) != 2:
            raise FrozenDTError(f"{where}: {key!r} must be 2-D (steps, dim), got shape {np.shape(arrays[key])}")
    for key in ("rewards", "terminals", "timeouts"):
        if arrays.get(key) is not None and np.size(arrays[key]) != n:
            raise FrozenDTError(f"{where}: {key!r} must hold one value per step, got shape {np.shape(arrays[key])}")
    for key, value in arrays.items():
        if value is None:
            continue
        dtype = np.asarray(value).dtype
        if not (dtype == bool or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise FrozenDTError(f"{where}: {key!r} must hold numbers, got dtype {dtype}")
        if not np.issubdtype(dtype, np.floating):
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            step = int(np.argwhere(bad)[0][0])
            raise FrozenDTError(f"{where}: {key!r} contains NaN or inf (first at step {step})")
    return n


def from_flat_arrays(
    observations,
    actions,
    rewards=None,
    terminals=None,
    timeouts=None,
    next_observations=None,
    *,
    where: str,
    source: dict | None = None,
    extras: dict | None = None,
    missing_keys: tuple = (),
) -> OfflineDataset:
    """Build an :class:`OfflineDataset` from D4RL-layout flat arrays; the episode-boundary rules live here."""
    arrays = {
        "observations": observations,
        "actions": actions,
        "rewards": rewards,
        "terminals": terminals,
        "timeouts": timeouts,
        "next_observations": next_observations,
        **(extras or {}),
    }
    n = check_arrays(arrays, where)
    terminal = np.zeros(n, bool) if terminals is None else np.asarray(terminals).astype(bool).reshape(n)
    timeout = np.zeros(n, bool) if timeouts is None else np.asarray(timeouts).astype(bool).reshape(n)
    ends = terminal | timeout
    unterminated_tail = not ends[-1]
    ends[-1] = True  # the unterminated tail is kept as a truncated episode
    end_idx = np.flatnonzero(ends)
    starts = np.concatenate([[0], end_idx[:-1] + 1]).astype(np.int64)
    return OfflineDataset(
        observations=np.asarray(observations, dtype=np.float32),
        actions=np.asarray(actions, dtype=np.float32),
        rewards=None if rewards is None else np.asarray(rewards, dtype=np.float32).reshape(n),
        dones=terminal,
        episode_starts=starts,
        episode_lengths=(end_idx + 1 - starts).astype(np.int64),
        episode_terminated=terminal[end_idx],  # terminal wins over timeout on the same step
        next_observations=None if next_observations is None else np.asarray(next_observations, dtype=np.float32),
        source=dict(source or {}),
        extras={k: np.asarray(v) for k, v in (extras or {}).items()},
        missing_keys=tuple(missing_keys),
        unterminated_tail=bool(unterminated_tail),
    )


def check_task_dims(dataset: OfflineDataset, task) -> str | None:
    """Refuse data whose observation/action sizes do not fit ``task``; return the env version the obs size implies.

    Locomotion obs sizes can differ between env versions (Ant: 111 in v4/D4RL, 105 in v5), so the returned
    version is the one whose size matches (the recorded one when it matches too); None for OGBench tasks.
    """
    where = dataset.source.get("path") or dataset.source.get("minari_id") or task.name
    if dataset.act_dim != task.act_dim:
        raise FrozenDTError(f"{where}: actions have {dataset.act_dim} dims but task {task.name} has {task.act_dim}")
    versions = [v for v, d in task.obs_dims.items() if d == dataset.obs_dim]
    if not versions:
        expected = " or ".join(f"{d} ({v})" for v, d in task.obs_dims.items())
        raise FrozenDTError(
            f"{where}: observations have {dataset.obs_dim} dims but task {task.name} expects {expected}"
        )
    if task.family != "locomotion":
        return None
    recorded = dataset.source.get("env_version")
    return recorded if recorded in versions else versions[0]
