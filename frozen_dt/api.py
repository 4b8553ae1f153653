"""The Python API: what the ``frozen-dt`` command does, as functions with its names and the configs' field names.

    import frozen_dt

    run = frozen_dt.train("hopper-medium-v2", algo="iql", steps=2000, eval_episodes=5)
    policy = frozen_dt.load_policy(run.run_dir)          # .act(observation, reward) / .reset()
    frozen_dt.evaluate([run.run_dir], episodes=10)       # writes eval-last.json, returns the records
    rows = frozen_dt.leaderboard(["runs/**"], out="results/leaderboard.csv")
    data = frozen_dt.load_dataset("hopper-medium-v2")    # an OfflineDataset; views: frozen_dt.SequenceView(data, 20)

Settings are keyword arguments named as the fields of :class:`frozen_dt.config.RunConfig` (the run: ``steps``,
``seed``, ``seeds``, ``device``, ``eval_episodes``, ``run_dir``, ...) and of the algorithm's config (``lr``,
``batch_size``, ``layers``, ``expectile``, ...); the shipped recipes apply beneath them exactly as beneath flags.
Errors a user can fix raise :class:`frozen_dt.errors.FrozenDTError` with the command's message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frozen_dt.config import EvalArgs, RunConfig
from frozen_dt.errors import FrozenDTError


@dataclass(frozen=True)
class TrainedRun:
    """What :func:`train` made: its run directory (with ``seeds``, the stack's) and its final evaluation (the first
    seed's; None without evaluation)."""

    run_dir: Path
    result: dict | None

    @property
    def score(self) -> float | None:
        return None if self.result is None else self.result["score"]


def _settings(cls, given: dict, owner: str) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise FrozenDTError(f"{', '.join(unknown)}: not a setting of {owner}")
    return {f.name: given.get(f.name, f.default) for f in dataclasses.fields(cls)}


def train(task: str, algo: str = RunConfig.algo, **settings) -> TrainedRun:
    """``frozen-dt train TASK --algo ALGO ...``: ``settings`` are RunConfig's and ALGO's config fields."""
    from frozen_dt.algorithms import get_spec, owners_of
    from frozen_dt.training.train import train as run_training

    spec = get_spec(algo)
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    algo_fields = {f.name: f.default for f in dataclasses.fields(spec.config)}
    foreign = sorted(set(settings) - run_fields - set(algo_fields))
    if foreign:
        owners = {name: owners_of(name) for name in foreign}
        raise FrozenDTError("; ".join(f"{name} is a setting of {', '.join(o)}, not of {algo}" if o else
                                      f"{name} is not a setting of {algo} runs" for name, o in owners.items()))
    given = {**_settings(RunConfig, {k: v for k, v in settings.items() if k in run_fields}, "train"),
             **{k: settings.get(k, default) for k, default in algo_fields.items()}, "task": task, "algo": algo}
    explicit = frozenset(settings) | {"algo"}
    outcome = run_training(given, explicit)
    return TrainedRun(outcome.run_dir, outcome.result)


class Policy:
    """A trained run's policy for one env, one step at a time: ``reset()`` at each episode's start (with the goal
    the env's reset reported, on goal-conditioned tasks), then ``act(observation, reward)`` per step, ``reward``
    being the reward of the previous step (None at an episode's first step). A Decision Transformer keeps its
    window of the last K steps and its return-to-go (``target`` minus the rewards so far) across calls; both start
    afresh at ``reset``. Actions are the agent's, before the harness clips them to the env's bounds."""

    def __init__(self, loaded, target: float | None, precision: str):
        self.run_dir, self.algo, self.task = loaded.run_dir, loaded.settings.spec.name, loaded.task
        self.obs_dim, self.act_dim, self.target = loaded.problem.obs_dim, loaded.problem.act_dim, target
        self.return_conditioned = target is not None
        self.agent = loaded.agent(target, precision)
        self.episode, self.steps = -1, 0

    def reset(self, goal: np.ndarray | None = None) -> None:
        self.episode += 1
        self.steps = 0
        self.agent.start(0, self.episode, None if goal is None else np.asarray(goal, dtype=np.float32))

    def act(self, observation, reward: float | None = None) -> np.ndarray:
        if self.episode < 0:
            raise FrozenDTError("call reset() at the start of an episode, before act()")
        if self.steps > 0:
            if reward is None and self.return_conditioned:
                raise FrozenDTError(f"{self.algo} conditions on the return to go: pass act(observation, reward) with "
                                    "the previous step's reward")
            self.agent.observe(np.array([0]), np.array([0.0 if reward is None else float(reward)]))
        observation = np.asarray(observation, dtype=np.float32)
        if observation.shape != (self.obs_dim,):
            raise FrozenDTError(f"observation of shape {observation.shape}; the policy takes ({self.obs_dim},)")
        self.steps += 1
        return np.asarray(self.agent.act(observation[None], np.array([0]))[0], dtype=np.float32)


def load_policy(run_dir, *, checkpoint: str = "last", target: float | None = None, device: str = "cpu",
                precision: str | None = None) -> Policy:
    """The policy of a trained run (``frozen-dt eval``'s loading, checks included). Return-conditioned runs act
    for ``target`` (default: the first return target the run was evaluated with)."""
    from frozen_dt.algorithms import run_precision
    from frozen_dt.eval.runs import load_run

    loaded = load_run(Path(run_dir), checkpoint, device)
    if not loaded.settings.spec.return_conditioned or loaded.task.goal_conditioned:
        target = None
    elif target is None:
        target = (loaded.config.get("eval_targets") or loaded.task.rtg_targets)[0]
    return Policy(loaded, None if target is None else float(target),
                  precision or run_precision(dataclasses.replace(loaded.settings.run, device=device)))


def evaluate(run_dirs=None, **settings) -> list[dict]:
    """``frozen-dt eval``: ``settings`` are EvalArgs' fields (``episodes``, ``checkpoint``, ``target_return``, ...).
    Writes each run's ``eval-<checkpoint>.json`` and returns those records."""
    from frozen_dt.eval.runs import run_eval
    from frozen_dt.settings import validate_fields

    given = _settings(EvalArgs, {**settings, "run_dirs": [str(d) for d in run_dirs or []]}, "eval")
    args = EvalArgs(**given)
    validate_fields(args)
    return run_eval(args)


def leaderboard(runs=None, *, out="results/leaderboard.csv", checkpoint: str = "last",
                reference: str | None = None, env_version: str | None = None) -> list[dict]:
    """``frozen-dt leaderboard``: one row per configuration of the evaluated runs matching ``runs`` (directories or
    globs; default ``runs/**``), written to ``out`` with a Markdown copy and figures beside it; with ``reference`` (a
    row label such as ``"dt"``) each row's Welch interval on its difference from that row; with ``env_version``
    the runs' evaluations in that MuJoCo version (``frozen-dt eval --env-version``). A run whose records are
    unreadable is left out and named in a warning (the CLI exits 1 for it)."""
    import warnings

    from frozen_dt.envs.registry import ENV_VERSIONS
    from frozen_dt.eval.leaderboard import write_leaderboard

    if env_version is not None and env_version not in ENV_VERSIONS:
        raise FrozenDTError(f"env_version must be one of {', '.join(ENV_VERSIONS)}, got {env_version!r}")
    rows, skipped = write_leaderboard([str(r) for r in runs] if runs else None, Path(out).expanduser(), checkpoint,
                                      reference, env_version)
    if skipped:
        warnings.warn("left out of the leaderboard: " + "; ".join(skipped), stacklevel=2)
    return rows


def load_dataset(name: str, *, task: str | None = None, download: bool = False, generate: bool = False):
    """A task's dataset (``generate=True``: made here when no local source has it) or a file (``task`` names the task
    a file belongs to when its name does not say), as :class:`frozen_dt.data.dataset.OfflineDataset`. Its views:
    ``TransitionView(data)``, ``SequenceView(data, context)``, ``GoalView(data)``."""
    from frozen_dt.data.sources import load_any, load_task_dataset
    from frozen_dt.envs.registry import TASKS

    if generate and name in TASKS:
        return load_task_dataset(name, download=download, generate=True)
    return load_any(str(name), task_name=task, download=download)[0]
