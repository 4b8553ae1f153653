"""The vectorized rollout engine: exact episode counts, seeding, width-independence, DT agents."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from factories import make_dt
from frozen_dt.data.dataset import ObsStats
from frozen_dt.envs.registry import get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.eval.rollout import EVAL_SEED, default_workers, evaluate_agent, in_blocks, rollout
from frozen_dt.sequence_models import ReturnConditionedAgent

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
HOPPER = get_task("hopper-medium-v2")


class LinearAgent:
    """A stateless deterministic agent with a fixed random linear map, logging what the engine calls. Like every
    agent, it runs inference in fixed-shape blocks (a plain batched matmul's rows depend on the batch size)."""

    def __init__(self, obs_dim=11, act_dim=3, seed=0):
        self.w = np.random.default_rng(seed).normal(scale=0.5, size=(act_dim, obs_dim)).astype(np.float32)
        self.started: list[int] = []

    def start(self, slot, episode, goal=None):
        self.started.append(episode)

    def act(self, observations, slots):
        return in_blocks(lambda o: np.tanh(o @ self.w.T), observations.astype(np.float32))

    def observe(self, slots, rewards):
        pass


@pytest.mark.parametrize("episodes,width,workers", [(1, 4, 1), (5, 1, 1), (5, 2, 1), (7, 3, 1), (6, 16, 1),
                                                   (7, 3, 2), (9, 4, 3), (2, 6, 4)])
def test_exactly_n_episodes_each_once(episodes, width, workers):
    agent = LinearAgent()
    runs = rollout(HOPPER, agent, episodes, seed=3, num_envs=width, workers=workers, progress=False)
    assert [r["episode"] for r in runs] == list(range(episodes))
    assert sorted(agent.started) == list(range(episodes))  # every episode started once, no autoreset extras
    assert all(r["length"] >= 1 for r in runs)


def test_returns_do_not_depend_on_vector_width():
    base = rollout(HOPPER, LinearAgent(), 6, seed=11, num_envs=1, progress=False)
    for width in (2, 4, 6):
        other = rollout(HOPPER, LinearAgent(), 6, seed=11, num_envs=width, progress=False)
        assert [r["return"] for r in other] == [r["return"] for r in base]
        assert [r["length"] for r in other] == [r["length"] for r in base]


def test_worker_threads_give_the_same_episodes():
    base = rollout(HOPPER, LinearAgent(), 7, seed=11, num_envs=1, progress=False)
    for width, workers in ((2, 2), (5, 2), (6, 3)):
        other = rollout(HOPPER, LinearAgent(), 7, seed=11, num_envs=width, workers=workers, progress=False)
        assert [(r["return"], r["length"]) for r in other] == [(r["return"], r["length"]) for r in base]


class FailingAgent(LinearAgent):
    """Fails when it first acts on slot 2 (a worker's slot when the envs are split over workers)."""

    def act(self, observations, slots):
        if 2 in slots:
            raise RuntimeError("agent failed on slot 2")
        return super().act(observations, slots)


def test_an_error_in_a_worker_stops_the_rollout_and_reaches_the_caller():
    torch_threads = torch.get_num_threads()
    agent = FailingAgent()
    with pytest.raises(RuntimeError, match="slot 2"):
        rollout(HOPPER, agent, 60, seed=0, num_envs=4, workers=2, progress=False)
    assert len(agent.started) < 60  # the healthy worker stopped too, without running the remaining episodes
    assert torch.get_num_threads() == torch_threads  # the workers' one-thread setting is undone


def test_worker_settings_are_restored_after_the_workers_run():
    """While workers run: one torch thread and a short GIL switch interval; afterwards both as they were."""
    import sys

    from frozen_dt.eval.rollout import worker_settings

    threads, interval = torch.get_num_threads(), sys.getswitchinterval()
    with worker_settings():
        assert torch.get_num_threads() == 1 and sys.getswitchinterval() == pytest.approx(5e-4)
    assert torch.get_num_threads() == threads and sys.getswitchinterval() == pytest.approx(interval)


def test_default_workers_keep_a_full_block_each(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers(32, 100) == 2 and default_workers(16, 100) == 1 and default_workers(3, 100) == 1
    assert default_workers(32, 20) == 1  # only 20 envs run
    assert default_workers(64, 100, "cuda") == 1
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_workers(64, 100) == 4


def test_episode_i_is_seeded_eval_seed_plus_i():
    runs = rollout(HOPPER, LinearAgent(), [0, 1], seed=20, num_envs=2, progress=False)
    shifted = rollout(HOPPER, LinearAgent(), [1, 2], seed=19, num_envs=2, progress=False)
    assert runs[0]["return"] == shifted[0]["return"] and runs[1]["return"] == shifted[1]["return"]
    again = rollout(HOPPER, LinearAgent(), 2, seed=20, num_envs=1, progress=False)
    assert [r["return"] for r in again] == [r["return"] for r in runs]
    other = rollout(HOPPER, LinearAgent(), 2, seed=999, num_envs=1, progress=False)
    assert [r["return"] for r in other] != [r["return"] for r in runs]


def test_recorded_episode_matches_its_return_and_a_plain_env_loop():
    agent = LinearAgent()
    run = rollout(HOPPER, agent, [0], seed=5, num_envs=1, record=True, progress=False)[0]
    assert len(run["rewards"]) == run["length"]
    assert run["rewards"].sum() == pytest.approx(run["return"])
    env = HOPPER.make_env()
    obs, _ = env.reset(seed=5)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs[None], np.array([0]))[0])
        total += reward
        done = terminated or truncated
    assert total == pytest.approx(run["return"], rel=1e-9)


def test_max_steps_cuts_episodes_and_zero_episodes_is_an_error():
    runs = rollout(HOPPER, LinearAgent(), 3, seed=0, num_envs=2, max_steps=7, record=True, progress=False)
    assert all(r["length"] <= 7 for r in runs)
    assert all(r["timeouts"][-1] or r["terminals"][-1] for r in runs)
    assert not any(r["success"] for r in runs)  # a locomotion env reports no success: none is counted
    for r in runs:  # the flags mark the last step only, and never both: a terminal is not a timeout
        assert not r["timeouts"][:-1].any() and not r["terminals"][:-1].any()
        assert not (r["timeouts"][-1] and r["terminals"][-1])
        assert r["timeouts"][-1] == (r["length"] == 7 and not r["terminals"][-1])
    with pytest.raises(FrozenDTError):
        rollout(HOPPER, LinearAgent(), 0, progress=False)


def small_dt(seed=0):
    torch.manual_seed(seed)
    model = make_dt(11, 3, context=5, width=32, n_layer=2, n_head=2, dropout=0.1)
    return model.eval()


def dt_agent(model, target=3600.0):
    stats = ObsStats(np.zeros(11, np.float32), np.ones(11, np.float32))
    return ReturnConditionedAgent(model, stats, 1000.0, target)


def test_dt_agent_returns_do_not_depend_on_vector_width_or_workers():
    model = small_dt()
    one = rollout(HOPPER, dt_agent(model), 4, seed=1, num_envs=1, max_steps=40, progress=False)
    three = rollout(HOPPER, dt_agent(model), 4, seed=1, num_envs=3, max_steps=40, progress=False)
    assert [r["return"] for r in one] == [r["return"] for r in three]
    shared = rollout(HOPPER, dt_agent(model), 4, seed=1, num_envs=4, workers=2, max_steps=40, progress=False)
    assert [r["return"] for r in one] == [r["return"] for r in shared]


def test_dt_agent_follows_dt_get_action_step_by_step():
    """The batched agent's actions equal the model's single-episode ``act`` (DT's get_action) on the same history."""
    model = small_dt(1)
    agent = dt_agent(model, target=2000.0)
    env = HOPPER.make_env()
    obs, _ = env.reset(seed=4)
    agent.start(0, 0)
    history_obs, history_act, rtg, rewards = [], [], [2.0], []
    for t in range(12):  # longer than the context: the window slides
        action = agent.act(obs[None].astype(np.float32), np.array([0]))[0]
        history_obs.append(obs.astype(np.float32))
        reference = model.act(torch.as_tensor(np.stack(history_obs)),
                              torch.as_tensor(np.asarray(history_act, np.float32).reshape(-1, 3)),
                              torch.as_tensor(np.asarray(rtg, np.float32)), torch.arange(t + 1)).numpy()
        np.testing.assert_allclose(action, reference, atol=1e-5)
        history_act.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(np.array([0]), np.array([reward]))
        rewards.append(reward)
        rtg.append(rtg[-1] - reward / 1000.0)
        if terminated:
            break


def test_evaluate_agent_reports_each_target_on_the_same_episodes():
    model = small_dt()
    result = evaluate_agent(HOPPER, lambda target: dt_agent(model, target), targets=(3600.0, 1800.0), episodes=3,
                            num_envs=2, max_steps=20, progress=False, keep_episodes=True)
    assert result["score"] == result["score@3600"]
    assert {e["episode"] for e in result["episodes@1800"]} == {0, 1, 2}
    scores = [e["score"] for e in result["episodes@3600"]]
    assert result["score@3600"] == pytest.approx(np.mean(scores))


def test_envs_in_worker_processes_give_the_same_episodes():
    """``env_processes`` (gymnasium AsyncVectorEnv, the default beside a GPU) steps the same episodes as the
    in-process vector env: same returns, lengths and episode order."""
    base = rollout(HOPPER, LinearAgent(), 5, seed=11, num_envs=3, max_steps=40, progress=False)
    other = rollout(HOPPER, LinearAgent(), 5, seed=11, num_envs=3, max_steps=40, progress=False, env_processes=True)
    assert [(r["episode"], r["return"], r["length"]) for r in base] == \
        [(r["episode"], r["return"], r["length"]) for r in other]


def test_env_workers_start_from_a_forkserver(monkeypatch):
    """Workers are never forked from the (possibly CUDA-initialised) process, and render nothing."""
    from gymnasium.vector import AsyncVectorEnv

    from frozen_dt.eval.rollout import make_vector_env

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    envs = make_vector_env(HOPPER, 2, processes=True)
    try:
        assert isinstance(envs, AsyncVectorEnv)
        assert {type(p).__name__ for p in envs.processes} == {"ForkServerProcess"}
        assert os.environ["MUJOCO_GL"] == "disable"
    finally:
        envs.close()


def test_every_seed_and_target_in_one_vector_env_equals_each_alone(monkeypatch):
    """Two policies x two targets share one vector env (created once); each one's episodes are those it runs
    alone, bit for bit: same seeds, and a row's action does not depend on the rows beside it."""
    from frozen_dt.eval import rollout as rollout_module
    from frozen_dt.eval.rollout import evaluate_agents

    models = [small_dt(0), small_dt(1)]
    made = []
    make_vector_env = rollout_module.make_vector_env
    monkeypatch.setattr(rollout_module, "make_vector_env", lambda *a, **k: made.append(a[1]) or make_vector_env(*a, **k))
    together = evaluate_agents(HOPPER, [lambda t, m=m: dt_agent(m, t) for m in models], targets=(3600.0, 1800.0),
                               episodes=3, num_envs=5, max_steps=25, progress=False, keep_episodes=True)
    assert made == [5]  # one vector env for 2 seeds x 2 targets x 3 episodes
    for model, result in zip(models, together):
        for target in (3600.0, 1800.0):
            alone = rollout(HOPPER, dt_agent(model, target), 3, seed=EVAL_SEED, num_envs=2, max_steps=25,
                            progress=False)
            label = f"{target:g}"
            assert [(e["episode"], e["return"], e["length"]) for e in result[f"episodes@{label}"]] == \
                [(r["episode"], r["return"], r["length"]) for r in alone]
    assert together[0]["score@3600"] != together[1]["score@3600"]


def test_wide_blocks_keep_a_rows_action_independent_of_its_neighbours():
    model = small_dt()

    def wide(target=3600.0):
        agent = dt_agent(model, target)
        agent.block = 64
        return agent

    one = rollout(HOPPER, wide(), 4, seed=1, num_envs=1, max_steps=30, progress=False)
    four = rollout(HOPPER, wide(), 4, seed=1, num_envs=4, max_steps=30, progress=False)
    assert [r["return"] for r in one] == [r["return"] for r in four]
    result = evaluate_agent(HOPPER, lambda t: dt_agent(model, t), targets=(3600.0,), episodes=4, num_envs=4,
                            max_steps=30, progress=False, block=64, seed=1)
    assert result["return@3600"] == pytest.approx(np.mean([r["return"] for r in four]), rel=1e-12)
