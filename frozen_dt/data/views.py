"""The sampling views every algorithm shares, all built on one :class:`~frozen_dt.data.dataset.OfflineDataset`.

* :class:`TransitionView` - (s, a, r, s', done) for IQL/CQL.
* :class:`PairView` - (s, a) pairs for BC.
* :class:`SequenceView` - K-step windows with return-to-go, timesteps and padding masks for DT-style models.
* :class:`GoalView` - goal-relabelled batches with OGBench's current/trajectory/random goal mix for GCIQL.

Observations are normalized with the dataset's :class:`~frozen_dt.data.dataset.ObsStats` (computed once, or the
``obs_stats`` a trained model carries); ``normalize=False`` gives raw observations. Batches are dicts of numpy
arrays; samplers take a ``numpy.random.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import numpy as np

from frozen_dt.data.dataset import DEFAULT_OBS_EPS, ObsStats, OfflineDataset


def _obs(dataset: OfflineDataset, normalize: bool, obs_stats: ObsStats | None, eps: float = DEFAULT_OBS_EPS):
    """(observations, next observations or None, the stats they were normalized with: None when raw, so that a
    model trained on the view is evaluated on raw observations too)."""
    if not normalize:
        return dataset.observations, dataset.next_observations, None
    stats = obs_stats or (dataset.obs_stats if eps == DEFAULT_OBS_EPS
                          else ObsStats.from_observations(dataset.observations, eps))
    next_obs = None if dataset.next_observations is None else stats.normalize(dataset.next_observations)
    return stats.normalize(dataset.observations), next_obs, stats


class TransitionView:
    """(s, a, r, s', done) transitions.

    ``s'`` is the stored next observation when the source has one, else the following step of the same episode.
    Without stored next observations, the last step of a *truncated* episode has no s' and is left out; the last
    step of a terminated episode keeps s' = s (it is never bootstrapped: done = 1).
    """

    def __init__(self, dataset: OfflineDataset, *, normalize: bool = True, obs_stats: ObsStats | None = None,
                 obs_eps: float = DEFAULT_OBS_EPS):
        dataset.require("rewards", purpose="the transition view (value-based training)")
        obs, next_obs, self.obs_stats = _obs(dataset, normalize, obs_stats, obs_eps)
        n = dataset.n_transitions
        keep = np.ones(n, bool)
        if next_obs is None:
            ends = dataset.episode_ends
            following = np.minimum(np.arange(n) + 1, n - 1)
            following[ends] = ends  # terminal steps point at themselves (masked by done)
            next_obs = obs[following]
            keep[ends[~dataset.episode_terminated]] = False
        self.observations = obs[keep]
        self.actions = dataset.actions[keep]
        self.rewards = dataset.rewards[keep]
        self.next_observations = next_obs[keep]
        self.dones = dataset.dones[keep].astype(np.float32)

    def __len__(self) -> int:
        return len(self.observations)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        return self.batch_at(rng.integers(0, len(self), size=batch_size))

    def batch_at(self, idx: np.ndarray) -> dict:
        return {
            "observations": self.observations[idx],
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "next_observations": self.next_observations[idx],
            "dones": self.dones[idx],
        }


class PairView:
    """(s, a) pairs of every step, for behaviour cloning (no rewards needed)."""

    def __init__(self, dataset: OfflineDataset, *, normalize: bool = True, obs_stats: ObsStats | None = None,
                 obs_eps: float = DEFAULT_OBS_EPS):
        self.observations, _, self.obs_stats = _obs(dataset, normalize, obs_stats, obs_eps)
        self.actions = np.asarray(dataset.actions, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.observations)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        return self.batch_at(rng.integers(0, len(self), size=batch_size))

    def batch_at(self, idx: np.ndarray) -> dict:
        return {"observations": self.observations[idx], "actions": self.actions[idx]}


def returns_to_go(rewards: np.ndarray, episode_starts: np.ndarray, episode_lengths: np.ndarray) -> np.ndarray:
    """Undiscounted return-to-go of every step within its episode (float64), vectorized."""
    rewards = np.asarray(rewards, dtype=np.float64)
    cum = np.cumsum(rewards)
    ends = episode_starts + episode_lengths - 1
    episode_total_cum = np.repeat(cum[ends], episode_lengths)
    return episode_total_cum - cum + rewards


class SequenceView:
    """K-step windows as the Decision Transformer trains on them.

    A window starts at a step drawn uniformly from all steps, which is exactly DT's "pick a trajectory with
    probability proportional to its length, then a uniform start in it". Windows that run past the episode end
    are left-padded (zeros, mask 0) like DT's. Return-to-go is divided by ``rtg_scale``; timesteps are the step's
    index in its episode, capped at ``max_timestep``. With ``use_returns=False`` (data without rewards, or DT with
    returns masked for behaviour cloning) the return-to-go is all zeros.

    With ``goal_conditioned`` (OGBench goal-conditioned tasks) returns are not used and each window gets a hindsight
    goal, ``goals`` (B, K, obs_dim): a state of the same trajectory drawn uniformly from after the window's last step
    to the trajectory's end (OGBench's actor-goal rule), normalized like the observations, the same for every real
    step of the window.
    """

    def __init__(self, dataset: OfflineDataset, context: int, *, rtg_scale: float = 1000.0, max_timestep: int = 1000,
                 use_returns: bool = True, normalize: bool = True, obs_stats: ObsStats | None = None,
                 goal_conditioned: bool = False):
        self.goal_conditioned = goal_conditioned
        use_returns = use_returns and not goal_conditioned
        if use_returns:
            dataset.require("rewards", purpose="return-to-go conditioning")
        self.context = int(context)
        self.observations, _, self.obs_stats = _obs(dataset, normalize, obs_stats)
        self.actions = dataset.actions
        n = dataset.n_transitions
        if use_returns:
            rtg = returns_to_go(dataset.rewards, dataset.episode_starts, dataset.episode_lengths) / rtg_scale
            self.rewards = dataset.rewards
        else:
            rtg, self.rewards = np.zeros(n), np.zeros(n, np.float32)
        self.rtg = rtg.astype(np.float32)
        episode = dataset.episode_index
        self.episode_end = (dataset.episode_ends[episode] + 1).astype(np.int64)  # exclusive end of each step's episode
        self.episode_start = dataset.episode_starts[episode].astype(np.int64)  # first step of each step's episode
        self.timesteps = np.minimum(np.arange(n) - self.episode_start, max_timestep - 1)

    def __len__(self) -> int:
        return len(self.observations)

    def window_indices(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step indices (B, K) of left-padded windows starting at ``starts``, and their masks (B, K)."""
        lengths = np.minimum(self.episode_end[starts] - starts, self.context)  # real steps in each window
        return self._left_padded(starts, lengths)

    def _left_padded(self, first: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.context
        offsets = np.arange(k)[None, :] - (k - lengths)[:, None]  # negative where padded
        mask = offsets >= 0
        idx = np.where(mask, first[:, None] + offsets, 0)
        return idx, mask

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        starts = rng.integers(0, len(self), size=batch_size)
        batch = self.batch_at(starts)
        if self.goal_conditioned:
            idx = self.window_indices(starts)[0]
            last, final = idx[:, -1], self.episode_end[starts] - 1
            u = rng.random(batch_size)
            goal = np.round(np.minimum(last + 1, final) * u + final * (1.0 - u)).astype(np.int64)
            batch["goals"] = np.where(batch["mask"][..., None], self.observations[goal][:, None, :], 0.0).astype(np.float32)
        return batch

    def batch_at(self, starts: np.ndarray) -> dict:
        """The windows starting at steps ``starts`` (without goals)."""
        return self._batch(*self.window_indices(starts))

    def batch_ending_at(self, steps: np.ndarray) -> dict:
        """The windows whose last position is each of ``steps``: up to ``context`` steps of its own episode,
        left-padded, as a rollout builds the window it acts on at that step."""
        steps = np.asarray(steps, np.int64)
        lengths = np.minimum(steps - self.episode_start[steps] + 1, self.context)
        return self._batch(*self._left_padded(steps - lengths + 1, lengths))

    def _batch(self, idx: np.ndarray, mask: np.ndarray) -> dict:
        m = mask[..., None]
        batch = {
            "observations": np.where(m, self.observations[idx], 0.0).astype(np.float32),
            "actions": np.where(m, self.actions[idx], 0.0).astype(np.float32),
            "rewards": np.where(mask, self.rewards[idx], 0.0).astype(np.float32)[..., None],
            "returns_to_go": np.where(mask, self.rtg[idx], 0.0).astype(np.float32)[..., None],
            "timesteps": np.where(mask, self.timesteps[idx], 0),
            "mask": mask,
        }
        return batch


class GoalView:
    """Goal-conditioned batches with OGBench's goal mix (its GCDataset defaults for GCIQL).

    Value goals: the current state w.p. ``value_p_curgoal``, a future state of the same trajectory w.p.
    ``value_p_trajgoal`` (geometric offset with p = 1 - discount, or uniform), otherwise a random dataset state.
    Actor goals likewise with the ``actor_*`` mix. Reward is 0 when the value goal is the current state and -1
    otherwise; ``masks`` = 0 exactly there.
    """

    def __init__(self, dataset: OfflineDataset, *, discount: float = 0.99, value_p_curgoal: float = 0.2,
                 value_p_trajgoal: float = 0.5, value_p_randomgoal: float = 0.3, value_geom_sample: bool = True,
                 actor_p_curgoal: float = 0.0, actor_p_trajgoal: float = 1.0, actor_p_randomgoal: float = 0.0,
                 actor_geom_sample: bool = False, normalize: bool = False, obs_stats: ObsStats | None = None):
        for mix in ((value_p_curgoal, value_p_trajgoal, value_p_randomgoal), (actor_p_curgoal, actor_p_trajgoal, actor_p_randomgoal)):
            if not np.isclose(sum(mix), 1.0):
                raise ValueError(f"goal mix probabilities must sum to 1, got {mix}")
        self.discount = discount
        self.value_mix = (value_p_curgoal, value_p_trajgoal, value_geom_sample)
        self.actor_mix = (actor_p_curgoal, actor_p_trajgoal, actor_geom_sample)
        obs, next_obs, self.obs_stats = _obs(dataset, normalize, obs_stats)
        self.observations = obs
        self.actions = dataset.actions
        ends = dataset.episode_ends
        self.final_index = ends[dataset.episode_index]  # last step of each step's trajectory
        if next_obs is None:
            next_obs = obs[np.minimum(np.arange(len(obs)) + 1, self.final_index)]
        self.next_observations = next_obs

    def __len__(self) -> int:
        return len(self.observations)

    def sample_goal_indices(self, idx: np.ndarray, p_cur: float, p_traj: float, geom: bool,
                            rng: np.random.Generator) -> np.ndarray:
        b = len(idx)
        random_goals = rng.integers(0, len(self), size=b)
        final = self.final_index[idx]
        if geom:
            traj_goals = np.minimum(idx + rng.geometric(1.0 - self.discount, size=b), final)
        else:
            u = rng.random(b)
            traj_goals = np.round(np.minimum(idx + 1, final) * u + final * (1.0 - u)).astype(np.int64)
        if p_cur >= 1.0:
            return idx.copy()
        goals = np.where(rng.random(b) < p_traj / (1.0 - p_cur), traj_goals, random_goals)
        return np.where(rng.random(b) < p_cur, idx, goals)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict:
        idx = rng.integers(0, len(self), size=batch_size)
        value_goals = self.sample_goal_indices(idx, *self.value_mix, rng)
        actor_goals = self.sample_goal_indices(idx, *self.actor_mix, rng)
        success = (idx == value_goals).astype(np.float32)
        return {
            "observations": self.observations[idx],
            "actions": self.actions[idx],
            "next_observations": self.next_observations[idx],
            "value_goals": self.observations[value_goals],
            "actor_goals": self.observations[actor_goals],
            "rewards": success - 1.0,
            "masks": 1.0 - success,
        }


class DeviceSampler:
    """A view's batches drawn on a torch device (``--device cuda``): the view's arrays are copied there once, batch
    indices come from a ``torch.Generator`` on that device, and windows and transitions are gathered there - no host
    work or host-to-device copy per step. The batches have the view's keys, shapes and rules (tests/test_views.py
    checks them against the view's own); their random stream is the generator's, not the numpy one, so a cuda run
    samples other batches than a CPU run of the same seed. ``state()``/``set_state()`` checkpoint the generator.

    Supports :class:`TransitionView`, :class:`PairView`, :class:`GoalView` (its goal mix drawn on the device by
    the same rules) and :class:`SequenceView` (not goal-conditioned: those windows keep host sampling).
    """

    KEYS = {"TransitionView": ("observations", "actions", "rewards", "next_observations", "dones"),
            "PairView": ("observations", "actions"),
            "GoalView": ("observations", "actions", "next_observations", "final_index"),
            "SequenceView": ("observations", "actions", "rewards", "rtg", "timesteps", "episode_end")}

    @classmethod
    def supports(cls, view) -> bool:
        return type(view).__name__ in cls.KEYS and not getattr(view, "goal_conditioned", False)

    def __init__(self, view, device, seed: int):
        import torch

        if not self.supports(view):
            raise ValueError(f"no device sampling for {type(view).__name__}")
        self.kind, self.device = type(view).__name__, torch.device(device)
        self.context = getattr(view, "context", None)
        self.goal_rules = (view.discount, view.value_mix, view.actor_mix) if self.kind == "GoalView" else None
        self.obs_stats = view.obs_stats
        self.n = len(view)
        self.arrays = {k: torch.as_tensor(np.ascontiguousarray(getattr(view, k)), device=self.device)
                       for k in self.KEYS[self.kind]}
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    def __len__(self) -> int:
        return self.n

    def sample(self, batch_size: int, rng=None) -> dict:
        """A batch of torch tensors on the device (``rng`` is not used: the generator is this sampler's)."""
        import torch

        idx = torch.randint(0, self.n, (batch_size,), device=self.device, generator=self.generator)
        if self.kind == "GoalView":
            return self.goal_batch(idx)
        return self.batch_at(idx)

    def sample_goal_indices(self, idx, p_cur: float, p_traj: float, geom: bool):
        """:meth:`GoalView.sample_goal_indices` on the device: the current state w.p. ``p_cur``, a later state of
        the same trajectory w.p. ``p_traj`` (geometric offset, p = 1 - discount, or uniform up to its end),
        otherwise a random dataset state."""
        import torch

        g, b, device = self.generator, len(idx), self.device
        random_goals = torch.randint(0, self.n, (b,), device=device, generator=g)
        final = self.arrays["final_index"][idx]
        if geom:
            offsets = torch.empty(b, device=device).geometric_(1.0 - self.goal_rules[0], generator=g).long()
            traj_goals = torch.minimum(idx + offsets, final)
        else:
            u = torch.rand(b, device=device, generator=g, dtype=torch.float64)
            traj_goals = torch.round(torch.minimum(idx + 1, final) * u + final * (1.0 - u)).long()
        if p_cur >= 1.0:
            return idx.clone()
        goals = torch.where(torch.rand(b, device=device, generator=g) < p_traj / (1.0 - p_cur), traj_goals,
                            random_goals)
        return torch.where(torch.rand(b, device=device, generator=g) < p_cur, idx, goals)

    def goal_batch(self, idx) -> dict:
        """:meth:`GoalView.sample`'s batch for the states ``idx``, its goals drawn on the device."""
        a, (_, value_mix, actor_mix) = self.arrays, self.goal_rules
        value_goals = self.sample_goal_indices(idx, *value_mix)
        actor_goals = self.sample_goal_indices(idx, *actor_mix)
        success = (idx == value_goals).float()
        return {"observations": a["observations"][idx], "actions": a["actions"][idx],
                "next_observations": a["next_observations"][idx], "value_goals": a["observations"][value_goals],
                "actor_goals": a["observations"][actor_goals], "rewards": success - 1.0, "masks": 1.0 - success}

    def batch_at(self, idx) -> dict:
        """The view's ``batch_at`` on the device (``idx``: a long tensor there)."""
        import torch

        a = self.arrays
        if self.kind != "SequenceView":  # rows as they are
            return {k: a[k][idx] for k in self.KEYS[self.kind]}
        k = self.context
        starts = idx
        lengths = torch.clamp(a["episode_end"][starts] - starts, max=k)
        offsets = torch.arange(k, device=self.device)[None, :] - (k - lengths)[:, None]
        mask = offsets >= 0
        steps = torch.where(mask, starts[:, None] + offsets, torch.zeros_like(offsets))
        m = mask[..., None]
        return {
            "observations": torch.where(m, a["observations"][steps], 0.0).float(),
            "actions": torch.where(m, a["actions"][steps], 0.0).float(),
            "rewards": torch.where(mask, a["rewards"][steps], 0.0).float()[..., None],
            "returns_to_go": torch.where(mask, a["rtg"][steps], 0.0).float()[..., None],
            "timesteps": torch.where(mask, a["timesteps"][steps], 0),
            "mask": mask,
        }

    def state(self):
        return self.generator.get_state()

    def set_state(self, state) -> None:
        self.generator.set_state(state.cpu() if hasattr(state, "cpu") else state)

    def state_dict(self) -> dict:  # a checkpoint part (frozen_dt.baselines.common.SavesParts)
        return {"generator": self.state()}

    def load_state_dict(self, state: dict) -> None:
        self.set_state(state["generator"])


def sampled_on(view, run):
    """``view``, or a :class:`DeviceSampler` of it when the run samples on its device (``--device-sampling``: on,
    or auto on cuda) and the view supports it."""
    setting = getattr(run, "device_sampling", "off")
    wanted = setting == "on" or (setting == "auto" and run.device == "cuda")
    if not wanted or not DeviceSampler.supports(view):
        return view
    return DeviceSampler(view, run.device, run.seed)
