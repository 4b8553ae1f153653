"""The shared sampling views: return-to-go, window shapes and masks, goal mix (length-proportional window sampling:
tests/test_semantics.py, a chi-square test on the sampler)."""

import dataclasses

import numpy as np
import pytest

from frozen_dt.data.dataset import ObsStats, from_flat_arrays
from frozen_dt.data.views import GoalView, SequenceView, TransitionView, returns_to_go


def make_dataset(lengths=(5, 3, 7), terminated=(True, False, True), obs_dim=4, act_dim=2, seed=0, next_obs=False):
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    end = np.cumsum(lengths) - 1
    for e, t in zip(end, terminated):
        (terminals if t else timeouts)[e] = True
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    return from_flat_arrays(
        obs,
        rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        terminals,
        timeouts,
        next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32) if next_obs else None,
        where="test",
    )


def brute_force_rtg(ds):
    out = np.zeros(ds.n_transitions)
    for s, l in zip(ds.episode_starts, ds.episode_lengths):
        for i in range(s, s + l):
            out[i] = sum(float(ds.rewards[j]) for j in range(i, s + l))
    return out


def test_returns_to_go_matches_brute_force():
    ds = make_dataset(lengths=(1, 6, 2, 9), terminated=(False, True, True, False))
    rtg = returns_to_go(ds.rewards, ds.episode_starts, ds.episode_lengths)
    np.testing.assert_allclose(rtg, brute_force_rtg(ds), rtol=1e-9, atol=1e-9)


def test_sequence_window_shapes_masks_and_left_padding():
    ds = make_dataset()
    view = SequenceView(ds, context=4, rtg_scale=10.0, normalize=False)
    batch = view.sample(32, np.random.default_rng(0))
    assert batch["observations"].shape == (32, 4, 4)
    assert batch["actions"].shape == (32, 4, 2)
    assert batch["returns_to_go"].shape == (32, 4, 1)
    assert batch["rewards"].shape == (32, 4, 1)
    assert batch["timesteps"].shape == (32, 4) and batch["mask"].shape == (32, 4)
    # Masks are left-padded: once a window has a real token, every later token is real.
    m = batch["mask"].astype(int)
    assert (np.diff(m, axis=1) >= 0).all() and m[:, -1].all()
    assert (batch["observations"][~batch["mask"]] == 0).all()


def test_sequence_window_contents_against_brute_force():
    ds = make_dataset(lengths=(5, 3, 7))
    k = 4
    view = SequenceView(ds, context=k, rtg_scale=10.0, normalize=False)
    rtg = brute_force_rtg(ds)
    starts = np.arange(ds.n_transitions)
    idx, mask = view.window_indices(starts)
    for start in starts:
        e = np.searchsorted(ds.episode_starts, start, side="right") - 1
        end = ds.episode_starts[e] + ds.episode_lengths[e]
        real = list(range(start, min(start + k, end)))
        pad = k - len(real)
        assert mask[start].tolist() == [False] * pad + [True] * len(real)
        assert idx[start][pad:].tolist() == real
        np.testing.assert_allclose(view.rtg[real], rtg[real] / 10.0, rtol=1e-5)
        assert view.timesteps[real].tolist() == [r - ds.episode_starts[e] for r in real]


def test_sequence_timesteps_are_capped_and_sampling_reproducible():
    ds = make_dataset(lengths=(12,), terminated=(True,))
    view = SequenceView(ds, context=3, max_timestep=5, normalize=False)
    assert view.timesteps.max() == 4
    a = view.sample(8, np.random.default_rng(3))
    b = view.sample(8, np.random.default_rng(3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_sequence_normalizes_with_carried_stats():
    ds = make_dataset()
    stats = ObsStats(mean=np.ones(4, np.float32), std=np.full(4, 2.0, np.float32))
    view = SequenceView(ds, context=2, obs_stats=stats)
    np.testing.assert_allclose(view.observations, (ds.observations - 1.0) / 2.0, rtol=1e-6)
    assert ObsStats.from_dict(stats.to_dict()).std.tolist() == [2.0] * 4
    default = SequenceView(ds, context=2)
    np.testing.assert_allclose(default.observations.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(default.observations.std(0), 1.0, atol=1e-4)


def test_sequence_without_returns_zeroes_rtg():
    ds = make_dataset()
    view = SequenceView(ds, context=3, use_returns=False, normalize=False)
    batch = view.sample(16, np.random.default_rng(0))
    assert (batch["returns_to_go"] == 0).all()


def test_transition_view_derived_next_obs_and_dones():
    ds = make_dataset(lengths=(5, 3, 7), terminated=(True, False, True))
    view = TransitionView(ds, normalize=False)
    # The truncated episode's last step has no next state and is dropped; the terminated ones are kept.
    assert len(view) == ds.n_transitions - 1
    dropped = ds.episode_ends[1]
    keep = np.ones(ds.n_transitions, bool)
    keep[dropped] = False
    obs = ds.observations[keep]
    np.testing.assert_array_equal(view.observations, obs)
    for i, orig in enumerate(np.flatnonzero(keep)):
        if ds.dones[orig]:
            assert view.dones[i] == 1.0
        else:
            assert view.dones[i] == 0.0
            np.testing.assert_array_equal(view.next_observations[i], ds.observations[orig + 1])
    assert view.dones.sum() == 2


def test_transition_view_uses_stored_next_obs():
    ds = make_dataset(next_obs=True)
    view = TransitionView(ds, normalize=False)
    assert len(view) == ds.n_transitions
    np.testing.assert_array_equal(view.next_observations, ds.next_observations)
    batch = view.sample(64, np.random.default_rng(0))
    assert batch["observations"].shape == (64, 4) and batch["dones"].shape == (64,)


@pytest.mark.parametrize("make_view", [lambda ds, **kw: TransitionView(ds, **kw),
                                       lambda ds, **kw: SequenceView(ds, context=3, **kw)])
def test_a_raw_view_carries_no_stats_so_its_model_is_evaluated_on_raw_observations(make_view):
    ds = make_dataset(next_obs=True)
    raw, normalized = make_view(ds, normalize=False), make_view(ds)
    assert raw.obs_stats is None  # the agent built from it (make_observation_agent) then feeds raw observations
    np.testing.assert_array_equal(raw.observations, ds.observations)
    np.testing.assert_allclose(normalized.observations, normalized.obs_stats.normalize(ds.observations))


def test_goal_view_mix_and_rewards():
    ds = make_dataset(lengths=(50, 80, 70), terminated=(False, False, False))
    view = GoalView(ds)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(view), size=20000)
    traj = view.sample_goal_indices(idx, 0.0, 1.0, True, rng)  # geometric future goals only
    assert (ds.episode_index[traj] == ds.episode_index[idx]).all()
    final = view.final_index[idx]
    assert ((traj > idx) | (idx == final)).all() and (traj <= final).all()
    np.testing.assert_array_equal(view.sample_goal_indices(idx, 1.0, 0.0, True, rng), idx)
    goals = view.sample_goal_indices(idx, 0.2, 0.5, True, rng)
    cur = goals == idx
    # current-state goals: 0.2, plus the rare trajectory goal at the final state of its own step
    assert 0.18 < cur.mean() < 0.24
    # random goals (0.3) land in another trajectory with probability 1 - (own length / total)
    other = ds.episode_index[goals] != ds.episode_index[idx]
    share_other = 1 - (ds.episode_lengths[ds.episode_index[idx]] / ds.n_transitions).mean()
    assert abs(other.mean() - 0.3 * share_other) < 0.02
    actor = view.sample_goal_indices(idx, 0.0, 1.0, False, rng)
    assert (ds.episode_index[actor] == ds.episode_index[idx]).all()
    assert (actor <= view.final_index[idx]).all() and (actor >= np.minimum(idx + 1, view.final_index[idx])).all()
    batch = view.sample(256, rng)
    np.testing.assert_array_equal(batch["rewards"], -batch["masks"])  # success: reward 0, mask 0
    assert set(np.unique(batch["rewards"])) <= {-1.0, 0.0}


def test_the_device_sampler_draws_goals_by_the_goal_views_rules():
    """GoalView on the device (``--device-sampling``): the same mix rules as the host view's (test above), the same
    keys, dtypes and shapes, and the geometric trajectory offsets with the same mean."""
    import torch

    from frozen_dt.data.views import DeviceSampler

    ds = make_dataset(lengths=(50, 80, 70), terminated=(False, False, False))
    view = GoalView(ds)
    sampler = DeviceSampler(view, "cpu", seed=0)
    episode, final = torch.as_tensor(ds.episode_index), torch.as_tensor(view.final_index)
    idx = torch.randint(0, len(view), (20000,), generator=torch.Generator().manual_seed(1))
    traj = sampler.sample_goal_indices(idx, 0.0, 1.0, True)
    assert (episode[traj] == episode[idx]).all()
    assert ((traj > idx) | (idx == final[idx])).all() and (traj <= final[idx]).all()
    host_traj = view.sample_goal_indices(idx.numpy(), 0.0, 1.0, True, np.random.default_rng(0))
    assert abs((traj - idx).float().mean().item() - (host_traj - idx.numpy()).mean()) < 1.0  # same geometric law
    assert torch.equal(sampler.sample_goal_indices(idx, 1.0, 0.0, True), idx)
    goals = sampler.sample_goal_indices(idx, 0.2, 0.5, True)
    assert 0.18 < (goals == idx).float().mean().item() < 0.24
    other = (episode[goals] != episode[idx]).float().mean().item()
    share_other = 1 - (ds.episode_lengths[ds.episode_index[idx.numpy()]] / ds.n_transitions).mean()
    assert abs(other - 0.3 * share_other) < 0.02
    actor = sampler.sample_goal_indices(idx, 0.0, 1.0, False)
    assert (episode[actor] == episode[idx]).all()
    assert (actor <= final[idx]).all() and (actor >= torch.minimum(idx + 1, final[idx])).all()
    batch, host = sampler.sample(256), view.sample(256, np.random.default_rng(0))
    assert batch.keys() == host.keys()
    for key in host:
        assert batch[key].shape == host[key].shape and batch[key].dtype == torch.as_tensor(host[key]).dtype, key
    assert torch.equal(batch["rewards"], -batch["masks"]) and set(batch["rewards"].unique().tolist()) <= {-1.0, 0.0}
    state = sampler.state()
    again = [sampler.sample(8)["value_goals"] for _ in range(2)]
    sampler.set_state(state)  # a checkpointed generator continues the same stream
    assert all(torch.equal(a, sampler.sample(8)["value_goals"]) for a in again)


def test_goal_view_rejects_bad_mix():
    with pytest.raises(ValueError):
        GoalView(make_dataset(), value_p_curgoal=0.5, value_p_trajgoal=0.5, value_p_randomgoal=0.5)


def test_goal_conditioned_windows_get_a_later_state_of_their_own_trajectory():
    ds = make_dataset(lengths=(6, 9, 4))
    view = SequenceView(ds, 3, normalize=False, goal_conditioned=True)
    rng = np.random.default_rng(0)
    starts_rng = np.random.default_rng(0)
    batch = view.sample(500, rng)
    starts = starts_rng.integers(0, len(view), size=500)  # the view draws its window starts first
    idx, mask = view.window_indices(starts)
    assert batch["goals"].shape == (500, 3, 4) and not batch["returns_to_go"].any()
    for row in range(500):
        goal = batch["goals"][row][mask[row]]
        assert (goal == goal[0]).all() and not batch["goals"][row][~mask[row]].any()
        matches = np.flatnonzero((ds.observations == goal[0]).all(1))
        assert len(matches) == 1
        last, end = idx[row, -1], view.episode_end[starts[row]] - 1
        assert min(last + 1, end) <= matches[0] <= end  # after the window, inside its trajectory
    # every state after the window (steps 0-2) to the end of the trajectory (step 5) can be drawn
    first = starts == 0
    seen = {int(np.flatnonzero((ds.observations == g[-1]).all(1))[0]) for g in batch["goals"][first]}
    assert seen == {3, 4, 5}


@pytest.mark.parametrize("kind", ["sequence", "transition", "pair"])
def test_device_sampler_gathers_exactly_the_views_batches(kind):
    import torch

    from frozen_dt.data.views import DeviceSampler, PairView

    ds = make_dataset(lengths=(5, 3, 7, 1), terminated=(True, False, True, False))
    view = {"sequence": lambda: SequenceView(ds, 4, rtg_scale=10.0, max_timestep=4),
            "transition": lambda: TransitionView(ds), "pair": lambda: PairView(ds)}[kind]()
    sampler = DeviceSampler(view, "cpu", seed=3)
    every = np.arange(len(view))
    expected, got = view.batch_at(every), sampler.batch_at(torch.as_tensor(every))
    assert expected.keys() == got.keys()
    for key in expected:
        assert got[key].dtype == torch.as_tensor(expected[key]).dtype, key
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)
    first = sampler.sample(6)
    state = sampler.state()
    second = sampler.sample(6)
    sampler.set_state(state)  # a checkpointed generator continues the same stream
    again = sampler.sample(6)
    assert all(torch.equal(second[k], again[k]) for k in second)
    assert not torch.equal(first["observations"], second["observations"])
    assert torch.equal(DeviceSampler(view, "cpu", seed=3).sample(6)["observations"], first["observations"])


def indexed_dataset(lengths=(60, 90, 50)):
    """make_dataset with observation[:, 0] = the row's index (so a batch's rows name the indices drawn)."""
    ds = make_dataset(lengths=lengths, terminated=(False,) * len(lengths))
    ds.observations[:, 0] = np.arange(len(ds.observations))
    return ds


def test_transition_view_normalizes_with_its_own_eps():
    """IQL and CQL pass CORL's obs_eps (1e-3): the statistics are the data's mean and std + that eps, not the
    dataset's default-eps statistics."""
    ds = make_dataset()
    view = TransitionView(ds, obs_eps=1e-3)
    mean, std = ds.observations.mean(0), ds.observations.std(0) + 1e-3
    np.testing.assert_allclose(view.obs_stats.std, std, rtol=1e-6)
    np.testing.assert_allclose(view.obs_stats.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(view.observations[0], (ds.observations[0] - mean) / std, rtol=1e-5, atol=1e-6)
    from frozen_dt.data.views import PairView

    assert PairView(ds).obs_stats is not None and TransitionView(ds).obs_stats is not None  # normalized by default


def test_goal_view_defaults_are_ogbenchs_gciql_and_raw():
    """OGBench's gciql: value goals 0.2 current / 0.5 trajectory (geometric) / 0.3 random, actor goals from the
    trajectory (uniform), raw observations."""
    ds = make_dataset()
    view = GoalView(ds)
    assert view.value_mix == (0.2, 0.5, True) and view.actor_mix == (0.0, 1.0, False)
    assert view.obs_stats is None and np.array_equal(view.observations, ds.observations)


@pytest.mark.parametrize("device", [False, True])
def test_goal_batches_draw_every_state_uniformly_and_reward_exactly_the_reached_goal(device):
    """Host and device goal batches: states (and random goals) drawn uniformly over every index, 0 and the last
    included and none favoured; reward 0 and mask 0 exactly where the value goal is the state itself; a uniform
    trajectory goal can be the very next state."""
    import torch

    from frozen_dt.data.views import DeviceSampler

    ds = indexed_dataset()
    view = GoalView(ds)
    n = len(view)
    source = DeviceSampler(view, "cpu", seed=0) if device else view
    rng = np.random.default_rng(0)
    batch = {k: torch.as_tensor(v) for k, v in source.sample(40000, rng).items()}
    states = batch["observations"][:, 0].long()
    counts = torch.bincount(states, minlength=n)
    assert counts.min() > 0 and counts.max() < 1.5 * 40000 / n  # 0 and n - 1 drawn, none twice as often
    reached = batch["value_goals"][:, 0].long() == states
    assert torch.equal(batch["rewards"] == 0, reached) and torch.equal(batch["masks"] == 0, reached)
    assert 0.18 < reached.float().mean().item() < 0.25
    idx = torch.arange(n).repeat(100)
    if device:
        random = source.sample_goal_indices(idx, 0.0, 0.0, False)
        actor = source.sample_goal_indices(idx, 0.0, 1.0, False)
    else:
        random = torch.as_tensor(view.sample_goal_indices(idx.numpy(), 0.0, 0.0, False, rng))
        actor = torch.as_tensor(view.sample_goal_indices(idx.numpy(), 0.0, 1.0, False, rng))
    goal_counts = torch.bincount(random, minlength=n)
    assert goal_counts.min() > 0 and goal_counts.max() < 1.5 * len(idx) / n and random.min() >= 0
    final = torch.as_tensor(view.final_index)[idx]
    inside = idx + 1 < final
    assert (actor[inside] == idx[inside] + 1).any()  # the uniform trajectory goal reaches the next state


def test_device_sampling_follows_the_setting_and_the_views_support(monkeypatch):
    """--device-sampling on: a DeviceSampler; auto: only on cuda; off: the host view. Goal-conditioned windows and
    views of other kinds stay on the host."""
    from types import SimpleNamespace

    from frozen_dt.data import views
    from frozen_dt.data.views import DeviceSampler, PairView, sampled_on

    ds = make_dataset()
    transitions = TransitionView(ds)

    def run(setting, device):
        return SimpleNamespace(device_sampling=setting, device=device, seed=0)

    assert isinstance(sampled_on(transitions, run("on", "cpu")), DeviceSampler)
    assert sampled_on(transitions, run("auto", "cpu")) is transitions
    assert sampled_on(transitions, run("off", "cpu")) is transitions
    made = []
    monkeypatch.setattr(views, "DeviceSampler", type("Stub", (), {
        "supports": staticmethod(DeviceSampler.supports), "__init__": lambda self, *a: made.append(a[1])}))
    assert sampled_on(transitions, run("auto", "cuda")) is not transitions and made == ["cuda"]
    assert sampled_on(transitions, run("off", "cuda")) is transitions and made == ["cuda"]
    assert DeviceSampler.supports(PairView(ds)) and DeviceSampler.supports(SequenceView(ds, 3))
    assert not DeviceSampler.supports(SequenceView(ds, 3, goal_conditioned=True))

    class OtherView:
        goal_conditioned = False

    assert not DeviceSampler.supports(OtherView())


def test_goal_view_without_stored_next_observations_takes_the_following_step_of_the_same_trajectory():
    ds = make_dataset(lengths=(5, 3, 7), terminated=(True, False, True))
    view = GoalView(ds)
    following = np.minimum(np.arange(len(view)) + 1, view.final_index)  # the last step points at itself
    np.testing.assert_array_equal(view.next_observations, ds.observations[following])
    assert (following[ds.episode_ends] == ds.episode_ends).all()


@pytest.mark.parametrize("kind", ["transition", "pair"])
def test_transition_and_pair_batches_draw_every_row_uniformly(kind):
    from frozen_dt.data.views import PairView

    ds = indexed_dataset()
    view = TransitionView(ds, normalize=False) if kind == "transition" else PairView(ds, normalize=False)
    rows = np.asarray(view.sample(40000, np.random.default_rng(0))["observations"][:, 0], dtype=np.int64)
    counts = np.bincount(rows, minlength=int(ds.observations[:, 0].max()) + 1)[view.observations[:, 0].astype(int)]
    assert counts.min() > 0 and counts.max() < 1.5 * 40000 / len(view)  # the first and last rows drawn, none twice


def test_only_a_return_conditioned_window_needs_rewards():
    from frozen_dt.errors import FrozenDTError

    ds = make_dataset()
    no_rewards = dataclasses.replace(ds, rewards=None, missing_keys=("rewards",))
    with pytest.raises(FrozenDTError, match="return-to-go"):
        SequenceView(no_rewards, context=3)
    for kwargs in ({"use_returns": False}, {"goal_conditioned": True}):
        batch = SequenceView(no_rewards, context=3, **kwargs).sample(4, np.random.default_rng(0))
        assert (batch["returns_to_go"] == 0).all()
