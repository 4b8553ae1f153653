"""OGBench "play" datasets made here with the plan oracles shipped inside the ``ogbench`` package, following
OGBench's own recipe: 1001-step episodes, action noise 0.1 with smoothing 0.5, a new random subtask whenever the
current one completes, 10 % extra validation episodes, scene episodes retried when the cube leaves the visible
area. Written in OGBench's npz layout and file names (``scene-play-v0.npz`` + ``scene-play-v0-val.npz``), so
``ogbench.make_env_and_datasets(name, dataset_path=...)`` loads them for the goal-conditioned and single-task
variants alike.

Two extra keys ride along (OGBench's loader ignores them): ``subtask_completed`` (per step, the oracle finished
its subtask) and ``frozen_dt_metadata`` (a JSON string: how the file was made).
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from frozen_dt.envs.registry import Task, import_ogbench
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_path

EPISODE_STEPS = 1001
NOISE, NOISE_SMOOTHING = 0.1, 0.5
METADATA_KEY = "frozen_dt_metadata"


def _oracles(env, dataset: str) -> dict:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    kw = dict(env=env, noise=NOISE, noise_smoothing=NOISE_SMOOTHING)
    if dataset.startswith("cube"):
        return {"cube": CubePlanOracle(**kw)}
    return {"cube": CubePlanOracle(**kw), "button": ButtonPlanOracle(**kw), "drawer": DrawerPlanOracle(**kw),
            "window": WindowPlanOracle(**kw)}


def _p_stack(dataset: str) -> float:
    return float(np.random.uniform(0.0, 0.25)) if "double" in dataset else 0.5


def _healthy_scene_episode(qpos: np.ndarray) -> bool:
    """OGBench's check: the cube stays visible unless it is in the drawer."""
    xyz = qpos[:, 14:17]
    too_far_right = (xyz[:, 1] >= 0.29).any()
    off_left = ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any()
    return not (too_far_right or off_left)


def collect_episode(env, oracles: dict, dataset: str) -> dict:
    """One play episode: the oracle of the current subtask acts; a new subtask starts whenever one completes."""
    ob, info = env.reset()
    p_stack = _p_stack(dataset)
    agent = oracles[info["privileged/target_task"]]
    agent.reset(ob, info)
    has_buttons = hasattr(env.unwrapped, "_cur_button_states")
    steps = defaultdict(list)
    done = False
    while not done:
        action = np.clip(np.asarray(agent.select_action(ob, info)), -1, 1)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        completed = bool(agent.done)
        if completed:
            agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
            agent = oracles[agent_info["privileged/target_task"]]
            agent.reset(agent_ob, agent_info)
        steps["observations"].append(ob)
        steps["actions"].append(action)
        steps["terminals"].append(done)
        steps["qpos"].append(info["prev_qpos"])
        steps["qvel"].append(info["prev_qvel"])
        if has_buttons:
            steps["button_states"].append(info["prev_button_states"])
        steps["subtask_completed"].append(completed)
        ob = next_ob
    return steps


def _as_arrays(steps: dict) -> dict:
    dtypes = {"terminals": bool, "subtask_completed": bool, "button_states": np.int64}
    return {k: np.asarray(v, dtype=dtypes.get(k, np.float32)) for k, v in steps.items()}


def generate_ogbench(task: Task, *, episodes: int = 1000, seed: int = 0, out: Path | None = None,
                     progress: bool = True) -> Path:
    """Generate ``task``'s OGBench play dataset (train file + validation file with episodes // 10 more)."""
    import gymnasium as gym
    from frozen_dt.progress import progress_bar

    from frozen_dt.paths import data_file

    if episodes <= 0:
        raise FrozenDTError("--episodes must be positive")
    import_ogbench()
    dataset = task.ogbench_dataset
    out = Path(out) if out else data_file(f"{dataset}.npz")
    env_id = f"{dataset.rsplit('-play', 1)[0]}-v0"
    env = gym.make(env_id, terminate_at_goal=False, mode="data_collection", max_episode_steps=EPISODE_STEPS)
    np.random.seed(seed)  # the oracles draw their noise from numpy's global generator, as in OGBench
    env.reset(seed=seed)
    oracles = _oracles(env, dataset)
    n_val = max(episodes // 10, 1)
    started = time.time()
    splits = {"train": defaultdict(list), "val": defaultdict(list)}
    retries = 0
    try:
        for ep in progress_bar(range(episodes + n_val), desc=f"{dataset} oracle episodes", enabled=progress):
            while True:
                steps = collect_episode(env, oracles, dataset)
                if "scene" not in dataset or _healthy_scene_episode(np.asarray(steps["qpos"])):
                    break
                retries += 1
            split = splits["train" if ep < episodes else "val"]
            for k, v in steps.items():
                split[k].extend(v)
    finally:
        env.close()
    metadata = {
        "generator": "frozen-dt data generate",
        "task": task.name,
        "dataset": dataset,
        "env_id": env_id,
        "oracle": "ogbench plan oracles",
        "noise": NOISE,
        "noise_smoothing": NOISE_SMOOTHING,
        "episode_steps": EPISODE_STEPS,
        "episodes": {"train": episodes, "val": n_val},
        "unhealthy_retries": retries,
        "seed": seed,
        "seconds": round(time.time() - started, 1),
        "command": " ".join(sys.argv),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    from frozen_dt.provenance import package_versions

    metadata["versions"] = package_versions()
    val_out = out.with_name(out.stem + "-val.npz")
    for path, split in ((out, splits["train"]), (val_out, splits["val"])):
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **_as_arrays(split), **{METADATA_KEY: np.asarray(json.dumps(metadata))})
    return out
