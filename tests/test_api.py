"""The Python API, called as a user would: ``import frozen_dt`` and its functions, including from a fresh
interpreter. What the API trains equals what the CLI trains with the same settings, and a loaded policy acting one
step at a time gives the actions the evaluation harness recorded for the same episode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import frozen_dt
from frozen_dt.envs.registry import get_task
from frozen_dt.eval.rollout import rollout
from frozen_dt.training.trainer import load_checkpoint
from test_cli import REPO, run, write_d4rl_hdf5

TASK = "hopper-medium-v2"
DT_SMALL = dict(batch_size=8, embed_dim=16, dt_layers=1, dt_heads=2, context=4, warmup_steps=1, dropout=0.0)


def flags(settings: dict) -> list[str]:
    return [x for k, v in settings.items() for x in (f"--{k.replace('_', '-')}", str(v))]


@pytest.fixture
def hopper(data):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    return data


def recorded_episode(task_name: str, agent, max_steps: int) -> dict:
    """Episode 0 of the harness (reset seed 10000) for ``agent``, recorded."""
    return rollout(get_task(task_name), agent, 1, num_envs=1, record=True, max_steps=max_steps, progress=False)[0]


def test_train_is_the_cli_train(hopper, capsys, tmp_path):
    settings = dict(steps=4, seed=3, eval_episodes=0, lr=1e-3, **DT_SMALL)
    trained = frozen_dt.train(TASK, algo="dt", run_dir=str(tmp_path / "api"), **settings)
    assert isinstance(trained, frozen_dt.TrainedRun) and trained.run_dir == tmp_path / "api" and trained.score is None
    code, _, err = run(capsys, "train", TASK, "--algo", "dt", "--run-dir", str(tmp_path / "cli"), *flags(settings))
    assert code == 0, err
    a = load_checkpoint(tmp_path / "api" / "checkpoints" / "last.pt")["algorithm"]["model"]
    b = load_checkpoint(tmp_path / "cli" / "checkpoints" / "last.pt")["algorithm"]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_settings_of_another_algorithm_are_refused_by_name(hopper):
    with pytest.raises(frozen_dt.FrozenDTError, match="expectile is a setting of .*iql.*, not of dt"):
        frozen_dt.train(TASK, algo="dt", steps=1, expectile=0.9)
    with pytest.raises(frozen_dt.FrozenDTError, match="episodes_total: not a setting of eval"):
        frozen_dt.evaluate([hopper], episodes_total=3)


@pytest.mark.parametrize("algo", ["dt", "bc"])
def test_policy_acts_as_the_harness_keeping_the_window_and_resetting_per_episode(algo, hopper, tmp_path):
    settings = DT_SMALL if algo == "dt" else dict(batch_size=8, hidden_dim=16)
    trained = frozen_dt.train(TASK, algo=algo, steps=3, eval_episodes=0, run_dir=str(tmp_path / algo), **settings)
    policy = frozen_dt.load_policy(trained.run_dir)
    with pytest.raises(frozen_dt.FrozenDTError, match="reset"):
        policy.act(np.zeros(11))
    from frozen_dt.eval.runs import load_run

    loaded = load_run(trained.run_dir)
    episode = recorded_episode(TASK, loaded.agent(policy.target, "fp32"), max_steps=12)
    assert len(episode["actions"]) == 12  # longer than the DT's context of 4: the window slides
    for _ in range(2):  # the second episode starts afresh
        policy.reset()
        reward = None
        for obs, action, r in zip(episode["observations"], episode["actions"], episode["rewards"]):
            np.testing.assert_allclose(np.clip(policy.act(obs, reward), -1, 1), action, rtol=0, atol=1e-6)
            reward = r
    if algo == "dt":
        policy.reset()
        policy.act(episode["observations"][0])
        with pytest.raises(frozen_dt.FrozenDTError, match="previous step's reward"):
            policy.act(episode["observations"][1])


def test_evaluate_leaderboard_and_datasets(hopper, tmp_path):
    trained = frozen_dt.train(TASK, algo="bc", steps=2, eval_episodes=0, batch_size=8, run_dir=str(tmp_path / "bc"))
    records = frozen_dt.evaluate([trained.run_dir], episodes=2, num_envs=2, max_steps=5)
    assert len(records) == 1 and (trained.run_dir / "eval-last.json").is_file()
    rows = frozen_dt.leaderboard([str(trained.run_dir)], out=tmp_path / "lb" / "lb.csv")
    assert [r["algo"] for r in rows] == ["bc"] and (tmp_path / "lb" / "lb.md").is_file()
    data = frozen_dt.load_dataset(TASK)
    assert data.n_transitions == 30 and data.n_episodes == 3
    window = frozen_dt.SequenceView(data, 4).sample(2, np.random.default_rng(0))
    assert window["observations"].shape == (2, 4, 11)
    assert frozen_dt.TransitionView(data).sample(5, np.random.default_rng(0))["actions"].shape == (5, 3)


def test_fresh_interpreter_uses_the_api_as_documented(hopper, tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np, frozen_dt
        assert "torch" not in __import__("sys").modules  # import frozen_dt stays light
        run = frozen_dt.train("{TASK}", algo="bc", steps=2, eval_episodes=0, batch_size=8, run_dir=r"{tmp_path / 'r'}")
        policy = frozen_dt.load_policy(run.run_dir)
        policy.reset()
        action = policy.act(np.zeros(11, np.float32))
        print("ACTION", action.shape, policy.algo, policy.task.name)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FROZEN_DT_DATA": str(hopper)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ACTION (3,) bc hopper-medium-v2" in done.stdout
    assert REPO.exists()
