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

import os
import sys
import threading
from typing import Protocol

import numpy as np

from frozen_dt.envs.registry import Task
from frozen_dt.errors import FrozenDTError

EVAL_SEED = 10_000
BLOCK = 16  # inference always runs on blocks of this many rows
EVAL_NUM_ENVS = 32  # evaluation's default vector width
WORKER_START = "forkserver"  # how env worker processes start (multiprocessing context)
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


def make_vector_env(task: Task, num_envs: int, env_version: str | None = None, processes: bool = False):
    """A gymnasium vector env of the task's env, autoreset disabled (the engine resets slots itself): stepped in this
    process, or with ``processes`` each env in its own worker process (gymnasium's AsyncVectorEnv: for many-core
    machines whose inference runs on a GPU; the same episodes, step for step).

    Workers are started by a ``forkserver``, never forked from this process: a process that has initialised CUDA
    cannot be forked safely. They render nothing (``MUJOCO_GL=disable`` unless the environment says otherwise)."""
    from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

    def factory():
        return task.make_env(env_version)

    if not processes:
        return SyncVectorEnv([factory] * num_envs, autoreset_mode=AutoresetMode.DISABLED)
    os.environ.setdefault("MUJOCO_GL", "disable")
    return AsyncVectorEnv([factory] * num_envs, autoreset_mode=AutoresetMode.DISABLED, context=WORKER_START)


def rollout(task: Task, agent: Agent, episodes, *, seed: int = EVAL_SEED, num_envs: int = 16, workers: int = 1,
            env_version: str | None = None, record: bool = False, max_steps: int | None = None,
            progress: bool = True, desc: str | None = None, reset_options: dict | None = None,
            env_processes: bool = False, seed_period: int | None = None) -> list[dict]:
    """Run exactly the given episodes (an int N means ids 0..N-1); one result per episode, in id order.

    A result holds ``return``, ``length``, ``success`` (``info["success"]`` at the episode's last step) and, with
    ``record``, the episode's D4RL arrays. ``max_steps`` cuts episodes short (recorded as timeouts).
    ``reset_options`` go to every reset (OGBench's ``task_id``). ``env_processes``: each env steps in its own
    process (:func:`make_vector_env`; results unchanged).

    ``seed_period``: episode ``i`` is reset with seed ``seed + i % seed_period`` (several conditions' episodes in
    one vector env, each condition on the same episode seeds: :class:`ConditionRouter`).

    ``workers`` > 1 splits the ``num_envs`` env slots into that many groups, each with its own vector env stepped
    by its own thread, all taking episodes from one queue (:class:`worker_settings`: one torch thread per worker).
    The workers are the parallelism: MuJoCo and torch release the GIL, so while one worker runs inference another
    steps its envs. Results do not depend on the worker count: inference runs in fixed blocks, single-threaded in
    every worker (equal to a one-worker rollout at one torch thread). The agent is shared: it gets calls for
    disjoint slots from different threads, which per-slot state (every agent here) handles.
    """
    from frozen_dt.progress import progress_bar

    ids = list(range(episodes)) if isinstance(episodes, (int, np.integer)) else [int(e) for e in episodes]
    if not ids:
        raise FrozenDTError("no episodes to run (the episode count must be positive)")
    n = min(num_envs, len(ids))
    workers = max(1, min(workers, n))
    queue = EpisodeQueue(ids)
    results: dict[int, dict] = {}
    bar = progress_bar(total=len(ids), unit="ep", desc=desc or f"{task.name} rollouts", enabled=progress, leave=False)
    seeds = (lambda e: seed + e) if seed_period is None else (lambda e: seed + e % seed_period)
    group = dict(task=task, agent=agent, queue=queue, results=results, bar=bar, seed=seeds, env_version=env_version,
                 record=record, max_steps=max_steps, reset_options=reset_options, env_processes=env_processes)
    sizes = [n // workers + (w < n % workers) for w in range(workers)]
    first_slots = np.cumsum([0] + sizes[:-1])
    try:
        if workers == 1:
            run_slots(range(n), **group)
        else:
            with worker_settings():
                threads = [ErrorKeepingThread(run_slots, range(a, a + size), **group)
                           for a, size in zip(first_slots, sizes)]
                for thread in threads:
                    thread.start()
                try:
                    for thread in threads:
                        while thread.is_alive():
                            thread.join(0.1)  # a timed join keeps Ctrl-C responsive
                finally:
                    queue.stop()
                    for thread in threads:
                        thread.join()
                for thread in threads:
                    thread.reraise()
    finally:
        bar.close()
    return [results[e] for e in ids]


class EpisodeQueue:
    """The episode ids still to run, taken in order by any worker; ``stop`` makes workers finish early."""

    def __init__(self, ids: list[int]):
        self._ids, self._lock, self.stopped = list(ids)[::-1], threading.Lock(), False

    def take(self) -> int | None:
        with self._lock:
            return self._ids.pop() if self._ids and not self.stopped else None

    def stop(self) -> None:
        self.stopped = True


class ErrorKeepingThread(threading.Thread):
    """A thread that keeps the exception its target raised, for the starting thread to re-raise."""

    def __init__(self, target, *args, **kwargs):
        super().__init__(daemon=True)
        self._call, self.error = (target, args, kwargs), None

    def run(self) -> None:
        target, args, kwargs = self._call
        try:
            target(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the starting thread
            self.error = error

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


class worker_settings:
    """While rollout workers run: one torch intra-op thread each (the workers are the parallelism; inference blocks
    therefore always run single-threaded) and a short GIL switch interval, so that a worker coming back from MuJoCo
    or torch does not wait long on one running Python. Both are restored after."""

    def __enter__(self):
        import torch

        self.saved = torch.get_num_threads(), sys.getswitchinterval()
        torch.set_num_threads(1)
        sys.setswitchinterval(5e-4)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.saved[0])
        sys.setswitchinterval(self.saved[1])


def run_slots(slots: range, *, task: Task, agent: Agent, queue: EpisodeQueue, results: dict, bar, seed,
              env_version: str | None, record: bool, max_steps: int | None, reset_options: dict | None,
              env_processes: bool = False) -> None:
    """Run episodes from ``queue`` in the env slots ``slots`` (one vector env) until it is empty; results go into
    ``results`` by episode id. Agent calls use the global slot numbers. ``seed(e)``: episode e's reset seed."""
    n, base = len(slots), slots.start
    slot_episode: list[int | None] = [queue.take() for _ in range(n)]
    if all(e is None for e in slot_episode):
        return
    envs = make_vector_env(task, n, env_version, processes=env_processes)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    steps: list[dict | None] = [None] * n
    try:
        seeds = [None if e is None else seed(e) for e in slot_episode]
        obs, infos = envs.reset(seed=seeds, options=dict(reset_options or {}))
        for s, e in enumerate(slot_episode):
            if e is not None:
                agent.start(base + s, e, reset_goal(task, infos, s))
                steps[s] = {k: [] for k in RECORD_KEYS} if record else None
        while any(e is not None for e in slot_episode) and not queue.stopped:
            active = np.array([e is not None for e in slot_episode])
            local = np.flatnonzero(active)
            actions = np.zeros((n, len(low)), dtype=np.float32)
            actions[local] = np.clip(agent.act(obs[local], base + local), low, high)
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            agent.observe(base + local, rewards[local])
            returns[local] += rewards[local]
            lengths[local] += 1
            cut = np.zeros(n, dtype=bool) if max_steps is None else lengths >= max_steps
            done = terminated | truncated | cut
            for s in local:
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
                seeds = [None] * n
                pending_start = []
                for s in np.flatnonzero(reset):
                    if active[s]:
                        slot_episode[s] = queue.take()
                        returns[s], lengths[s] = 0.0, 0
                        if slot_episode[s] is not None:
                            seeds[s] = seed(slot_episode[s])
                            pending_start.append(s)
                obs, infos = envs.reset(seed=seeds, options={**(reset_options or {}), "reset_mask": reset})
                for s in pending_start:
                    agent.start(base + s, slot_episode[s], reset_goal(task, infos, s))
                    steps[s] = {k: [] for k in RECORD_KEYS} if record else None
    except BaseException:
        queue.stop()  # the other workers stop after their current step
        raise
    finally:
        envs.close()


def default_workers(num_envs: int, episodes: int, device: str = "cpu") -> int:
    """Rollout workers for a CPU evaluation of ``episodes`` episodes: one per core, as long as each keeps at least a
    full inference block of the envs that run (``min(num_envs, episodes) // BLOCK``); one on CUDA, where the GPU is
    the parallelism."""
    import os

    if device != "cpu":
        return 1
    return max(1, min(os.cpu_count() or 1, min(num_envs, episodes) // BLOCK))


def default_block(num_envs: int, device: str = "cpu") -> int:
    """Rows of each inference call: :data:`BLOCK` on CPU; on an accelerator as wide as the vector env, so that a
    policy's rows of one env step go through in one call."""
    return BLOCK if device == "cpu" else max(BLOCK, int(num_envs))


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


class ConditionRouter:
    """Several agents in one vector env: episode id ``c * n + e`` is episode ``e`` of agent ``c`` (a return target of
    a run, or a seed x target of several runs). Each agent gets the calls of the slots running its episodes, with
    its own episode numbers; a slot's action is its own agent's, computed in that agent's fixed-shape blocks, so it
    does not depend on which other agents' episodes share the env."""

    def __init__(self, agents: list, n: int):
        self.agents, self.n = list(agents), int(n)
        self.owner: dict[int, int] = {}

    def start(self, slot: int, episode: int, goal=None) -> None:
        self.owner[slot] = episode // self.n
        self.agents[episode // self.n].start(slot, episode % self.n, goal)

    def groups(self, slots: np.ndarray):
        owners = np.array([self.owner[s] for s in slots])
        for c in np.unique(owners):
            yield self.agents[c], np.flatnonzero(owners == c)

    def act(self, observations: np.ndarray, slots: np.ndarray) -> np.ndarray:
        parts = [(rows, agent.act(observations[rows], slots[rows])) for agent, rows in self.groups(slots)]
        actions = np.empty((len(slots), *parts[0][1].shape[1:]), dtype=parts[0][1].dtype)
        for rows, part in parts:
            actions[rows] = part
        return actions

    def observe(self, slots: np.ndarray, rewards: np.ndarray) -> None:
        for agent, rows in self.groups(slots):
            agent.observe(slots[rows], rewards[rows])


def evaluate_agent(task: Task, make_agent, **kwargs) -> dict:
    """:func:`evaluate_agents` of one policy."""
    return evaluate_agents(task, [make_agent], **kwargs)[0]


def evaluate_agents(task: Task, make_agents: list, *, targets: tuple, episodes: int, num_envs: int = EVAL_NUM_ENVS,
                    workers: int = 1, env_version: str | None = None, seed: int = EVAL_SEED,
                    max_steps: int | None = None, progress: bool = True, keep_episodes: bool = False,
                    env_processes: bool = False, block: int | None = None) -> list[dict]:
    """For each policy (``make_agents[i](target)`` builds its agent for a target: the seeds of a stack, or one run),
    ``score`` and ``score@L``/``return@L``/``length@L`` for each evaluation condition L.

    Conditions are the return targets (stateless agents ignore them and ``targets`` may be ``(None,)``), and
    ``score`` is the first target's mean score. Every policy x target runs in one vector env (created once, its
    width ``num_envs``; :class:`ConditionRouter`), on the same episode seeds. Goal-conditioned OGBench tasks are
    evaluated on each of their evaluation goals instead (L = ``task1`` ... ``task5``, the env reset with that
    ``task_id``: one vector env per goal, as a reset takes one ``task_id``), and ``score`` is the mean success over
    them, as OGBench reports it. With ``keep_episodes`` the per-episode results are returned too, under
    ``episodes@L``. ``num_envs``, ``workers`` and ``env_processes`` go to :func:`rollout`; ``block``: the rows of
    each inference call (default :data:`BLOCK`; a row's action never depends on the other rows of its block).
    """
    if task.goal_conditioned:
        conditions = [(f"task{i}", None, {"task_id": i, "render_goal": False}) for i in task.eval_task_ids]
    else:
        conditions = [(target_label(t), t, None) for t in targets]

    def agent(make, target):
        built = make(target)
        if block is not None and hasattr(built, "block"):
            built.block = int(block)
        return built

    runs = {}  # (policy, label) -> its episodes
    common = dict(seed=seed, num_envs=num_envs, workers=workers, env_version=env_version, max_steps=max_steps,
                  progress=progress)
    if task.goal_conditioned:
        for label, target, options in conditions:
            router = ConditionRouter([agent(make, target) for make in make_agents], episodes)
            done = rollout(task, router, episodes * len(make_agents), desc=f"eval {task.name} {label}",
                           reset_options=options, env_processes=env_processes, seed_period=episodes, **common)
            for i in range(len(make_agents)):
                runs[i, label] = done[i * episodes:(i + 1) * episodes]
    else:
        pairs = [(i, label, target) for i in range(len(make_agents)) for label, target, _ in conditions]
        router = ConditionRouter([agent(make_agents[i], target) for i, _, target in pairs], episodes)
        done = rollout(task, router, episodes * len(pairs), desc=f"eval {task.name}", env_processes=env_processes,
                       seed_period=episodes, **common)
        for c, (i, label, _) in enumerate(pairs):
            runs[i, label] = done[c * episodes:(c + 1) * episodes]
    labels = [label for label, _, _ in conditions]
    out = []
    for i in range(len(make_agents)):
        results = {}
        for label in labels:
            episode_runs = [{**r, "episode": r["episode"] % episodes} for r in runs[i, label]]
            for key, value in summarize(task, episode_runs).items():
                if key != "episodes":
                    results[f"{key}@{label}"] = value
            if keep_episodes:
                scores = episode_scores(task, episode_runs)
                results[f"episodes@{label}"] = [{"episode": r["episode"], "return": r["return"], "length": r["length"],
                                                 "success": r["success"], "score": float(sc)}
                                                for r, sc in zip(episode_runs, scores)]
        results["score"] = float(np.mean([results[f"score@{k}"] for k in labels])) if task.goal_conditioned \
            else results[f"score@{labels[0]}"]
        out.append(results)
    return out
