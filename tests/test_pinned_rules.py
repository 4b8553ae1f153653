"""Rules pinned by recomputing what a step computes by hand (fixed seeds, tiny networks, exact comparisons).

Each test names the one-line mutations it kills; ``tests/mutations.py`` applies the ones that matter most.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from frozen_dt.data.dataset import ObsStats, from_flat_arrays
from frozen_dt.envs.registry import Task, get_task
from frozen_dt.eval.rollout import episode_scores, in_blocks, rollout, summarize
from frozen_dt.sequence_models import ReturnConditionedAgent

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# --- DT: the evaluation-time return-to-go -----------------------------------------------------------------------


class WindowSpy(nn.Module):
    """Stands in for a return-conditioned model: records the windows the agent feeds it, predicts zeros."""

    def __init__(self, obs_dim=3, act_dim=2, context=4):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # the agent reads the device from the parameters
        self.obs_dim, self.act_dim, self.context, self.goal_dim = obs_dim, act_dim, context, None
        self.seen: list[dict] = []

    def forward(self, tensors: dict, last_step: bool = False) -> torch.Tensor:
        self.seen.append({k: v.clone().numpy() for k, v in tensors.items()})
        b, k = tensors["observations"].shape[:2]
        return torch.zeros(b, k, self.act_dim)


@pytest.mark.parametrize("rtg_scale", [1.0, 1000.0])
def test_dt_agent_return_to_go_window_is_target_minus_the_rewards_so_far(rtg_scale):
    """Two env slots interleaved, 7 steps (longer than the context of 4): at every step the window the model gets
    holds (target - rewards received before each of its steps) / rtg_scale, left-padded with zeros. Kills: the
    update after a reward a no-op, its sign flipped, its scale dropped, the target not divided by the scale, one
    slot's rewards counted in another's window."""
    spy = WindowSpy()
    stats = ObsStats(np.zeros(3, np.float32), np.ones(3, np.float32))
    target = 3600.0
    agent = ReturnConditionedAgent(spy, stats, rtg_scale, target)
    rewards = {0: [3.25, 1.5, -0.75, 2.0, 4.5, 0.25, 1.0], 1: [10.0, -2.5, 6.0, 0.5, 3.0, 7.25, -1.0]}
    for slot in (0, 1):
        agent.start(slot, slot)
    expected_windows = {0: [], 1: []}
    for t in range(7):
        for slot in (1, 0):
            agent.act(np.zeros((1, 3), np.float32), np.array([slot]))
            received = rewards[slot][:t]
            rtg = [(target - sum(received[:i])) / rtg_scale for i in range(t + 1)][-4:]
            expected_windows[slot].append(np.array([0.0] * (4 - len(rtg)) + rtg, np.float32))
            agent.observe(np.array([slot]), np.array([rewards[slot][t]]))
    seen = [call["returns_to_go"][0, :, 0] for call in spy.seen]
    expected = [w for t in range(7) for w in (expected_windows[1][t], expected_windows[0][t])]
    for got, want in zip(seen, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert abs(rewards[0][0] / rtg_scale) > 1e-4  # a no-op update moves the window by more than the tolerance


def test_dt_agent_window_timesteps_and_mask_follow_the_episode():
    """Timesteps 0, 1, ... capped at max_timestep - 1, real steps masked in, left padding masked out."""
    spy = WindowSpy()
    agent = ReturnConditionedAgent(spy, ObsStats(np.zeros(3, np.float32), np.ones(3, np.float32)), 1.0, 10.0,
                                   max_timestep=5)
    agent.start(0, 0)
    for _ in range(7):
        agent.act(np.zeros((1, 3), np.float32), np.array([0]))
        agent.observe(np.array([0]), np.array([1.0]))
    timesteps = [call["timesteps"][0].tolist() for call in spy.seen]
    masks = [call["mask"][0].tolist() for call in spy.seen]
    assert timesteps == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4],
                         [3, 4, 4, 4]]
    assert masks[:4] == [[False] * (3 - t) + [True] * (t + 1) for t in range(4)]
    assert all(m == [True] * 4 for m in masks[4:])


# --- CQL(H): the importance-sampled logsumexp ------------------------------------------------------------------


def tanh_gaussian_by_hand(mean, log_std, noise):
    """tanh(mean + std * noise) and its log-density under the tanh-squashed Gaussian, written out (float64)."""
    mean, log_std, noise = mean.double(), log_std.double(), noise.double()
    pre = mean + log_std.exp() * noise
    gaussian = -0.5 * ((pre - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return torch.tanh(pre), (gaussian - torch.log(1 - torch.tanh(pre) ** 2)).sum(-1)


def cql_on_random_data(**settings):
    """A tiny CQL (one hidden layer of 16) on 200 random transitions, and one batch of 8."""
    from frozen_dt.algorithms import Problem, get_spec
    from frozen_dt.config import RunConfig

    rng = np.random.default_rng(0)
    n, obs_dim, act_dim = 200, 3, 2
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    actions = rng.uniform(-0.9, 0.9, size=(n, act_dim)).astype(np.float32)
    dataset = from_flat_arrays(obs, actions, rng.normal(size=n).astype(np.float32), np.arange(n) % 50 == 49,
                               np.zeros(n, bool), where="synthetic")
    spec = get_spec("cql")
    config = spec.config(cql_n_actions=3, hidden_dim=16, hidden_layers=1, batch_size=8, **settings)
    problem = Problem(obs_dim, act_dim)
    torch.manual_seed(0)
    model = spec.build_model(config, problem, None)
    algo = spec.build_algorithm(config, model, dataset, problem, RunConfig(task="hopper-medium-v2", algo="cql",
                                                                           steps=100))
    return algo, config, algo.sample_batch(np.random.default_rng(1))


def cql_draws(b: int, k: int, act_dim: int, seed: int) -> dict:
    """The random draws of one CQL update after ``torch.manual_seed(seed)``, in the update's order."""
    torch.manual_seed(seed)
    return dict(actor=torch.randn(b, act_dim), next=torch.randn(b, act_dim),
                uniform=torch.empty(b, k, act_dim).uniform_(-1.0, 1.0), at_s=torch.randn(b, k, act_dim),
                at_next=torch.randn(b, k, act_dim))


def test_cql_penalty_is_the_importance_sampled_logsumexp_of_its_three_action_sets():
    """The penalty CQL reports is, per critic, mean over states of logsumexp over {Q(s, u) - log(1/2^A) for uniform
    u, Q(s, a') - log pi(a'|s') for a' ~ pi(s'), Q(s, a) - log pi(a|s) for a ~ pi(s)} minus Q(s, a_data), averaged
    over the two critics: recomputed here from the same random draws with the networks before the update. Kills:
    the uniform density dropped, either policy log-probability dropped or its sign flipped, the data Q term
    dropped, the logsumexp over the wrong axis, the uniform proposals drawn from another range."""
    algo, config, batch = cql_on_random_data()
    with torch.no_grad():  # critics that vary with the action by O(1) (CORL's init: last layer gain 1e-2)
        for q in (algo.model.q1, algo.model.q2):
            [m for m in q.net if isinstance(m, nn.Linear)][-1].weight.mul_(100.0)
    before = copy.deepcopy(algo.model)
    torch.manual_seed(123)
    metrics = algo.update(batch)

    b, act_dim = len(batch["observations"]), batch["actions"].shape[1]
    draws = cql_draws(b, config.cql_n_actions, act_dim, 123)
    s = torch.as_tensor(batch["observations"], dtype=torch.float32)
    s_next = torch.as_tensor(batch["next_observations"], dtype=torch.float32)
    a_data = torch.as_tensor(batch["actions"], dtype=torch.float32)
    with torch.no_grad():
        mean, log_std = before.actor.mean_log_std(s)
        a_pi, log_pi = tanh_gaussian_by_hand(mean[:, None], log_std[:, None], draws["at_s"])
        mean, log_std = before.actor.mean_log_std(s_next)
        a_next, log_pi_next = tanh_gaussian_by_hand(mean[:, None], log_std[:, None], draws["at_next"])
        penalties = []
        for q in (before.q1, before.q2):
            def q_of(a):
                return q(s, a.float()).double()

            sets = torch.cat([q_of(draws["uniform"]) - act_dim * math.log(0.5), q_of(a_next) - log_pi_next,
                              q_of(a_pi) - log_pi], dim=1)
            penalties.append((torch.log(torch.exp(sets).sum(1)) - q_of(a_data)).mean())
    expected = float(sum(penalties) / 2)
    assert metrics["cql_penalty"] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert abs(act_dim * math.log(0.5)) > 1.0  # the uniform correction is far above the tolerance


@pytest.mark.parametrize("normalize_reward", [False, True])
def test_cql_td_error_and_actor_loss_are_recomputed_from_the_updates_draws(normalize_reward):
    """td_loss: mean over the critics of mean (Q(s, a) - r - discount (1 - done) min Q_target(s', a'))^2 with a' the
    policy's reparameterized action at s' (no entropy term); actor_loss: mean of alpha log pi(a|s) - min Q(s, a) with
    a the policy's action at s and alpha = exp(log_alpha) = 1 at the start; rewards times the run's reward scale.
    Kills: the TD errors subtracted, the online critics or one target critic twice in the backup, the done mask
    dropped, the rewards divided by their scale, the entropy term's sign."""
    algo, config, batch = cql_on_random_data(normalize_reward=normalize_reward)
    assert (algo.reward_scale != 1.0) == normalize_reward  # CORL's 1000 / (max - min episode return)
    before, targets = copy.deepcopy(algo.model), copy.deepcopy(algo.target_q)
    with torch.no_grad():  # targets that differ from the critics, so that using the wrong ones shows
        for p in targets.parameters():
            p.add_(0.05 * torch.randn_like(p))
    algo.target_q.load_state_dict(targets.state_dict())
    batch = {**batch, "dones": np.array([1, 0, 0, 1, 0, 0, 0, 0], np.float32)}
    torch.manual_seed(7)
    metrics = algo.update(batch)

    b, act_dim = len(batch["observations"]), batch["actions"].shape[1]
    draws = cql_draws(b, config.cql_n_actions, act_dim, 7)
    s, s_next, a_data, r, done = (torch.as_tensor(batch[k], dtype=torch.float32) for k in
                                  ("observations", "next_observations", "actions", "rewards", "dones"))
    with torch.no_grad():
        a_next, _ = tanh_gaussian_by_hand(*before.actor.mean_log_std(s_next), draws["next"])
        a_next = a_next.float()
        backup = (r * algo.reward_scale
                  + config.discount * (1 - done) * torch.min(targets[0](s_next, a_next), targets[1](s_next, a_next)))
        td = sum(((q(s, a_data) - backup) ** 2).mean() for q in (before.q1, before.q2)) / 2
        a_pi, log_pi = tanh_gaussian_by_hand(*before.actor.mean_log_std(s), draws["actor"])
        actor = (log_pi - torch.min(before.q1(s, a_pi.float()), before.q2(s, a_pi.float())).double()).mean()
    assert all(type(v) is float for v in metrics.values())  # on CPU the metrics are plain floats
    assert metrics["td_loss"] == pytest.approx(float(td), abs=1e-5)
    assert metrics["actor_loss"] == pytest.approx(float(actor), abs=1e-4)
    assert metrics["log_pi"] == pytest.approx(float(log_pi.mean()), abs=1e-4)


def test_cql_policy_log_std_is_scale_times_raw_plus_offset_clamped_to_minus_20_and_2():
    """CORL's TanhGaussianPolicy: log_std = a * raw + b (trainable scalars, a=1, b=-1 at init), clamped to [-20, 2]."""
    from frozen_dt.baselines.cql import TanhGaussianPolicy

    torch.manual_seed(0)
    policy = TanhGaussianPolicy(3, 2, 8, 1)
    obs = torch.randn(5, 3)
    raw = policy.trunk(obs)[:, 2:]
    with torch.no_grad():
        torch.testing.assert_close(policy.mean_log_std(obs)[1], raw - 1.0, rtol=0, atol=0)
        policy.log_std_scale.fill_(0.0)
        for offset, expected in [(-1.5, -1.5), (50.0, 2.0), (-50.0, -20.0)]:
            policy.log_std_offset.fill_(offset)
            assert policy.mean_log_std(obs)[1].unique().tolist() == [expected]


def test_cql_temperature_follows_adam_on_the_entropy_gap():
    """log_alpha takes Adam steps on -(log_alpha * (log pi + target_entropy)), target_entropy = -act_dim: its
    gradient at each update is -(mean log pi - act_dim), read back from the logged log_pi; three updates recomputed
    by hand with Adam's formula (betas 0.9, 0.999, eps 1e-8). Kills: the product turned into a quotient, the target
    entropy's sign, the temperature's learning rate."""
    algo, config, batch = cql_on_random_data(actor_lr=1e-2)
    logs = []
    for step in range(3):
        torch.manual_seed(step)
        logs.append(algo.update(batch))
    act_dim = batch["actions"].shape[1]
    log_alpha, m, v = 0.0, 0.0, 0.0
    for t, metrics in enumerate(logs, start=1):
        assert metrics["alpha"] == pytest.approx(math.exp(log_alpha), abs=1e-6)
        g = -(metrics["log_pi"] - act_dim)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        log_alpha -= config.actor_lr * (m / (1 - 0.9 ** t)) / (math.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    assert float(algo.model.log_alpha) == pytest.approx(log_alpha, abs=1e-6)


def test_cql_critics_hidden_layers_are_orthogonal_with_gain_sqrt_2_and_zero_bias():
    """CORL's CQL critics: hidden layers orthogonal with gain sqrt(2) (W^T W = 2 I for a tall W), biases zero.
    Kills: the critics' orthogonal init switched off (PyTorch's default hidden layers)."""
    from frozen_dt.baselines.cql import QNetwork

    torch.manual_seed(0)
    critic = QNetwork(3, 2, 32, 2)
    hidden = [m for m in critic.net if isinstance(m, nn.Linear)][:-1]
    assert len(hidden) == 2
    for layer in hidden:
        w = layer.weight.detach().double()
        torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(w.shape[1], dtype=torch.float64), rtol=0, atol=1e-5)
        assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias))


# --- target networks: Polyak averaging -------------------------------------------------------------------------


def random_transitions(n: int = 200):
    """n random transitions (3-d observations, 2-d actions in (-0.9, 0.9)), episodes of 50 steps."""
    rng = np.random.default_rng(0)
    return from_flat_arrays(rng.normal(size=(n, 3)).astype(np.float32),
                            rng.uniform(-0.9, 0.9, size=(n, 2)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                            np.arange(n) % 50 == 49, np.zeros(n, bool), where="synthetic")


def twin_critic_algorithm(name: str, tmp_path, **settings):
    """A tiny ``name`` (one hidden layer of 16, tau 0.25) on random transitions (GCIQL: a two-trajectory OGBench
    file), and one batch."""
    from test_download import write_ogbench_npz

    from frozen_dt.algorithms import Problem, get_spec
    from frozen_dt.config import RunConfig
    from frozen_dt.data.sources import load_any

    if name == "gciql":
        dataset = load_any(str(write_ogbench_npz(tmp_path / "scene-play-v0.npz")), task_name="scene-play-v0")[0]
        task = "scene-play-v0"
    else:
        dataset, task = random_transitions(), "hopper-medium-v2"
    spec = get_spec(name)
    config = spec.config(hidden_dim=16, hidden_layers=1, batch_size=8, tau=0.25, **settings)
    problem = Problem(dataset.obs_dim, dataset.act_dim)
    torch.manual_seed(0)
    model = spec.build_model(config, problem, None)
    algo = spec.build_algorithm(config, model, dataset, problem, RunConfig(task=task, algo=name, steps=100))
    return algo, algo.sample_batch(np.random.default_rng(1))


def target_pairs(algo) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(target parameter, online parameter) of each target network: the twin critics, and TD3+BC's actor."""
    pairs = [(t, o) for pair, online in zip(algo.target_q, (algo.model.q1, algo.model.q2))
             for t, o in zip(pair.parameters(), online.parameters(), strict=True)]
    if hasattr(algo, "target_actor"):
        pairs += list(zip(algo.target_actor.parameters(), algo.model.actor.parameters(), strict=True))
    return pairs


@pytest.mark.parametrize("name", ["cql", "iql", "td3bc", "gciql"])
def test_target_networks_move_by_tau_toward_the_online_networks_after_an_update(name, tmp_path):
    """After an update every target parameter is (1 - tau) * its value before + tau * the online parameter after
    the update (recomputed in float64, tau 0.25); the targets start away from the online networks so that both
    terms count. TD3+BC's targets (critics and actor) move only on its delayed actor steps. Kills: the Polyak loop
    run zero times, tau and 1 - tau swapped, the target copied from (or left at) either side, TD3+BC's targets
    moved on every update, a target network left requiring gradients."""
    algo, batch = twin_critic_algorithm(name, tmp_path, **({"policy_freq": 2} if name == "td3bc" else {}))
    assert not any(t.requires_grad for t, _ in target_pairs(algo))  # targets never take gradients
    torch.manual_seed(1)
    with torch.no_grad():
        for target, _ in target_pairs(algo):
            target.add_(0.5 * torch.randn_like(target))
    if name == "td3bc":  # update 1 of policy_freq 2: the critics step, no target moves
        before = [t.detach().clone() for t, _ in target_pairs(algo)]
        algo.update(batch)
        for b, (t, _) in zip(before, target_pairs(algo)):
            assert torch.equal(t, b)
    before = [t.detach().double().clone() for t, _ in target_pairs(algo)]
    online_before = [o.detach().clone() for _, o in target_pairs(algo)]
    torch.manual_seed(2)
    algo.update(batch)
    moved = 0.0
    for b, ob, (t, o) in zip(before, online_before, target_pairs(algo)):
        expected = 0.75 * b + 0.25 * o.detach().double()
        torch.testing.assert_close(t.detach().double(), expected, rtol=0, atol=1e-6)
        moved = max(moved, float((t.detach().double() - b).abs().max()))
    assert moved > 1e-2  # a no-op update is far outside the tolerance
    assert any(not torch.equal(o, ob) for ob, (_, o) in zip(online_before, target_pairs(algo)))  # the update stepped


# --- OGBench success -------------------------------------------------------------------------------------------


class ZeroAgent:
    def __init__(self, act_dim):
        self.act_dim = act_dim

    def start(self, slot, episode, goal=None):
        pass

    def act(self, observations, slots):
        return np.zeros((len(slots), self.act_dim), np.float32)

    def observe(self, slots, rewards):
        pass


@pytest.mark.parametrize("name", ["cube-double-play-singletask-task1-v0", "cube-double-play-v0"])
def test_do_nothing_ogbench_rollout_cut_short_reports_no_success(name):
    """Doing nothing for 5 steps solves no OGBench task: every episode (cut short, so it ends) reports no success and
    scores 0. Kills: every finished episode counted a success, success read from the info's presence mask."""
    task = get_task(name)
    options = {"task_id": 1, "render_goal": False} if task.goal_conditioned else None
    runs = rollout(task, ZeroAgent(task.act_dim), 3, num_envs=2, max_steps=5, progress=False, reset_options=options)
    assert [r["length"] for r in runs] == [5, 5, 5]
    assert [r["success"] for r in runs] == [False, False, False]
    assert episode_scores(task, runs).tolist() == [0.0, 0.0, 0.0]


class ScriptedSuccessEnv(gym.Env):
    """Observation: the step count. ``info["success"]`` at a step is whether that step's action[0] > 0; decoy fields
    say the opposite. Episodes truncate after 4 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        success = bool(action[0] > 0)
        info = {"success": success, "is_success": not success, "goal_reached": not success}
        return np.array([self.t], np.float32), 0.0, False, self.t >= 4, info


@dataclass(frozen=True)
class ScriptedTask(Task):
    def make_env(self, version=None, **kwargs):
        return ScriptedSuccessEnv()


SCRIPTED = ScriptedTask(name="scripted-success", family="ogbench", score_type="success", act_dim=2,
                        max_episode_steps=4, obs_dims={"v0": 1}, gym_name="scripted")


class ScheduleAgent(ZeroAgent):
    """action[0] = +1 at the steps in ``hits`` of episode ``e`` (``schedule[e]``), else -1."""

    def __init__(self, schedule):
        super().__init__(2)
        self.schedule, self.episode = schedule, {}

    def start(self, slot, episode, goal=None):
        self.episode[slot] = episode

    def act(self, observations, slots):
        def one(o, s):
            return [1.0 if int(o[0]) in self.schedule[self.episode[s]] else -1.0, 0.0]

        return in_blocks(lambda o: o, np.array([one(o, s) for o, s in zip(observations, slots)], np.float32))


def test_success_is_the_info_success_at_the_episodes_last_step():
    """Episode 0 succeeds at every step, 1 only at its last, 2 at every step but its last, 3 never: success is
    info["success"] at the last step, not any step's, not a decoy field's. Kills: success from another field, from
    a step other than the last, every finished episode a success, never a success."""
    agent = ScheduleAgent({0: {0, 1, 2, 3}, 1: {3}, 2: {0, 1, 2}, 3: set()})
    runs = rollout(SCRIPTED, agent, 4, num_envs=2, progress=False)
    assert [r["success"] for r in runs] == [True, True, False, False]
    assert episode_scores(SCRIPTED, runs).tolist() == [100.0, 100.0, 0.0, 0.0]
    assert summarize(SCRIPTED, runs)["score"] == 50.0


class ScriptedGoalEnv(ScriptedSuccessEnv):
    """Reset with ``task_id`` k reports goal [k]; success at a step is action[0] > 0, as in ScriptedSuccessEnv."""

    def reset(self, *, seed=None, options=None):
        observation, _ = super().reset(seed=seed)
        if (options or {}).get("render_goal") is not False:  # OGBench renders the goal's image unless told not to
            raise RuntimeError("evaluation resets must not render the goal (no renderer on a headless machine)")
        return observation, {"goal": np.array([float(options["task_id"])], np.float32)}


@dataclass(frozen=True)
class ScriptedGoalTask(Task):
    def make_env(self, version=None, **kwargs):
        return ScriptedGoalEnv()


SCRIPTED_GOALS = ScriptedGoalTask(name="scripted-goals", family="ogbench", score_type="success", act_dim=2,
                                  max_episode_steps=4, obs_dims={"v0": 1}, gym_name="scripted",
                                  goal_conditioned=True, eval_task_ids=(1, 2, 3))


class GoalSetAgent(ZeroAgent):
    """Succeeds (action[0] = +1) exactly on the goals in ``solves``, read from the goal its episode started with."""

    def __init__(self, solves):
        super().__init__(2)
        self.solves, self.goal = set(solves), {}

    def start(self, slot, episode, goal=None):
        self.goal[slot] = int(goal[0])

    def act(self, observations, slots):
        return np.array([[1.0 if self.goal[s] in self.solves else -1.0, 0.0] for s in slots], np.float32)


def test_goal_conditioned_evaluation_runs_each_goal_and_scores_each_policy_by_its_own_episodes():
    """Two policies on a goal-conditioned task with evaluation goals 1, 2, 3: each goal's episodes start from a
    reset with that task_id (the agent sees the goal the reset reported), score@taskK is the policy's success rate
    on goal K over its own episodes, and score is their mean, as OGBench reports it. Kills: another policy's episodes
    read, the goal not passed, the mean over goals replaced."""
    from frozen_dt.eval.rollout import evaluate_agents

    a, b = evaluate_agents(SCRIPTED_GOALS, [lambda t: GoalSetAgent({1}), lambda t: GoalSetAgent({1, 3})],
                           targets=(None,), episodes=2, num_envs=3, progress=False)
    assert {k: a[k] for k in ("score@task1", "score@task2", "score@task3")} == {
        "score@task1": 100.0, "score@task2": 0.0, "score@task3": 0.0}
    assert {k: b[k] for k in ("score@task1", "score@task2", "score@task3")} == {
        "score@task1": 100.0, "score@task2": 0.0, "score@task3": 100.0}
    assert a["score"] == pytest.approx(100 / 3) and b["score"] == pytest.approx(200 / 3)
    assert a["length@task2"] == 4.0 and "episodes@task1" not in a  # per-episode lists only when asked for


def test_only_a_goal_conditioned_task_hands_its_agents_the_goal_a_reset_reported():
    """OGBench's single-task envs report a goal too; their policies do not take it. A slot whose reset did not
    report a goal (its mask false) gets none."""
    from frozen_dt.eval.rollout import reset_goal

    infos = {"goal": np.array([[1.0], [2.0]], np.float32), "_goal": np.array([True, False])}
    assert reset_goal(SCRIPTED, infos, 0) is None
    assert reset_goal(SCRIPTED_GOALS, infos, 0).tolist() == [1.0]
    assert reset_goal(SCRIPTED_GOALS, infos, 1) is None
    assert reset_goal(SCRIPTED_GOALS, {}, 0) is None


def test_evaluation_defaults_roll_out_the_same_episodes_everywhere_and_keep_only_summaries():
    """Evaluation episode i is reset with seed 10,000 + i by default in the trainer's evaluation (rollout's
    default), in frozen-dt eval and in a sweep's evaluation, so that their scores of one checkpoint agree; a rollout
    keeps no per-step arrays and an evaluation no per-episode lists unless asked (the trainer logs its results)."""
    from frozen_dt.config import EvalArgs
    from frozen_dt.eval import rollout as engine
    from frozen_dt.sweeps.spec import EVAL_KEYS

    assert engine.EVAL_SEED == EvalArgs().eval_seed == EVAL_KEYS["eval_seed"] == 10_000
    (run,) = rollout(SCRIPTED, ZeroAgent(2), 1, progress=False)
    assert set(run) == {"episode", "return", "length", "success"}
    (result,) = engine.evaluate_agents(SCRIPTED, [lambda t: ZeroAgent(2)], targets=(None,), episodes=1,
                                       progress=False)
    assert set(result) == {"score", "score@none", "return@none", "length@none"}


# --- IQL: every quantity of one update, recomputed ------------------------------------------------------------------


@pytest.mark.parametrize("deterministic", [False, True])
def test_iql_update_rows_are_recomputed_from_the_networks_before_it(deterministic, tmp_path):
    """value_loss = expectile loss of min(Q1_t, Q2_t)(s, a) - V(s); q_loss = the mean of the two critics' squared
    errors to r + gamma (1 - d) V(s'); actor_loss = mean(min(exp(beta adv), 100) * bc), bc the negative
    log-likelihood (or, deterministic, the squared error of the mean summed over action dims); advantage = its mean.
    The second target critic is shifted so that the min takes each side on some rows; half the rows are terminal;
    rewards are scaled by 0.5. Kills: either target critic read twice, the critics' average doubled, the squared
    error's sign or power changed, the done mask's sign, the reward scale divided, the rows left as tensors."""
    from frozen_dt.baselines.common import expectile_loss
    from frozen_dt.baselines.iql import EXP_ADV_MAX, gaussian_log_prob

    algo, batch = twin_critic_algorithm("iql", tmp_path, deterministic_actor=deterministic, beta=3.0)
    batch["dones"] = (np.arange(len(batch["dones"])) % 2).astype(batch["dones"].dtype)  # both kinds of rows
    algo.reward_scale = 0.5  # as --normalize-reward would set it
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    sa = torch.cat([t["observations"], t["actions"]], -1)
    with torch.no_grad():
        gap = (algo.target_q[0](sa) - algo.target_q[1](sa)).median()
        algo.target_q[1][-1].bias += gap
        q1t, q2t = algo.target_q[0](sa).squeeze(-1), algo.target_q[1](sa).squeeze(-1)
        assert (q1t < q2t).any() and (q2t < q1t).any()
        before = copy.deepcopy(algo.model)
        advantage = torch.min(q1t, q2t) - before.value(t["observations"]).squeeze(-1)
        backup = 0.5 * t["rewards"] + algo.discount * (1 - t["dones"]) * before.value(t["next_observations"]).squeeze(-1)
        q_loss = (((before.q1(sa).squeeze(-1) - backup) ** 2).mean() + ((before.q2(sa).squeeze(-1) - backup) ** 2).mean()) / 2
        mean = before.actor(t["observations"])
        bc = ((mean - t["actions"]) ** 2).sum(-1) if deterministic else \
            -gaussian_log_prob(mean, before.actor.log_std, t["actions"])
        actor_loss = (torch.exp(3.0 * advantage).clamp(max=EXP_ADV_MAX) * bc).mean()
    rows = algo.update(batch)
    assert all(type(v) is float for v in rows.values())  # on the CPU the rows are floats, not tensors
    assert rows["value_loss"] == pytest.approx(expectile_loss(advantage, algo.expectile).item(), rel=1e-5)
    assert rows["q_loss"] == pytest.approx(q_loss.item(), rel=1e-5)
    assert rows["actor_loss"] == pytest.approx(actor_loss.item(), rel=1e-5)
    assert rows["advantage"] == pytest.approx(advantage.mean().item(), rel=1e-5, abs=1e-7)


def test_iql_defaults_are_corls():
    """CORL's iql.py (from gwthomas/IQL-PyTorch): 2 hidden layers of 256, the log-std clamped to [-5, 2], the
    advantage weight clipped at 100."""
    from frozen_dt.baselines import iql

    config = iql.IQLConfig()
    assert (config.hidden_dim, config.hidden_layers) == (256, 2)
    assert (iql.LOG_STD_MIN, iql.LOG_STD_MAX, iql.EXP_ADV_MAX) == (-5.0, 2.0, 100.0)


# --- TD3+BC: the critic and the delayed actor step, recomputed ------------------------------------------------------


def test_td3bc_update_rows_are_recomputed_from_the_networks_before_it(tmp_path):
    """critic_loss = the sum over Q1, Q2 of the mean squared error to r + gamma (1 - d) min(Q1_t, Q2_t)(s', a'),
    a' = clip(pi_t(s') + clip(policy_noise * eps, -noise_clip, noise_clip), -1, 1) with eps the update's N(0, 1)
    draw; on the actor step (every policy_freq-th update) actor_q_term = -alpha / (mean |Q1(s, pi(s))| + 1e-6) *
    mean Q1(s, pi(s)) with the critic just stepped and the actor before its step, bc_loss = mean (pi(s) - a)^2.
    Set up so every rule shows: the noise clipped on both sides (policy_noise 0.4, noise_clip 0.3), the target actor
    saturated (its first action near +1, its second near -1) so that the outer clip binds, the min taking each target
    critic on some rows, half the rows terminal, Q1 scaled down so that the 1e-6 is 0.1 % of mean |Q|.
    Kills: the noise scaled by 1/policy_noise, unclipped or clipped to a point, subtracted; the second target critic
    read twice; the squared errors' power or sign; the eps's sign; the BC term's power or sign, in the row or in the
    actor's step (checked against Adam's first step on the hand-computed loss)."""
    algo, batch = twin_critic_algorithm("td3bc", tmp_path, policy_noise=0.4, noise_clip=0.3, policy_freq=2,
                                        alpha=2.5)
    batch["dones"] = (np.arange(len(batch["dones"])) % 2).astype(batch["dones"].dtype)
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    sa = torch.cat([t["observations"], t["actions"]], -1)
    with torch.no_grad():
        algo.target_actor[-2].bias.copy_(torch.tensor([3.0, -3.0]))  # the Linear before the tanh
        next_sa_no_noise = torch.cat([t["next_observations"], algo.target_actor(t["next_observations"])], -1)
        gap = (algo.target_q[0](next_sa_no_noise) - algo.target_q[1](next_sa_no_noise)).median()
        algo.target_q[1][-1].bias += gap
        algo.model.q1[-1].weight.mul_(1e-2)
        algo.model.q1[-1].bias.mul_(1e-2)

    def expected_critic_loss(model, seed):
        with torch.no_grad():
            torch.manual_seed(seed)
            eps = torch.randn_like(t["actions"])
            noise = (eps * 0.4).clamp(-0.3, 0.3)
            assert (noise == 0.3).any() and (noise == -0.3).any()
            raw = algo.target_actor(t["next_observations"]) + noise
            assert (raw > 1).any() and (raw < -1).any()
            next_sa = torch.cat([t["next_observations"], raw.clamp(-1, 1)], -1)
            q1t, q2t = algo.target_q[0](next_sa).squeeze(-1), algo.target_q[1](next_sa).squeeze(-1)
            assert (q1t < q2t).any() and (q2t < q1t).any()
            backup = t["rewards"] + algo.config.discount * (1 - t["dones"]) * torch.min(q1t, q2t)
            return sum(((q(sa).squeeze(-1) - backup) ** 2).mean() for q in (model.q1, model.q2)).item()

    expected = expected_critic_loss(algo.model, seed=11)
    torch.manual_seed(11)
    rows = algo.update(batch)  # update 1: the critics only
    assert set(rows) == {"critic_loss"}
    assert rows["critic_loss"] == pytest.approx(expected, rel=1e-5)

    expected = expected_critic_loss(algo.model, seed=12)
    actor_before = copy.deepcopy(algo.model.actor)
    torch.manual_seed(12)
    rows = algo.update(batch)  # update 2: the critics, then the actor
    assert rows["critic_loss"] == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        pi = actor_before(t["observations"])
        q = algo.model.q1(torch.cat([t["observations"], pi], -1)).squeeze(-1)  # the critic after its step
        assert 1e-6 / q.abs().mean() > 1e-4  # the eps is visible at the test's tolerance
        q_term = -2.5 / (q.abs().mean() + 1e-6) * q.mean()
        bc = ((pi - t["actions"]) ** 2).mean()
    assert rows["actor_q_term"] == pytest.approx(q_term.item(), rel=1e-6)
    assert rows["bc_loss"] == pytest.approx(bc.item(), rel=1e-5)
    # the actor's step: Adam (lr 3e-4, its first step) on q_term + bc_loss, the critic's parameters untouched by it
    critic = copy.deepcopy(algo.model.q1).requires_grad_(False)
    optimizer = torch.optim.Adam(actor_before.parameters(), lr=algo.config.lr)
    pi = actor_before(t["observations"])
    q = critic(torch.cat([t["observations"], pi], -1)).squeeze(-1)
    (-2.5 / (q.abs().mean().detach() + 1e-6) * q.mean() + ((pi - t["actions"]) ** 2).mean()).backward()
    optimizer.step()
    for ours, theirs in zip(algo.model.actor.parameters(), actor_before.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)


def test_td3bc_defaults_are_the_papers_and_corls():
    """Fujimoto & Gu (2021) and CORL's td3_bc configs: batch 256, Adam 3e-4, alpha 2.5, policy noise 0.2 clipped at
    0.5, an actor step every 2 critic steps, 2 hidden layers of 256, discount 0.99, tau 0.005."""
    from frozen_dt.baselines.td3bc import TD3BCConfig

    c = TD3BCConfig()
    assert (c.batch_size, c.lr, c.alpha, c.policy_noise, c.noise_clip, c.policy_freq) == (256, 3e-4, 2.5, 0.2, 0.5, 2)
    assert (c.hidden_dim, c.hidden_layers, c.discount, c.tau) == (256, 2, 0.99, 0.005)


# --- BC: the loss and its optimizer step --------------------------------------------------------------------------


def test_bc_update_is_one_adamw_step_on_the_mean_squared_error():
    """loss = mean over rows and action dims of (pi(s) - a)^2 with pi's tanh head; the step is AdamW's (lr 1e-2,
    weight decay 0.1) on that loss, checked against torch's AdamW on a copy over two steps. Kills: the error's sign
    or power, a missing tanh, the weight decay or the learning rate not reaching the optimizer, gradients not
    zeroed between steps."""
    from frozen_dt.algorithms import Problem, get_spec
    from frozen_dt.config import RunConfig

    dataset = random_transitions()
    spec = get_spec("bc")
    config = spec.config(hidden_dim=16, hidden_layers=1, batch_size=8, lr=1e-2, weight_decay=0.1)
    torch.manual_seed(0)
    model = spec.build_model(config, Problem(3, 2), None)
    with torch.no_grad():
        model.net[-2].bias.copy_(torch.tensor([2.0, -2.0]))  # the tanh saturates: without it the loss differs
    algo = spec.build_algorithm(config, model, dataset, Problem(3, 2), RunConfig(task="hopper-medium-v2", algo="bc"))
    batch = algo.sample_batch(np.random.default_rng(1))
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    reference = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):  # two steps: each one's gradient is its own loss's (none carried over)
        optimizer.zero_grad()
        loss = ((torch.tanh(reference.net[:-1](t["observations"])) - t["actions"]) ** 2).mean()
        loss.backward()
        optimizer.step()
        rows = algo.update(batch)
        assert rows["loss"] == pytest.approx(loss.item(), rel=1e-6)
        for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)


def test_bc_defaults_are_corls():
    """CORL's any_percent_bc: 2 hidden layers of 256, a tanh head, lr 3e-4, batch 256, no weight decay."""
    from frozen_dt.baselines.bc import BCConfig, MLPPolicy

    c = BCConfig()
    assert (c.batch_size, c.lr, c.weight_decay, c.hidden_dim, c.hidden_layers) == (256, 3e-4, 0.0, 256, 2)
    assert isinstance(MLPPolicy(3, 2, 8, 2).net[-1], nn.Tanh)


# --- GCIQL: every quantity of one update, recomputed --------------------------------------------------------------


def test_gciql_update_rows_are_recomputed_from_the_networks_before_it(tmp_path):
    """As OGBench's gciql.py: value_loss = expectile loss of min(Q1_t, Q2_t)(s, a, g_v) - V(s, g_v); critic_loss =
    the sum of the two critics' squared errors to r + gamma * mask * V(s', g_v); q_loss = -mean min(Q1, Q2)(s,
    clip(mu, -1, 1), g_a) / (mean |.| + 1e-6); bc_loss = -alpha * mean log N(a; mu, 1) (the full Gaussian log density,
    summed over action dims); v_mean = mean V. Set up so every rule shows: the min takes each critic on some rows
    (target and online), half the masks 0, the actor's mean past +-1 on some entries, Q scaled down so the 1e-6 is
    visible; then the step, against Adam's first step on the four losses' sum. Kills: a critic read twice, the mask's
    or an error's sign or power, the clip of mu dropped or moved, the log density's constant or sign, alpha not
    applied, a loss's sign in the sum."""
    from frozen_dt.baselines.common import expectile_loss

    algo, batch = twin_critic_algorithm("gciql", tmp_path, alpha=0.7)
    batch["masks"] = (np.arange(len(batch["masks"])) % 2).astype(batch["masks"].dtype)
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    m = algo.model
    value_in = torch.cat([t["observations"], t["value_goals"], t["actions"]], -1)
    with torch.no_grad():
        m.actor[-1].bias.copy_(torch.linspace(-2.5, 2.5, m.act_dim))  # some means beyond the clip, some inside
        actor_in = torch.cat([t["observations"], t["actor_goals"]], -1)
        mean = m.actor(actor_in)
        assert (mean > 1).any() and (mean < -1).any() and (mean.abs() < 1).any()
        for q in (m.q1, m.q2):
            q[-1].weight.mul_(1e-2)
            q[-1].bias.mul_(1e-2)
        policy_in = torch.cat([t["observations"], t["actor_goals"], mean.clamp(-1, 1)], -1)
        m.q2[-1].bias += (m.q1(policy_in) - m.q2(policy_in)).median()
        algo.target_q[1][-1].bias += (algo.target_q[0](value_in) - algo.target_q[1](value_in)).median()
        target = torch.min(algo.target_q[0](value_in), algo.target_q[1](value_in)).squeeze(-1)
        q1, q2 = m.q1(policy_in).squeeze(-1), m.q2(policy_in).squeeze(-1)
        assert (q1 < q2).any() and (q2 < q1).any()
        t1, t2 = algo.target_q[0](value_in).squeeze(-1), algo.target_q[1](value_in).squeeze(-1)
        assert (t1 < t2).any() and (t2 < t1).any()
        v = m.value(torch.cat([t["observations"], t["value_goals"]], -1)).squeeze(-1)
        next_v = m.value(torch.cat([t["next_observations"], t["value_goals"]], -1)).squeeze(-1)
        backup = t["rewards"] + algo.discount * t["masks"] * next_v
        critic_loss = sum(((q(value_in).squeeze(-1) - backup) ** 2).mean() for q in (m.q1, m.q2))
        q = torch.min(q1, q2)
        assert 1e-6 / q.abs().mean() > 1e-4
        q_loss = -q.mean() / (q.abs().mean() + 1e-6)
        log_prob = torch.distributions.Normal(mean, 1.0).log_prob(t["actions"]).sum(-1)
        expected = {"value_loss": expectile_loss(target - v, 0.9).item(), "critic_loss": critic_loss.item(),
                    "q_loss": q_loss.item(), "bc_loss": (-0.7 * log_prob.mean()).item(), "v_mean": v.mean().item()}
    reference = copy.deepcopy(m)
    rows = algo.update(batch)
    assert all(type(value) is float for value in rows.values())
    assert rows == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # the step: one Adam (lr 3e-4, its first step) over every network on the sum of the four losses, the actor's
    # loss reaching the actor only
    r = reference
    optimizer = torch.optim.Adam(r.parameters(), lr=algo.optimizer.param_groups[0]["lr"])
    v = r.value(torch.cat([t["observations"], t["value_goals"]], -1)).squeeze(-1)
    loss = expectile_loss(target - v, 0.9)
    loss = loss + sum(((q(value_in).squeeze(-1) - backup) ** 2).mean() for q in (r.q1, r.q2))
    mean = r.actor(actor_in)
    frozen = copy.deepcopy(r).requires_grad_(False)
    policy_in = torch.cat([t["observations"], t["actor_goals"], mean.clamp(-1, 1)], -1)
    q = torch.min(frozen.q1(policy_in), frozen.q2(policy_in)).squeeze(-1)
    loss = loss - q.mean() / (q.abs().mean().detach() + 1e-6)
    loss = loss - 0.7 * torch.distributions.Normal(mean, 1.0).log_prob(t["actions"]).sum(-1).mean()
    loss.backward()
    optimizer.step()
    for ours, theirs in zip(m.parameters(), r.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)


def test_gciql_defaults_are_ogbenchs():
    """OGBench's gciql get_config: lr 3e-4, batch 1024, 3 hidden layers of 512, discount 0.99, tau 0.005, expectile
    0.9, alpha 0.3; GELU everywhere, LayerNorm in the value and critic networks only; the actor's last layer
    scaled as OGBench's GCActor."""
    from frozen_dt.baselines.gciql import GCIQLConfig, GoalConditionedNetworks

    c = GCIQLConfig()
    assert (c.lr, c.batch_size, c.hidden_dim, c.hidden_layers) == (3e-4, 1024, 512, 3)
    assert (c.discount, c.tau, c.expectile, c.alpha) == (0.99, 0.005, 0.9, 0.3)
    nets = GoalConditionedNetworks(3, 2, 8, 2)
    for net in (nets.value, nets.q1, nets.q2):
        assert sum(isinstance(layer, nn.LayerNorm) for layer in net) == 2
        assert sum(isinstance(layer, nn.GELU) for layer in net) == 2
    assert not any(isinstance(layer, nn.LayerNorm) for layer in nets.actor)
    assert sum(isinstance(layer, nn.GELU) for layer in nets.actor) == 2
    # the actor's mean layer: OGBench's final_fc_init_scale 1e-2, a variance scaling (fan_avg, uniform), which is
    # xavier-uniform with gain sqrt(1e-2) = 0.1, zero bias
    torch.manual_seed(0)
    last = [m for m in GoalConditionedNetworks(40, 24, 512, 3).actor if isinstance(m, nn.Linear)][-1]
    bound = 0.1 * math.sqrt(6 / (512 + 24))
    assert last.weight.abs().max() <= bound and last.weight.abs().max() > 0.95 * bound
    assert last.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert torch.count_nonzero(last.bias) == 0


# --- what the baselines share (baselines/common.py) ---------------------------------------------------------------


def test_reward_scale_is_1000_over_the_spread_of_episode_returns():
    """CORL's normalization: 1000 / (max - min) of the episode returns (here 10, 30 and 70: 1000 / 60); one return
    (no spread) scales by 1; a spread of 0.5 by 2000."""
    from frozen_dt.baselines.common import reward_scale

    def dataset(returns):
        rewards = np.concatenate([[r / 2, r / 2] for r in returns]).astype(np.float32)
        n = len(rewards)
        return from_flat_arrays(np.zeros((n, 3), np.float32), np.zeros((n, 2), np.float32), rewards,
                                np.arange(n) % 2 == 1, np.zeros(n, bool), where="synthetic")

    assert reward_scale(dataset([30.0, 10.0, 70.0])) == pytest.approx(1000.0 / 60.0, rel=1e-12)
    assert reward_scale(dataset([0.2, 0.7])) == pytest.approx(2000.0, rel=1e-6)  # a spread below 1 still divides
    assert reward_scale(dataset([5.0, 5.0])) == 1.0


@pytest.mark.parametrize("orthogonal", [False, True])
def test_scale_last_layer_gives_the_last_layer_gain_and_zero_bias_and_keeps_or_orthogonalizes_the_rest(orthogonal):
    """CORL's init: the last layer xavier-uniform (by default; or orthogonal) with the gain (by default 1e-2), its bias
    zero; the hidden layers untouched, or (orthogonal) orthogonal with gain sqrt 2 and zero bias. Plain MLPs have no
    LayerNorm unless asked."""
    from frozen_dt.baselines.common import mlp, scale_last_layer

    torch.manual_seed(0)
    net = mlp(40, 30, 64, 2)
    assert not any(isinstance(layer, nn.LayerNorm) for layer in net)  # CORL's MLPs have none (OGBench's ask for it)
    before = copy.deepcopy(net)
    scale_last_layer(net, gain=0.1, orthogonal=True) if orthogonal else scale_last_layer(net, gain=0.1)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    last = linears[-1].weight.detach()
    assert torch.equal(linears[-1].bias.detach(), torch.zeros(30))
    if orthogonal:
        torch.testing.assert_close(last @ last.T, 0.01 * torch.eye(30), rtol=0, atol=1e-5)  # rows of norm 0.1
        for layer in linears[:-1]:
            w = layer.weight.detach()
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # the smaller side is orthonormal
            torch.testing.assert_close(gram, 2.0 * torch.eye(min(w.shape)), rtol=0, atol=1e-4)
            assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias))
    else:
        bound = 0.1 * math.sqrt(6.0 / (64 + 30))
        assert last.abs().max() <= bound and last.abs().max() > 0.9 * bound
        assert last.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        for layer, old in zip(linears[:-1], [m for m in before if isinstance(m, nn.Linear)]):
            assert torch.equal(layer.weight, old.weight) and torch.equal(layer.bias, old.bias)
        scale_last_layer(net)  # the default gain: CORL's 1e-2
        assert net[-1].weight.abs().max() <= 1e-2 * math.sqrt(6.0 / (64 + 30))


def test_no_param_grads_passes_gradients_to_inputs_only_and_restores_what_was_trainable():
    from frozen_dt.baselines.common import no_param_grads

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    net[1].bias.requires_grad_(False)  # frozen before: stays frozen after
    x = torch.randn(5, 3, requires_grad=True)
    with no_param_grads(net):
        assert not any(p.requires_grad for p in net.parameters())
        net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, True, False]


def test_observation_agent_feeds_the_policy_normalized_observations_and_goals():
    """The agent acts with model(normalize(obs)[, normalize(goal)]), the goal being the one its slot's episode
    started with; without statistics it feeds the raw arrays."""
    from frozen_dt.baselines.common import ObservationPolicyAgent

    class Echo(nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(()))

        def forward(self, observations, goals=None):
            return observations if goals is None else observations + 10 * goals

    stats = ObsStats(np.array([1.0, -2.0], np.float32), np.array([2.0, 4.0], np.float32))
    obs = np.array([[3.0, 2.0], [1.0, -2.0]], np.float32)
    agent = ObservationPolicyAgent(Echo(), stats)
    agent.start(0, 0)
    np.testing.assert_allclose(agent.act(obs, np.array([0, 1])), [[1.0, 1.0], [0.0, 0.0]])
    agent = ObservationPolicyAgent(Echo(), stats)
    agent.start(0, 0, goal=np.array([5.0, 6.0], np.float32))
    agent.start(1, 0, goal=np.array([1.0, -2.0], np.float32))
    np.testing.assert_allclose(agent.act(obs, np.array([1, 0])), [[1.0, 1.0], [20.0, 20.0]])
    raw = ObservationPolicyAgent(Echo(), None)
    raw.start(0, 0, goal=np.array([1.0, 1.0], np.float32))
    np.testing.assert_allclose(raw.act(obs[:1], np.array([0])), [[13.0, 12.0]])


def test_shared_defaults_are_corls():
    """Every twin-critic baseline's discount 0.99 and tau 0.005; the observation std's eps 1e-3 (CORL's
    compute_mean_std); rewards not normalized unless asked."""
    from frozen_dt.baselines.common import TwinCriticConfig, normalize_reward_field, obs_eps_field

    assert (TwinCriticConfig().discount, TwinCriticConfig().tau) == (0.99, 0.005)
    assert obs_eps_field().default == 1e-3
    assert normalize_reward_field().default is False


# --- the sequence models' update (frozen_dt/sequence_models.py) ------------------------------------------------------


def sequence_dataset(seed: int = 0):
    """Episodes of 3 to 9 steps (many windows of context 4 are left-padded)."""
    rng = np.random.default_rng(seed)
    lengths = [3, 9, 4, 7, 5, 8, 3, 6]
    n = sum(lengths)
    dones = np.zeros(n, bool)
    dones[np.cumsum(lengths) - 1] = True
    return from_flat_arrays(rng.normal(size=(n, 3)).astype(np.float32),
                            rng.uniform(-0.9, 0.9, size=(n, 2)).astype(np.float32),
                            rng.normal(size=n).astype(np.float32), dones, dones.copy(), where="synthetic")


def tiny_dt_algorithm(**settings):
    """DT (width 16, one layer, context 4, batch 6, dropout 0 unless ``settings`` say otherwise) on
    :func:`sequence_dataset`, fp32, batches drawn on the host."""
    from frozen_dt.algorithms import Problem, get_spec
    from frozen_dt.config import RunConfig

    spec = get_spec("dt")
    config = spec.config(**{"context": 4, "batch_size": 6, "embed_dim": 16, "dt_layers": 1, "dt_heads": 1,
                            "dropout": 0.0, **settings})
    problem = Problem(3, 2, rtg_scale=10.0, max_timestep=20)
    torch.manual_seed(0)
    model = spec.build_model(config, problem, None)
    return spec.build_algorithm(config, model, sequence_dataset(), problem,
                                RunConfig(task="hopper-medium-v2", algo="dt", precision="fp32", device_sampling="off"))


def test_sequence_update_is_adamw_on_the_masked_mse_with_warmup_and_clipping():
    """Four DT updates (dropout 0, lr 1e-2, weight decay 0.1, warm-up 3, clip 0.05), each checked against a copy
    trained by hand: loss = the mean of (predicted - action)^2 over the real steps' action entries (padded steps
    left out), its gradient's norm (the row reports it before clipping) clipped to 0.05, AdamW at lr 1e-2 * min((k +
    1) / 3, 1) at update k. Kills: padded steps counted, the error's power, the warm-up's offset or cap, the clip's
    threshold, the weight decay or the rate not reaching AdamW, the row's lr one update late."""
    from frozen_dt.sequence_models import SequenceConfig

    algo = tiny_dt_algorithm(lr=1e-2, weight_decay=0.1, warmup_steps=3, grad_clip=0.05)
    model = algo.model
    reference = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    rng = np.random.default_rng(1)
    padded = 0
    for k in range(4):
        batch = algo.sample_batch(rng)
        t = {key: torch.as_tensor(v) for key, v in batch.items()}
        real = t["mask"]
        padded += int((~real).sum())
        lr = 1e-2 * min((k + 1) / 3, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        predicted = reference(t)
        loss = ((predicted - t["actions"]) ** 2)[real].mean()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
        assert norm > 0.05  # the clip binds
        optimizer.step()
        rows = algo.update(batch)
        assert rows["loss"] == pytest.approx(loss.item(), rel=1e-5)
        assert rows["grad_norm"] == pytest.approx(norm.item(), rel=1e-5)
        assert rows["lr"] == pytest.approx(lr, rel=1e-12)
        for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert padded > 0
    defaults = SequenceConfig()
    assert (defaults.context, defaults.batch_size, defaults.lr, defaults.weight_decay, defaults.warmup_steps,
            defaults.grad_clip, defaults.dropout) == (20, 64, 1e-4, 1e-4, 10_000, 0.25, 0.1)  # the DT paper's


def test_masked_mean_averages_the_real_steps_entries_only():
    from frozen_dt.sequence_models import masked_mean

    values = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[False, True, True], [False, False, True]])
    assert masked_mean(values, mask).item() == pytest.approx((2 + 3 + 4 + 5 + 10 + 11) / 6)
    assert masked_mean(values[..., 0], mask).item() == pytest.approx((2 + 4 + 10) / 3)


# --- the frozen-LM DT (frozen_dt/frozen_lm_dt.py) ----------------------------------------------------------------


def test_sinusoidal_timestep_features_are_sin_then_cos_at_periods_2pi_to_2pi_10000():
    """With the projection set to the identity the embedding of t is [sin(t w_0..w_{h-1}), cos(t w_0..)], w_i =
    10000^(-i / h), h = features / 2 (as "Attention is all you need")."""
    from frozen_dt.frozen_lm_dt import SinusoidalTimestepEmbedding

    embed = SinusoidalTimestepEmbedding(width=8, features=8)
    with torch.no_grad():
        embed.project.weight.copy_(torch.eye(8))
        embed.project.bias.zero_()
    t = torch.tensor([0, 1, 37, 999])
    w = [10_000.0 ** (-i / 4) for i in range(4)]
    expected = torch.tensor([[math.sin(s * f) for f in w] + [math.cos(s * f) for f in w] for s in t.tolist()])
    torch.testing.assert_close(embed(t), expected, rtol=0, atol=2e-4)  # float32 angles up to 999 rad


class FakeSlice(nn.Module):
    def __init__(self, width=8, max_positions=None):
        super().__init__()
        self.width, self.max_positions = width, max_positions
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)


def test_only_a_pretrained_wholly_frozen_slice_is_shared_between_seeds(monkeypatch):
    """Seeds stacked in one process share the slice object when it is pretrained and frozen (its weights held
    once); a random-init, shuffled or partly trainable slice is each seed's own."""
    from frozen_dt.backbones import slice as slice_module
    from frozen_dt.frozen_lm_dt import FrozenDTConfig, load_backbone

    monkeypatch.setattr(slice_module, "load_backbone", lambda *args, **kwargs: FakeSlice())
    config = FrozenDTConfig()
    a, b = load_backbone(config, seed=0), load_backbone(config, seed=1)
    assert isinstance(a, FakeSlice) and a is b
    for other in (FrozenDTConfig(init="random"), FrozenDTConfig(init="shuffled"), FrozenDTConfig(freeze="ln")):
        x, y = load_backbone(other, seed=0), load_backbone(other, seed=1)
        assert x is not y and x is not a


def test_timestep_features_must_be_a_positive_even_number():
    """sin/cos pairs: the setting is refused with one clear error when odd; the module refuses 0, negatives and odd
    counts, and takes the smallest even count, 2."""
    from frozen_dt.errors import FrozenDTError
    from frozen_dt.frozen_lm_dt import FrozenDTConfig, SinusoidalTimestepEmbedding

    FrozenDTConfig().validate()
    FrozenDTConfig(timestep_features=2).validate()
    for odd in (1, 3, 129):
        with pytest.raises(FrozenDTError, match="must be even"):
            FrozenDTConfig(timestep_features=odd).validate()
    assert SinusoidalTimestepEmbedding(8, 2)(torch.tensor([3])).shape == (1, 8)
    for bad in (0, -2, 3):
        with pytest.raises(ValueError, match="positive even"):
            SinusoidalTimestepEmbedding(8, bad)


def test_context_is_refused_only_when_its_tokens_exceed_the_slices_positions():
    """3 tokens per step: context 10 fits 30 learned positions exactly, 11 does not; no positions, no limit."""
    from frozen_dt.algorithms import Problem
    from frozen_dt.errors import FrozenDTError
    from frozen_dt.frozen_lm_dt import FrozenDTConfig, build_model

    problem = Problem(3, 2)
    assert build_model(FrozenDTConfig(context=10), problem, FakeSlice(max_positions=30)).context == 10
    with pytest.raises(FrozenDTError, match="33 tokens"):
        build_model(FrozenDTConfig(context=11), problem, FakeSlice(max_positions=30))
    assert build_model(FrozenDTConfig(context=500), problem, FakeSlice()).context == 500


def test_frozen_dt_defaults_are_the_borrowed_geometry_setting():
    """A frozen 5-layer Gemma 3 270M slice (0:5), pretrained, wholly frozen, 128 timestep features; the DT paper's
    optimisation."""
    from frozen_dt.frozen_lm_dt import FrozenDTConfig

    c = FrozenDTConfig()
    assert (c.backbone, c.layers, c.init, c.freeze, c.timestep_features) == ("gemma3-270m", "0:5", "pretrained", "all",
                                                                              128)
    assert (c.context, c.lr, c.warmup_steps) == (20, 1e-4, 10_000)


def test_gciql_acts_with_the_clipped_mean_on_raw_observations(tmp_path):
    """The evaluation action is clip(mu(s, g), -1, 1) (the actor's mean pushed past both bounds); GCIQL trains and acts
    on raw observations (OGBench normalizes none), so its runs carry no statistics and evaluation accepts that."""
    from frozen_dt.algorithms import get_spec

    algo, batch = twin_critic_algorithm("gciql", tmp_path)
    m = algo.model
    with torch.no_grad():
        m.actor[-1].bias.copy_(torch.linspace(-2.5, 2.5, m.act_dim))
        obs, goals = torch.as_tensor(batch["observations"]), torch.as_tensor(batch["actor_goals"])
        mean = m.actor(torch.cat([obs, goals], -1))
        assert (mean > 1).any() and (mean < -1).any()
        assert torch.equal(m(obs, goals), mean.clamp(-1.0, 1.0))
    assert algo.obs_stats is None and get_spec("gciql").raw_observations


def test_goal_conditioned_agent_windows_hold_the_normalized_goal_on_every_real_step():
    """An OGBench DT agent needs each episode's goal (a clear error without one); every real step of its window holds
    the goal normalized like the observations, padded steps zero."""
    spy = WindowSpy()
    spy.goal_dim = 3
    stats = ObsStats(np.array([1.0, 0.0, -1.0], np.float32), np.array([2.0, 1.0, 4.0], np.float32))
    agent = ReturnConditionedAgent(spy, stats, 1.0, None)
    with pytest.raises(ValueError, match="goal"):
        agent.start(0, 0)
    agent.start(0, 0, goal=np.array([3.0, 5.0, 7.0], np.float32))
    for _ in range(6):
        agent.act(np.zeros((1, 3), np.float32), np.array([0]))
        agent.observe(np.array([0]), np.array([0.0]))
    goal = np.array([1.0, 5.0, 2.0], np.float32)
    for t, call in enumerate(spy.seen):
        real = min(t + 1, 4)
        np.testing.assert_array_equal(call["goals"][0], [[0.0] * 3] * (4 - real) + [goal] * real)


# --- the sequence models' tokens and dropout --------------------------------------------------------------------------


def test_tokens_are_the_layer_normed_modality_embeddings_plus_the_timestep_embedding():
    """Token 3k is embed_return(R_k) + time_k, 3k + 1 embed_state(s_k) + time_k, 3k + 2 embed_action(a_k) + time_k,
    then the input LayerNorm; the token mask repeats each step's mask three times."""
    algo = tiny_dt_algorithm()
    model = algo.model
    batch = {k: torch.as_tensor(v) for k, v in algo.sample_batch(np.random.default_rng(1)).items()}
    model.eval()
    with torch.no_grad():
        x, mask = model.tokens(batch)
        time = model.embed_timestep(batch["timesteps"])
        parts = (model.embed_return(batch["returns_to_go"]), model.embed_state(batch["observations"]),
                 model.embed_action(batch["actions"]))
        for k in range(4):
            for j, part in enumerate(parts):
                torch.testing.assert_close(x[:, 3 * k + j], model.input_ln(part[:, k] + time[:, k]), rtol=0, atol=1e-6)
                assert torch.equal(mask[:, 3 * k + j], batch["mask"][:, k])
    assert (batch["timesteps"] > 0).any()  # the timestep embedding is not the same everywhere


def test_dropout_masks_are_zero_or_one_over_the_keep_probability():
    """Each training mask entry is 0 (dropped, probability p) or 1 / (1 - p) (kept): the expected activation is
    unchanged. In eval mode, or with p = 0, there are no masks (and nothing is drawn)."""
    model = tiny_dt_algorithm(dropout=0.25).model
    torch.manual_seed(3)
    masks = model.draw_dropout(64)
    assert set(masks) == set(model.dropout_shapes(64))
    values = torch.cat([m.flatten() for m in masks.values()])
    assert torch.unique(values).tolist() == pytest.approx([0.0, 1 / 0.75])
    assert (values == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    batch = {"mask": torch.ones(4, 3, dtype=torch.bool)}
    model.train()
    assert model.dropout_masks(batch) is not None
    model.eval()
    assert model.dropout_masks(batch) is None  # acting drops nothing
    without = tiny_dt_algorithm(dropout=0.0).model.train()
    state = torch.get_rng_state()
    assert without.dropout_masks(batch) is None  # p = 0: no masks, and no draw from the RNG
    assert torch.equal(torch.get_rng_state(), state)


# --- DT's GPT-2 blocks with dropout (baselines/dt.py) -------------------------------------------------------------


def test_dt_blocks_apply_each_dropout_mask_where_gpt2_drops():
    """With dropout masks (0 or 2, drawn at random) a block computes GPT-2's eager path by hand: attention
    probabilities = softmax of (q k^T / sqrt(head dim), causal and padding masked) times the probabilities' mask,
    the attention output times its mask, the MLP output times its mask, each added to the residual stream; with
    all-ones masks this equals the fused (no-dropout) path. Kills: a mask applied to the wrong tensor or not at all,
    the score scale, the causal or padding mask, the residual additions."""
    from frozen_dt.baselines.dt import GPT

    torch.manual_seed(0)
    b, t, d, heads = 2, 6, 8, 2
    gpt = GPT(d, 2, heads)
    for block in gpt.blocks:  # larger than GPT-2's init (0.02), so that the attention is far from uniform
        nn.init.normal_(block.attn.c_attn.weight, 0.0, 0.7)
    x = torch.randn(b, t, d)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    g = torch.Generator().manual_seed(1)

    def draw(*shape):
        return 2.0 * torch.randint(0, 2, shape, generator=g).float()

    noise = {}
    for i in range(2):
        noise.update({f"attn{i}": draw(b, heads, t, t), f"resid{i}": draw(b, t, d), f"mlp{i}": draw(b, t, d)})
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = (causal & (mask[:, None, :] | torch.eye(t, dtype=torch.bool)))[:, None]
    h = x
    with torch.no_grad():
        for i, block in enumerate(gpt.blocks):
            q, k, v = block.attn.c_attn(block.ln_1(h)).split(d, -1)
            q, k, v = (y.reshape(b, t, heads, d // heads).transpose(1, 2) for y in (q, k, v))
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // heads)
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1) * noise[f"attn{i}"]
            attn = block.attn.c_proj((probs @ v).transpose(1, 2).reshape(b, t, d)) * noise[f"resid{i}"]
            h = h + attn
            h = h + block.mlp(block.ln_2(h)) * noise[f"mlp{i}"]
        torch.testing.assert_close(gpt(x, mask, noise=noise), h, rtol=1e-5, atol=1e-5)
        ones = {k: torch.ones_like(v) for k, v in noise.items()}
        torch.testing.assert_close(gpt(x, mask, noise=ones), gpt(x, mask), rtol=1e-5, atol=1e-5)


def test_dt_dropout_masks_cover_every_token_of_every_block():
    """DT's masks: the embeddings' (B, 3K, d), then for each block the attention probabilities' (B, heads, 3K,
    3K) and the attention and MLP outputs' (B, 3K, d); a training forward applies them all."""
    algorithm = tiny_dt_algorithm(dropout=0.1, dt_layers=2)
    model = algorithm.model
    b, t, d, heads = 4, 3 * model.context, model.width, model.body.n_head
    expected = {"embed": (b, t, d)}
    for i in range(2):
        expected.update({f"attn{i}": (b, heads, t, t), f"resid{i}": (b, t, d), f"mlp{i}": (b, t, d)})
    assert {k: tuple(v) for k, v in model.dropout_shapes(b).items()} == expected
    row = algorithm.update(algorithm.sample_batch(np.random.default_rng(0)))
    assert math.isfinite(row["loss"])


# --- the trainer's schedule (frozen_dt/training/trainer.py) ---------------------------------------------------------


class CountingAlgorithm:
    """Update k (1-based) reports loss k; nothing trains."""

    def __init__(self):
        self.model, self.obs_stats, self.updates = nn.Linear(1, 1), None, 0

    def sample_batch(self, rng):
        return None

    def update(self, batch):
        self.updates += 1
        return {"loss": float(self.updates)}

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]


def test_trainer_logs_interval_means_evaluates_saves_and_keeps_the_strictly_best(tmp_path):
    """7 steps, a log row every 3 (and at the end), an evaluation every 2 (and at the end), last.pt every 4 (and at
    the end): rows at steps 2, 3, 4, 6, 7; each log row's loss is the mean over its interval (2, 5, 7); best.pt
    written when the score beats every earlier one (scores 1, 3, 3, 2: at steps 2 and 4 only, a tie is not better).
    Kills: a row's mean over a wrong interval, the final step's row or checkpoint skipped, ties replacing best, a
    schedule's boundary off by one."""
    import json as json_module

    from frozen_dt.training.trainer import Trainer

    scores = iter([1.0, 3.0, 3.0, 2.0])
    evaluated = []

    def evaluate(algorithm, step):
        evaluated.append(step)
        return {"score": next(scores)}

    trainer = Trainer(CountingAlgorithm(), tmp_path, steps=7, seed=0, log_every=3, eval_every=2, save_every=4,
                      evaluate=evaluate, progress=False)
    saves = []
    save = trainer.save
    trainer.save = lambda which: (saves.append((which, trainer.step)), save(which))
    trainer.run()
    rows = [json_module.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 6, 7]
    assert [r.get("loss") for r in rows] == [None, 2.0, None, 5.0, 7.0]
    assert [r.get("score") for r in rows] == [1.0, None, 3.0, 3.0, 2.0]
    assert evaluated == [2, 4, 6, 7]
    assert saves == [("best", 2), ("best", 4), ("last", 4), ("last", 7)]
    assert trainer.best_score == 3.0 and trainer.last_eval == {"step": 7, "score": 2.0}


def test_linear_warmup_factor_rises_to_one_and_no_warmup_is_one_throughout():
    from frozen_dt.sequence_models import linear_warmup

    assert [linear_warmup(4)(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [linear_warmup(0)(k) for k in range(3)] == [1.0, 1.0, 1.0]
