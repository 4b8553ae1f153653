"""Dataset generation from behaviour policies: exact actor, determinism, vector width independence, metadata,
and the shipped policy manifests."""

import json
import os

import numpy as np
import pytest

from frozen_dt.data.readers import read_file
from frozen_dt.envs.actors import ActorPolicy
from frozen_dt.envs.behavior import POLICY_DIR, read_manifest, select_levels, write_manifest
from frozen_dt.envs.generate import generate_locomotion, level_checkpoints, rollout
from frozen_dt.envs.registry import get_task
from frozen_dt.errors import FrozenDTError


def tiny_actor_state(obs_dim=11, act_dim=3, hidden=8, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    shapes = {"latent_pi.0.weight": (hidden, obs_dim), "latent_pi.0.bias": (hidden,),
              "latent_pi.2.weight": (hidden, hidden), "latent_pi.2.bias": (hidden,),
              "mu.weight": (act_dim, hidden), "mu.bias": (act_dim,),
              "log_std.weight": (act_dim, hidden), "log_std.bias": (act_dim,)}
    return {k: torch.randn(*s, generator=g) * 0.5 for k, s in shapes.items()}


def make_policy_root(tmp_path, env="hopper", returns=(1.0, 20.0, 40.0, 60.0)):
    """A policy root with one checkpoint per return (steps 0, 10k, ...), like a SAC run's manifest."""
    from safetensors.torch import save_file

    root = tmp_path / "policies"
    (root / env).mkdir(parents=True)
    checkpoints = []
    for i, normalized in enumerate(returns):
        name = f"{env}-sac-seed0-step{i * 10000:07d}.safetensors"
        save_file(tiny_actor_state(seed=i), str(root / env / name))
        checkpoints.append({"file": name, "env_id": "Hopper-v5", "steps": i * 10000, "return_mean": 0.0,
                            "return_std": 0.0, "normalized_return": normalized, "eval_episodes": 1, "seed": 0})
    write_manifest(env, {"env": env, "checkpoints": checkpoints, "levels": select_levels(checkpoints, env)}, root)
    return root


def test_actor_policy_matches_stable_baselines3(tmp_path):
    from stable_baselines3 import SAC

    from frozen_dt.envs.behavior import save_actor

    task = get_task("hopper-medium-v2")
    model = SAC("MlpPolicy", task.make_env(), seed=0, device="cpu")
    save_actor(model, tmp_path / "actor.safetensors")
    policy = ActorPolicy.load(tmp_path / "actor.safetensors")
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    expected = np.stack([model.predict(o, deterministic=True)[0] for o in obs])
    np.testing.assert_allclose(policy.act(obs, None), expected, atol=1e-5)
    assert (tmp_path / "actor.safetensors").stat().st_size < 2_000_000


BLAS_THREADS = int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


@pytest.mark.xfail(BLAS_THREADS == 1, strict=False,
                   reason="single-threaded OpenBLAS gives a row 2e-5 apart by its place in the block (README, Rollouts)")
def test_batched_actions_equal_single_row_actions():
    from frozen_dt.eval.rollout import in_blocks

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(37, 256)).astype(np.float32), rng.normal(size=(256, 256)).astype(np.float32)

    def blocked_matmul(a):
        return in_blocks(lambda b: b @ w.T, a)

    batched = blocked_matmul(x)
    for i in (0, 5, 17, 36):
        np.testing.assert_array_equal(batched[i], blocked_matmul(x[i : i + 1])[0])
        np.testing.assert_array_equal(batched[i], blocked_matmul(x[::-1])[36 - i])
    np.testing.assert_allclose(batched, x @ w.T, rtol=1e-4, atol=1e-3)


def test_levels_are_the_checkpoints_closest_to_d4rls_dataset_means():
    """hopper: D4RL's medium data averages 44.3 normalized, its expert data 108.5."""
    ck = [{"file": f"f{i}", "steps": i * 10, "normalized_return": r} for i, r in enumerate([1, 10, 50, 43, 30, 106])]
    levels = select_levels(ck, "hopper")
    assert levels["random"] == "f0" and levels["medium"] == "f3"  # the closest to 44.3, not the first past it
    assert levels["medium-replay"] == ["f0", "f1", "f2"] and levels["expert"] == "f5"
    assert levels["medium-expert"] == ["f3", "f5"]
    ck[5]["normalized_return"] = 102.0  # 6.5 points short of D4RL's expert data: no expert level yet
    assert "expert" not in select_levels(ck, "hopper") and "medium-expert" not in select_levels(ck, "hopper")
    walker = select_levels(ck, "walker2d")  # D4RL walker2d-medium averages 62.1
    assert walker["medium"] == "f2"


def test_medium_replay_starts_where_its_data_will_average_closest_to_d4rls():
    """D4RL hopper-medium-replay averages 15.0 normalized over its episodes. Each checkpoint before medium holds the
    steps until the next one, i.e. steps / its episode length episodes: short failing episodes count many times."""
    from frozen_dt.envs.behavior import replay_mean

    ck = [{"file": f"f{i}", "steps": i * 10, "normalized_return": r, "length_mean": n}
          for i, (r, n) in enumerate([(1, 10), (5, 10), (20, 100), (30, 100), (45, 500)])]
    assert replay_mean(ck[:4], 40) == pytest.approx((1 + 5 + 0.1 * 20 + 0.1 * 30) / 2.2)  # 5.0: from f0
    assert replay_mean(ck[1:4], 40) == pytest.approx((5 + 2 + 3) / 1.2)  # 8.3
    assert replay_mean(ck[2:4], 40) == pytest.approx(25.0)
    levels = select_levels(ck, "hopper")
    assert levels["medium"] == "f4" and levels["medium-replay"] == ["f1", "f2", "f3"]  # 8.3: closer to 15.0 than 5 or 25


@pytest.mark.parametrize("widths", [(1, 3), (2, 5)])
def test_vectorized_rollouts_equal_single_env_rollouts(tmp_path, widths):
    root = make_policy_root(tmp_path)
    task = get_task("hopper-medium-v2")
    policy = ActorPolicy.load(root / "hopper" / level_checkpoints("hopper", "medium", root)[0]["file"])
    a = rollout(task, policy, [0, 1, 2, 3], seed=7, num_envs=widths[0], progress=False)
    b = rollout(task, policy, [0, 1, 2, 3], seed=7, num_envs=widths[1], progress=False)
    for ea, eb in zip(a, b):
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key])
    assert len({float(e["rewards"].sum()) for e in a}) > 1  # different seeds give different episodes


def test_generation_is_deterministic_and_records_metadata(tmp_path):
    root = make_policy_root(tmp_path)
    task = get_task("hopper-medium-v2")
    out1 = generate_locomotion(task, episodes=3, seed=1, out=tmp_path / "a.hdf5", num_envs=2, policy_root=root,
                               progress=False)
    out2 = generate_locomotion(task, episodes=3, seed=1, out=tmp_path / "b.hdf5", num_envs=3, policy_root=root,
                               progress=False)
    a, b = read_file(out1, task), read_file(out2, task)
    np.testing.assert_array_equal(a.observations, b.observations)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    assert a.n_episodes == 3
    meta = a.source["generated"]
    assert a.source["kind"] == "generated" and meta["task"] == "hopper-medium-v2"
    assert meta["env_id"] == "Hopper-v5" and meta["seed"] == 1 and meta["level"] == "medium"
    assert meta["policies"][0]["file"].endswith("step0020000.safetensors")
    assert "gymnasium" in meta["versions"] and "command" in meta
    c = read_file(generate_locomotion(task, episodes=3, seed=2, out=tmp_path / "c.hdf5", policy_root=root,
                                      progress=False), task)
    assert not np.array_equal(c.rewards[:10], a.rewards[:10])


def test_generation_by_transitions_and_medium_replay(tmp_path):
    root = make_policy_root(tmp_path)
    task = get_task("hopper-medium-v2")
    ds = read_file(generate_locomotion(task, transitions=250, out=tmp_path / "m.hdf5", policy_root=root,
                                       progress=False), task)
    assert ds.n_transitions == 250
    replay = get_task("hopper-medium-replay-v2")
    ds = read_file(generate_locomotion(replay, transitions=300, out=tmp_path / "r.hdf5", policy_root=root,
                                       progress=False), replay)
    assert ds.n_transitions == 300
    assert [p["steps"] for p in ds.source["generated"]["policies"]] == [0, 10000]


def test_missing_level_is_a_clear_error(tmp_path):
    root = make_policy_root(tmp_path, returns=(1.0, 5.0))
    with pytest.raises(FrozenDTError, match="no shipped behaviour policy for hopper-medium"):
        level_checkpoints("hopper", "medium", root)


def test_shipped_policy_manifests_match_their_files():
    manifests = sorted(POLICY_DIR.glob("*/manifest.json"))
    for path in manifests:
        env = path.parent.name
        manifest = read_manifest(env)
        files = {p.name for p in path.parent.glob("*.safetensors")}
        listed = {c["file"] for c in manifest["checkpoints"]}
        assert files == listed, f"{env}: files and manifest differ"
        for c in manifest["checkpoints"]:
            assert (path.parent / c["file"]).stat().st_size <= 2_000_000
            assert c["env_id"].startswith(get_task(f"{env}-medium-v2").gym_name)
            policy = ActorPolicy.load(path.parent / c["file"])
            assert policy.mu[0].shape[0] == get_task(f"{env}-medium-v2").act_dim
        assert json.loads(path.read_text())["env"] == env


def test_cli_train_behavior_then_generate(tmp_path, monkeypatch, capsys):
    """A few SAC steps through the CLI write actor checkpoints and a consistent manifest; generate uses them."""
    from frozen_dt.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FROZEN_DT_DATA", str(tmp_path / "data"))
    pol = tmp_path / "pol"
    assert main(["data", "train-behavior", "hopper", "--steps", "300", "--save-every", "150", "--eval-episodes", "1",
                 "--learning-starts", "100", "--policy-dir", str(pol)]) == 0
    manifest = read_manifest("hopper", pol)
    assert [c["steps"] for c in manifest["checkpoints"]] == [0, 150, 300]
    assert {p.name for p in (pol / "hopper").glob("*.safetensors")} == {c["file"] for c in manifest["checkpoints"]}
    assert manifest["levels"]["random"].endswith("step0000000.safetensors")
    # No checkpoint reached a third of expert after 300 steps: medium is not available, and says so.
    assert main(["data", "generate", "hopper-medium-v2", "--episodes", "2", "--policy-dir", str(pol)]) == 2
    assert "no shipped behaviour policy for hopper-medium" in capsys.readouterr().err
    assert main(["data", "generate", "hopper-random-v2", "--episodes", "2", "--policy-dir", str(pol)]) == 0
    out = tmp_path / "data" / "hopper-random-v2.hdf5"
    ds = read_file(out, get_task("hopper-random-v2"))
    assert ds.n_episodes == 2 and ds.source["kind"] == "generated"
    assert main(["data", "generate", "hopper-random-v2", "--episodes", "0"]) == 2
    # Resumed without its replay buffer (it is never committed), the run refills it before training on.
    import frozen_dt.envs.behavior as behavior

    refills = []
    real_refill = behavior.refill_replay_buffer
    monkeypatch.setattr(behavior, "refill_replay_buffer", lambda model, n: refills.append(n) or real_refill(model, n))
    (tmp_path / "runs" / "behavior" / "hopper" / "replay_buffer.pkl").unlink()
    assert main(["data", "train-behavior", "hopper", "--resume", "--steps", "450", "--save-every", "150",
                 "--eval-episodes", "1", "--learning-starts", "100", "--policy-dir", str(pol)]) == 0
    assert refills == [100]
    assert [c["steps"] for c in read_manifest("hopper", pol)["checkpoints"]] == [0, 150, 300, 450]


def test_a_behaviour_run_stopped_after_a_checkpoint_keeps_that_checkpoints_model_and_replay_buffer(tmp_path,
                                                                                                      monkeypatch):
    """Interrupted while evaluating its step-300 checkpoint, a run leaves the SB3 model and replay buffer of its
    step-150 checkpoint in place, whole (no temporary files), so --resume continues with the buffer it had."""
    from stable_baselines3.common.save_util import load_from_pkl

    import frozen_dt.envs.behavior as behavior

    real_evaluate = behavior.evaluate_checkpoint

    def evaluate(env, file, **kw):
        if file.endswith("step0000300.safetensors"):
            raise KeyboardInterrupt
        return real_evaluate(env, file, **kw)

    monkeypatch.setattr(behavior, "evaluate_checkpoint", evaluate)
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        behavior.train_behavior("hopper", steps=450, save_every=150, eval_episodes=1, learning_starts=100,
                                policy_root=tmp_path / "pol", work_dir=work, progress=False)
    assert sorted(p.name for p in work.iterdir()) == ["replay_buffer.pkl", "sac_model.zip"]
    assert load_from_pkl(work / "replay_buffer.pkl").pos == 149  # the 150th step is stored after its callback
    manifest = read_manifest("hopper", tmp_path / "pol")
    assert [c["steps"] for c in manifest["checkpoints"]] == [0, 150]
    assert manifest["training_seconds"] > 0  # the time up to the last checkpoint is on record
    import zipfile

    with zipfile.ZipFile(work / "sac_model.zip") as saved:
        assert json.loads(saved.read("data"))["num_timesteps"] == 150


def test_harness_reproduces_a_shipped_policys_manifest_return():
    """A shipped checkpoint evaluated through the harness on fresh episode seeds: the manifest's recorded return
    lies inside the 95 % bootstrap CI of the new episodes."""
    from frozen_dt.envs.actors import ActorAgent
    from frozen_dt.envs.behavior import evaluate_checkpoint
    from frozen_dt.eval.rollout import rollout as vector_rollout
    from frozen_dt.eval.stats import stratified_bootstrap_ci

    manifest = read_manifest("hopper")
    record = next(c for c in manifest["checkpoints"] if c["file"] == manifest["levels"]["medium"])
    task = get_task("hopper-medium-v2")
    agent = ActorAgent.for_task(task, ActorPolicy.load(POLICY_DIR / "hopper" / record["file"]), seed=123)
    returns = [r["return"] for r in vector_rollout(task, agent, 30, seed=123, num_envs=16, progress=False)]
    low, high = stratified_bootstrap_ci(returns, reps=10_000)
    assert low <= record["return_mean"] <= high, (record["return_mean"], low, high)
    again = evaluate_checkpoint("hopper", record["file"], episodes=30, seed=123)
    assert again["return_mean"] == pytest.approx(np.mean(returns))


def test_refilled_replay_buffer_holds_the_policys_own_transitions_in_sb3s_action_scale():
    """A resumed SAC model without its replay buffer: the refill stores its own stochastic policy's steps as SB3's
    collection does (actions scaled to [-1, 1], the terminal observation at a time limit, timeouts marked).
    Pendulum's reward is a known function of the observation and the env action, so each stored row is checked."""
    import gymnasium as gym
    from stable_baselines3 import SAC

    from frozen_dt.envs.behavior import refill_replay_buffer

    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", learning_starts=10, buffer_size=1000)
    model.learn(50)
    model.replay_buffer.reset()
    steps_before = model.num_timesteps
    refill_replay_buffer(model, 250)
    buffer = model.replay_buffer
    assert buffer.size() == 250 and model.num_timesteps == steps_before
    obs, next_obs = buffer.observations[:250, 0], buffer.next_observations[:250, 0]
    actions, rewards = buffer.actions[:250, 0], buffer.rewards[:250, 0]
    assert np.abs(actions).max() <= 1.0 and actions.std() > 0.05  # scaled, and not one repeated action
    u = 2.0 * actions[:, 0]  # Pendulum's action space is [-2, 2]
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    expected = -(theta**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2)
    np.testing.assert_allclose(rewards, expected, rtol=1e-4, atol=1e-4)
    boundary = np.flatnonzero(buffer.timeouts[:250, 0])
    assert boundary.size == 1  # a 200-step time limit inside 250 steps (the refill starts a fresh episode)
    inside = np.setdiff1d(np.arange(249), boundary)
    np.testing.assert_array_equal(next_obs[inside], obs[inside + 1])
    b = boundary[0]
    assert not np.array_equal(next_obs[b], obs[b + 1])  # the episode's last observation, not the reset's
    np.testing.assert_allclose(np.hypot(next_obs[b, 0], next_obs[b, 1]), 1.0, rtol=1e-5)
