"""Task registry: names, env mapping, references, normalization, and packaging of the namespaces."""

import importlib.util
from importlib import metadata

import numpy as np
import pytest

from frozen_dt.envs.registry import TASKS, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.eval.scores import normalized_score

D4RL_REFS = {  # d4rl/infos.py
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


def test_all_d4rl_and_ogbench_names_registered():
    for env in ("halfcheetah", "hopper", "walker2d", "ant"):
        for level in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            task = get_task(f"{env}-{level}-v2")
            assert task.max_episode_steps == 1000 and task.score_type == "normalized"
            assert (task.ref_min, task.ref_max) == D4RL_REFS[env]
    for ds in ("scene-play-v0", "cube-double-play-v0"):
        assert get_task(ds).goal_conditioned and get_task(ds).eval_task_ids == (1, 2, 3, 4, 5)
        for i in range(1, 6):
            t = get_task(ds.replace("-v0", f"-singletask-task{i}-v0"))
            assert t.score_type == "success" and not t.goal_conditioned and t.eval_task_ids == (i,)
    assert len(TASKS) == 20 + 12


def test_env_ids_versions_and_minari_ids():
    t = get_task("walker2d-medium-v2")
    assert t.env_id() == "Walker2d-v5" and t.env_id("v4") == "Walker2d-v4"
    assert t.minari_id == "mujoco/walker2d/medium-v0"
    assert get_task("hopper-expert-v2").minari_id == "mujoco/hopper/expert-v0"
    assert get_task("hopper-medium-replay-v2").minari_id is None
    assert t.rtg_targets == (5000.0, 2500.0) and t.rtg_scale == 1000.0
    assert get_task("hopper-medium-v2").rtg_targets == (3600.0, 1800.0)
    assert get_task("halfcheetah-medium-v2").rtg_targets == (12000.0, 6000.0)
    assert get_task("scene-play-singletask-task3-v0").env_id() == "scene-singletask-task3-v0"
    assert get_task("cube-double-play-v0").env_id() == "cube-double-v0"
    assert "walker2d_medium-v2.hdf5" in t.dataset_files
    assert t.download_url.endswith("/gym_mujoco_v2/walker2d_medium-v2.hdf5")
    with pytest.raises(FrozenDTError, match="env version"):
        t.env_id("v3")


def test_unknown_task_suggests_close_names():
    with pytest.raises(FrozenDTError, match="walker2d-medium-v2"):
        get_task("walker2d-meduim-v2")


def test_normalization_against_d4rl_references():
    for env, (lo, hi) in D4RL_REFS.items():
        task = get_task(f"{env}-medium-v2")
        assert normalized_score(task, lo) == pytest.approx(0.0)
        assert normalized_score(task, hi) == pytest.approx(100.0)
    np.testing.assert_allclose(normalized_score(get_task("hopper-medium-v2"), [1607.0]),
                               [100 * (1607.0 + 20.272305) / (3234.3 + 20.272305)])
    with pytest.raises(ValueError):
        normalized_score(get_task("scene-play-v0"), 1.0)


@pytest.mark.parametrize("name,version", [("hopper-medium-v2", "v5"), ("walker2d-medium-v2", "v4"),
                                          ("ant-medium-v2", "v4"), ("ant-medium-v2", "v5"),
                                          ("halfcheetah-medium-v2", "v5"), ("scene-play-singletask-task1-v0", None),
                                          ("cube-double-play-v0", None)])
def test_registry_dims_match_real_envs(name, version):
    task = get_task(name)
    env = task.make_env(version)
    try:
        assert env.observation_space.shape == (task.obs_dim(version),)
        assert env.action_space.shape == (task.act_dim,)
        assert env.spec.max_episode_steps == task.max_episode_steps
    finally:
        env.close()


def test_generic_namespaces_are_not_top_level_packages():
    assert importlib.util.find_spec("frozen_dt.envs") is not None
    assert importlib.util.find_spec("frozen_dt.baselines") is not None
    assert importlib.util.find_spec("frozen_dt.eval") is not None
    dist = metadata.distribution("frozen-dt")
    top_level = (dist.read_text("top_level.txt") or "").split()
    for generic in ("envs", "eval", "baselines"):
        assert generic not in top_level
