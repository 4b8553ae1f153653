"""Sequential evaluation rollouts of a policy in a task's environment (the trainer's periodic evaluation).

A policy follows :class:`frozen_dt.trainer.Policy`: ``reset(target_return)``, then ``act(observation)`` and
``record(reward)`` each step. Episode ``i`` is seeded ``seed + i`` (the same episodes for every target and every
evaluation). Scores: D4RL-normalized mean return for locomotion, success rate x 100 (``info["success"]`` at the
episode's end) for OGBench.
"""

from __future__ import annotations

import numpy as np

from frozen_dt.envs.registry import Task
from frozen_dt.eval.scores import normalized_score

EVAL_SEED = 10_000


def run_episode(env, policy, *, seed: int, target_return: float, max_steps: int | None = None) -> dict:
    observation, info = env.reset(seed=seed)
    policy.reset(target_return)
    total, length = 0.0, 0
    low, high = env.action_space.low, env.action_space.high
    while True:
        action = np.clip(policy.act(observation), low, high)
        observation, reward, terminated, truncated, info = env.step(action)
        policy.record(float(reward))
        total += float(reward)
        length += 1
        if terminated or truncated or (max_steps is not None and length >= max_steps):
            return {"return": total, "length": length, "success": bool(info.get("success", False))}


def episode_scores(task: Task, episodes: list[dict]) -> np.ndarray:
    if task.score_type == "success":
        return 100.0 * np.array([e["success"] for e in episodes], dtype=np.float64)
    return normalized_score(task, [e["return"] for e in episodes])


def evaluate_policy(task: Task, policy, *, targets: tuple, episodes: int, env_version: str | None = None,
                    seed: int = EVAL_SEED, max_steps: int | None = None) -> dict:
    """``score`` (the first target's mean score) and ``return@T``/``score@T``/``length@T`` for each target T."""
    env = task.make_env(env_version)
    results = {}
    try:
        for target in targets:
            runs = [run_episode(env, policy, seed=seed + i, target_return=target, max_steps=max_steps)
                    for i in range(episodes)]
            label = f"{target:g}"
            results[f"score@{label}"] = float(episode_scores(task, runs).mean())
            results[f"return@{label}"] = float(np.mean([r["return"] for r in runs]))
            results[f"length@{label}"] = float(np.mean([r["length"] for r in runs]))
    finally:
        env.close()
    results["score"] = results[f"score@{targets[0]:g}"]
    return results
