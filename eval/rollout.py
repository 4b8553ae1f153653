"""Vectorized rollouts: exactly N episodes over a gymnasium vector env, with batched policy inference.

One engine serves evaluation (every algorithm), dataset generation and the behaviour-policy evaluations.

An *agent* is batched over env slots (:class:`Agent`): ``start(slot, episode, goal)`` when an episode begins in a slot
(``goal``: the goal observation the env's reset returned, for goal-conditioned OGBench tasks; else None, also for
single-task OGBench envs, which report a goal too),
``act(observations, slots)`` for the slots that are running, ``observe(slots, rewards)`` after each step. DT-style
agents keep one context per slot; stateless agents ignore ``start``/``observe``.

Exactness: episode ``i`` is always reset with seed ``seed + i``, whatever the vector width; the vector env's
autoreset is disabled, so a slot is reset only when it takes a new episode and no autoreset step reaches the
statistics; when the queue is empty, finished slots idle (stepped with zero actions, their results discarded)
until the last episode ends. Agents run inference in fixed-shape blocks (:data:`BLOCK` rows), so a row's action
does not depend on how many envs were batched with it and vectorized returns equal single-env returns bit for bit.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from frozen_dt.envs.registry import Task
from frozen_dt.errors import FrozenDTError

EVAL_SEED = 10_000
BLOCK = 16  # inference always runs on blocks of this many rows
RECORD_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


class Agent(Protocol):
    def start(self, slot: int, episode: int, goal: np.ndarray | None) -> None: ...  # goal: goal-conditioned tasks
    def act(self, observations: np.ndarray, slots: np.ndarray) -> np.ndarray: ...  # env-space actions
    def observe(self, slots: np.ndarray, rewards: np.ndarray) -> None: ...


def in_blocks(fn, *arrays, block: int = BLOCK):
    """``fn`` applied to zero-padded blocks of ``block`` rows of ``arrays`` (first axis), results concatenated.

    Every call has the same shape whatever the number of rows, so a row's result does not depend on how many rows
    came with it (numpy and torch alike).
    """
    n = len(arrays[0])
    rows = -(-n // block) * block
    padded = []
    for a in arrays:
        p = a.new_zeros((rows, *a.shape[1:])) if hasattr(a, "new_zeros") else np.zeros((rows, *a.shape[1:]), a.dtype)
        p[:n] = a
        padded.append(p)
    out = [fn(*(p[i : i + block] for p in padded)) for i in range(0, rows, block)]
    if isinstance(out[0], np.ndarray):
        return np.concatenate(out)[:n]
    import torch

    return torch.cat(out)[:n]


def make_vector_env(task: Task, num_envs: int, env_version: str | None = None):
    """A synchronous gymnasium vector env of the task's env, autoreset disabled (the engine resets slots itself)."""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    def factory():
        return task.make_env(env_version)

    return SyncVectorEnv([factory] * num_envs, autoreset_mode=AutoresetMode.DISABLED)


def rollout(task: Task, agent: Agent, episodes, *, seed: int = EVAL_SEED, num_envs: int = 16,
            env_version: str | None = None, record: bool = False, max_steps: int | None = None,
            progress: bool = True, desc: str | None = None, reset_options: dict | None = None) -> list[dict]:
    """Run exactly the given episodes (an int N means ids 0..N-1); one result per episode, in id order.

    A result holds ``return``, ``length``, ``success`` (``info["success"]`` at the episode's last step) and, with
    ``record``, the episode's D4RL arrays. ``max_steps`` cuts episodes short (recorded as timeouts).
    ``reset_options`` go to every reset (OGBench's ``task_id``).
    """
    from tqdm import tqdm

    ids = list(range(episodes)) if isinstance(episodes, (int, np.integer)) else [int(e) for e in episodes]
    if not ids:
        raise FrozenDTError("no episodes to run (the episode count must be positive)")
    n = min(num_envs, len(ids))
    envs = make_vector_env(task, n, env_version)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    queue = ids[n:][::-1]
    slot_episode: list[int | None] = list(ids[:n])
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    steps: list[dict | None] = [None] * n
    results: dict[int, dict] = {}
    bar = tqdm(total=len(ids), unit="ep", desc=desc or f"{task.name} rollouts", disable=not progress, leave=False)
    try:
        obs, infos = envs.reset(seed=[seed + e for e in slot_episode], options=dict(reset_options or {}))
        for s, e in enumerate(slot_episode):
            agent.start(s, e, reset_goal(task, infos, s))
            steps[s] = {k: [] for k in RECORD_KEYS} if record else None
        while any(e is not None for e in slot_episode):
            active = np.array([e is not None for e in slot_episode])
            slots = np.flatnonzero(active)
            actions = np.zeros((n, len(low)), dtype=np.float32)
            actions[slots] = np.clip(agent.act(obs[slots], slots), low, high)
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            agent.observe(slots, rewards[slots])
            returns[slots] += rewards[slots]
            lengths[slots] += 1
            cut = np.zeros(n, dtype=bool) if max_steps is None else lengths >= max_steps
            done = terminated | truncated | cut
            for s in slots:
                if record:
                    for key, value in zip(RECORD_KEYS, (obs[s], actions[s], rewards[s], terminated[s],
                                                        (truncated[s] or cut[s]) and not terminated[s], next_obs[s])):
                        steps[s][key].append(value)
                if done[s]:
                    success = bool(infos.get("success", np.zeros(n))[s]) if infos.get("_success", np.zeros(n))[s] else False
                    result = {"episode": slot_episode[s], "return": float(returns[s]), "length": int(lengths[s]),
                              "success": success}
                    if record:
                        result.update({k: np.asarray(v) for k, v in steps[s].items()})
                    results[slot_episode[s]] = result
                    bar.update(1)
            obs = next_obs
            reset = done | (~active & (terminated | truncated))  # idle slots are reset too when their env ends
            if reset.any():
                seeds: list[int | None] = [None] * n
                pending_start = []
                for s in np.flatnonzero(reset):
                    if active[s]:
                        slot_episode[s] = queue.pop() if queue else None
                        returns[s], lengths[s] = 0.0, 0
                        if slot_episode[s] is not None:
                            seeds[s] = seed + slot_episode[s]
                            pending_start.append(s)
                obs, infos = envs.reset(seed=seeds, options={**(reset_options or {}), "reset_mask": reset})
                for s in pending_start:
                    agent.start(s, slot_episode[s], reset_goal(task, infos, s))
                    steps[s] = {k: [] for k in RECORD_KEYS} if record else None
    finally:
        bar.close()
        envs.close()
    return [results[e] for e in ids]


def reset_goal(task: Task, infos: dict, slot: int) -> np.ndarray | None:
    """The goal observation a vector env's reset reported for ``slot`` on a goal-conditioned task, else None
    (OGBench's single-task envs report a goal too; their policies do not take it)."""
    if task.goal_conditioned and "goal" in infos and infos.get("_goal", np.ones(slot + 1, bool))[slot]:
        return np.asarray(infos["goal"][slot], dtype=np.float32)
    return None


def episode_scores(task: Task, episodes: list[dict]) -> np.ndarray:
    """Per-episode score: D4RL-normalized return, or success x 100 for success-scored (OGBench) tasks."""
    from frozen_dt.eval.scores import normalized_score

    if task.score_type == "success":
        return 100.0 * np.array([e["success"] for e in episodes], dtype=np.float64)
    return normalized_score(task, [e["return"] for e in episodes])


def summarize(task: Task, runs: list[dict]) -> dict:
    scores = episode_scores(task, runs)
    return {"score": float(scores.mean()), "return": float(np.mean([r["return"] for r in runs])),
            "length": float(np.mean([r["length"] for r in runs])), "episodes": len(runs)}


def target_label(target: float | None) -> str:
    """How a return target names its results (``score@3600``); ``none`` for policies without one."""
    return "none" if target is None else f"{target:g}"


def evaluate_agent(task: Task, make_agent, *, targets: tuple, episodes: int, num_envs: int = 16,
                   env_version: str | None = None, seed: int = EVAL_SEED, max_steps: int | None = None,
                   progress: bool = True, keep_episodes: bool = False) -> dict:
    """``score`` and ``score@L``/``return@L``/``length@L`` for each evaluation condition L.

    Conditions are the return targets (``make_agent(target)`` builds the agent for one; stateless agents ignore
    it and ``targets`` may be ``(None,)``), and ``score`` is the first target's mean score. Goal-conditioned
    OGBench tasks are evaluated on each of their evaluation goals instead (L = ``task1`` ... ``task5``, the env
    reset with that ``task_id``), and ``score`` is the mean success over them, as OGBench reports it. The same
    episode seeds serve every condition. With ``keep_episodes`` the per-episode results are returned too, under
    ``episodes@L``.
    """
    if task.goal_conditioned:
        conditions = [(f"task{i}", None, {"task_id": i, "render_goal": False}) for i in task.eval_task_ids]
    else:
        conditions = [(target_label(t), t, None) for t in targets]
    results = {}
    for label, target, options in conditions:
        runs = rollout(task, make_agent(target), episodes, seed=seed, num_envs=num_envs, env_version=env_version,
                       max_steps=max_steps, progress=progress, desc=f"eval {task.name} {label}", reset_options=options)
        for key, value in summarize(task, runs).items():
            if key != "episodes":
                results[f"{key}@{label}"] = value
        if keep_episodes:
            scores = episode_scores(task, runs)
            results[f"episodes@{label}"] = [{"episode": r["episode"], "return": r["return"], "length": r["length"],
                                             "success": r["success"], "score": float(sc)} for r, sc in zip(runs, scores)]
    labels = [label for label, _, _ in conditions]
    results["score"] = float(np.mean([results[f"score@{k}"] for k in labels])) if task.goal_conditioned \
        else results[f"score@{labels[0]}"]
    return results
