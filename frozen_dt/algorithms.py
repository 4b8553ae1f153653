"""The algorithm registry: the one place that lists algorithms, and the spec each algorithm module exports.

An algorithm is one module that exports ``SPEC``, an :class:`AlgorithmSpec`:

* ``config``: a dataclass of every hyperparameter (``frozen_dt.settings.arg`` fields: help text, range check,
  the default written there and nowhere else; an optional ``validate()`` checks what ranges cannot);
* ``build_model(config, problem, backbone) -> nn.Module``: its networks for a problem's dimensions;
* ``build_algorithm(config, model, dataset, problem, run) -> Algorithm``: its update rule on its data view (an
  object the shared :class:`~frozen_dt.training.trainer.Trainer` runs; ``.obs_stats`` is what its agent
  normalizes observations with, None for raw observations);
* ``make_agent(config, model, obs_stats, problem, target, precision) -> Agent``: its rollout agent
  (:class:`frozen_dt.eval.rollout.Agent`) for one return target (None when it is not return-conditioned);
* its traits: what it conditions on (``"returns"``, ``"goals"``, ``"none"``), whether it reads raw
  observations, and ``load_backbone(config, seed)`` when it needs a frozen LM backbone (loaded before the
  dataset, so a model problem surfaces before a long data generation).

``frozen-dt train``, ``eval``, ``leaderboard``, the recipes and the shared algorithm test read specs; nothing
outside an algorithm's module names it. Adding one: its module, one line in :data:`REGISTRY`, and its recipe
file(s) in ``frozen_dt/configs/``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass
from typing import Callable

from frozen_dt.errors import FrozenDTError
from frozen_dt.settings import validate_fields

REGISTRY = {  # name -> the module whose SPEC defines it (imported on first use: listing names needs no torch)
    "frozen-dt": "frozen_dt.frozen_lm_dt",
    "dt": "frozen_dt.baselines.dt",
    "bc": "frozen_dt.baselines.bc",
    "iql": "frozen_dt.baselines.iql",
    "cql": "frozen_dt.baselines.cql",
    "gciql": "frozen_dt.baselines.gciql",
    "td3bc": "frozen_dt.baselines.td3bc",
}
ALGORITHMS = tuple(REGISTRY)
CONDITIONS = ("returns", "goals", "none")


@dataclass(frozen=True)
class Problem:
    """What an algorithm's networks and agent are built for: dims, the goal's dim on goal-conditioned tasks, and the
    task's return-to-go scale and episode length (sequence models' timestep range)."""

    obs_dim: int
    act_dim: int
    goal_dim: int | None = None
    rtg_scale: float = 1000.0
    max_timestep: int = 1000

    @classmethod
    def of(cls, task, obs_dim: int, act_dim: int) -> "Problem":
        """A task's problem; OGBench goals are full observations."""
        return cls(int(obs_dim), int(act_dim), int(obs_dim) if task.goal_conditioned else None,
                   float(task.rtg_scale), int(task.max_episode_steps))

    @classmethod
    def of_run(cls, config: dict, task) -> "Problem":
        """The problem a run trained on, from its ``config.json`` (dims, scale and horizon as recorded then)."""
        return cls(int(config["obs_dim"]), int(config["act_dim"]),
                   int(config["obs_dim"]) if task.goal_conditioned else None,
                   float(config["rtg_scale"]), int(config["max_timestep"]))


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    summary: str  # one line: what it is
    source: str  # where it is published: the paper and the reference implementation its defaults follow
    config: type
    build_model: Callable
    build_algorithm: Callable
    make_agent: Callable
    conditioning: tuple[str, ...]  # what its policy can be conditioned on (CONDITIONS)
    raw_observations: bool = False  # trained and acting on unnormalized observations (checkpoints carry no stats)
    load_backbone: Callable | None = None  # (config, seed) -> FrozenSlice, for algorithms built around one
    cuda_precision: str = "fp32"  # what --precision auto means on cuda (on cpu it is fp32)

    def __post_init__(self):
        if not self.conditioning or set(self.conditioning) - set(CONDITIONS):
            raise ValueError(f"{self.name}: conditioning must be a non-empty subset of {CONDITIONS}")
        if not self.source:
            raise ValueError(f"{self.name}: give its published source")
        if not dataclasses.is_dataclass(self.config):
            raise ValueError(f"{self.name}: config must be a dataclass")

    def precision(self, requested: str, device: str) -> str:
        """``requested`` (a ``--precision`` value) resolved: ``auto`` is this algorithm's choice on ``device``."""
        if requested != "auto":
            return requested
        return self.cuda_precision if device == "cuda" else "fp32"

    def backbone(self, config, seed: int):
        """The frozen backbone its model is built around (None for algorithms without one)."""
        return self.load_backbone(config, seed) if self.load_backbone else None

    @property
    def return_conditioned(self) -> bool:
        return "returns" in self.conditioning

    def condition_on(self, task) -> str:
        """What this algorithm conditions on for ``task``; a clear error when it cannot train on it."""
        if task.goal_conditioned:
            if "goals" not in self.conditioning:
                raise FrozenDTError(f"{task.name} is goal-conditioned; --algo {self.name} is not (use a single-task "
                                    f"variant such as {task.name.replace('-v0', '-singletask-task1-v0')}, or a "
                                    f"goal-conditioned algorithm: {', '.join(goal_conditioned_algorithms())})")
            return "goals"
        if self.conditioning == ("goals",):
            raise FrozenDTError(f"--algo {self.name} is goal-conditioned; {task.name} is not (use a goal-conditioned "
                                "OGBench task such as scene-play-v0)")
        return "returns" if self.return_conditioned else "none"

    def eval_targets(self, task, dataset) -> tuple:
        """Return targets its evaluations condition on: the task's DT targets, else (OGBench single-task) the
        data's best episode return; ``(None,)`` for policies that take no return."""
        if self.condition_on(task) != "returns":
            return (None,)
        return tuple(task.rtg_targets) or (float(dataset.episode_returns().max()),)

    def make_config(self, values: dict | None = None, *, strict: bool = True):
        """Its config from ``values`` (field name -> value), validated. ``strict=False`` reads saved runs: keys of
        other algorithms (runs of older versions recorded every algorithm's settings) are ignored, a saved None where
        the field now has a default (older versions left such defaults to the algorithm) takes it, and a setting the
        run predates takes its field's ``legacy`` value (what that run used)."""
        fields = {f.name: f for f in dataclasses.fields(self.config)}
        values = dict(values or {})
        unknown = sorted(set(values) - set(fields))
        if unknown and strict:
            raise FrozenDTError(f"{', '.join(unknown)}: not a setting of {self.name}")
        kept = {k: v for k, v in values.items() if k in fields
                and not (v is None and not strict and fields[k].default is not None)}
        if not strict:  # a setting added since the run was saved: the value the run was trained with
            kept.update({k: f.metadata["legacy"] for k, f in fields.items()
                         if k not in values and "legacy" in f.metadata})
        config = self.config(**kept)
        validate_fields(config)
        validate = getattr(config, "validate", None)
        if validate is not None:
            validate()
        return config


def run_precision(run) -> str:
    """A run config's ``--precision`` resolved for its algorithm and device (``auto`` -> fp32 or bf16)."""
    return get_spec(run.algo).precision(run.precision, run.device)


def get_spec(name: str) -> AlgorithmSpec:
    """The spec of algorithm ``name``; an unknown name raises with the closest ones."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), REGISTRY, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise FrozenDTError(f"unknown algorithm {name!r}{hint}; known: {', '.join(ALGORITHMS)}")
    spec = importlib.import_module(REGISTRY[name]).SPEC
    if spec.name != name:
        raise RuntimeError(f"{REGISTRY[name]}.SPEC is named {spec.name!r}, registered as {name!r}")
    return spec


PACKAGE_DIRS = {"frozen_dt.baselines": "baselines", "frozen_dt.envs": "envs", "frozen_dt.eval": "eval"}  # pyproject


def module_path(name: str) -> str:
    """The repository path of algorithm ``name``'s module (``baselines/iql.py``)."""
    module = REGISTRY[name]
    for package, folder in PACKAGE_DIRS.items():
        if module.startswith(package + "."):
            return f"{folder}/{module[len(package) + 1:].replace('.', '/')}.py"
    return module.replace(".", "/") + ".py"


def algorithm_table() -> str:
    """The registry as a markdown table (the README's, which a test keeps equal to this): name, what it is, its
    module, its published source, what it conditions on, and its docs page."""
    rows = ["| algorithm | what it is | module | published source | conditions on |", "|---|---|---|---|---|"]
    for name in ALGORITHMS:
        spec = get_spec(name)
        rows.append(f"| [`{name}`](docs/algorithms/{name}.md) | {spec.summary} | [`{module_path(name)}`]"
                    f"({module_path(name)}) | {spec.source} | {', '.join(spec.conditioning)} |")
    return "\n".join(rows) + "\n"


def goal_conditioned_algorithms() -> list[str]:
    return [name for name in ALGORITHMS if "goals" in get_spec(name).conditioning]


def owners_of(setting: str) -> list[str]:
    """The algorithms whose config has a field ``setting``."""
    return [name for name in ALGORITHMS
            if setting in {f.name for f in dataclasses.fields(get_spec(name).config)}]
