"""Sweep files: a base config, a grid, per-algorithm overrides, evaluation settings and an output root, expanded
into runs with stable run directories.

A SPEC (YAML or JSON)::

    out: runs/sweeps/hopper-reduced        # output root (run dirs, sweep.json, the leaderboard)
    base: {task: hopper-medium-v2, steps: 3000, eval_episodes: 5}   # any train setting, by field name
    grid: {algo: [dt, frozen-dt], layers: ["0:2"], init: [pretrained, random]}
    seeds: [0, 1]                          # the seeds of every config (or grid: {seed: [...]})
    overrides: {frozen-dt: {precision: bf16}}                        # per algorithm, its own settings only
    eval: {episodes: 10, num_envs: 10}     # frozen-dt eval after training (episodes 0: none)
    resources: {cpus: 1, gpus: 0}          # per job: torch threads and Ray's num_cpus / num_gpus

Every grid point is a config; a base or grid setting that the config's algorithm does not have (``layers`` for dt)
is left out of that config, and configs that become the same are kept once. A setting no algorithm of the sweep has
is an error, as is an override key the algorithm lacks. Each run is then resolved as ``frozen-dt train`` resolves
it (recipes under the SPEC's settings), so a bad value fails before anything starts.

A run's directory is ``<out>/<task>/<config name>/seed<seed>``: the config name is the algorithm, then the grid
settings that apply to it (``frozen-dt_init-random_layers-0-2``), then a short hash of all its settings, so it is
readable, stable across invocations and unique.

``command: probe`` makes every job a ``frozen-dt probe`` run instead: base and grid set probe settings (``task``,
``arm``, ``backbone``, ``layers``, ``steps``, ...), run dirs are ``<out>/probes/<task>/<arm>...``, summaries go to
``<out>/summaries`` (what ``python -m frozen_dt.probes.report`` reads). Probe runs have no resume: an unfinished
one starts again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from frozen_dt.algorithms import ALGORITHMS, get_spec
from frozen_dt.config import RunConfig
from frozen_dt.errors import FrozenDTError
from frozen_dt.settings import validate_fields
from frozen_dt.training.recipes import NOT_IN_RECIPES, apply_recipes

TOP_KEYS = ("out", "command", "base", "grid", "seeds", "overrides", "eval", "resources", "name")
COMMANDS = ("train", "probe")
NOT_IN_PROBE_SWEEPS = ("run_dir", "summary_dir")
EVAL_KEYS = {"episodes": 10, "num_envs": 10, "eval_seed": 10_000, "checkpoint": "last"}
RESOURCE_KEYS = {"cpus": 1, "gpus": 0}
NOT_IN_SWEEPS = ("run_dir", "resume", "config", "wandb")  # where a run lives and what it continues: the sweep's own


@dataclass
class SweepRun:
    """One run of a sweep: its flat train settings (those the SPEC sets), its seed and where it lives."""

    settings: dict
    config_name: str
    run_dir: Path
    seed: int
    steps: int = 0  # the training length once resolved (recipes included)
    command: str = "train"
    summary_dir: Path | None = None  # probe runs: where their summaries go

    @property
    def algo(self) -> str:
        return self.settings.get("algo", f"probe-{self.settings.get('arm')}")

    @property
    def task(self) -> str:
        return self.settings["task"]


@dataclass
class Sweep:
    spec_file: Path
    raw: dict
    out: Path
    runs: list[SweepRun]
    eval: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)


def read_spec_file(path: Path) -> dict:
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FrozenDTError(f"no sweep file {path}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as error:  # yaml.YAMLError or json.JSONDecodeError
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FrozenDTError(f"sweep file {path} is not valid {'YAML' if path.suffix != '.json' else 'JSON'} "
                            f"({first})") from None
    if not isinstance(raw, dict):
        raise FrozenDTError(f"sweep file {path} must hold a mapping of {', '.join(TOP_KEYS)}")
    return raw


def _mapping(raw: dict, key: str, where: Path) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise FrozenDTError(f"{where}: '{key}' must be a mapping, got {value!r}")
    return dict(value)


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def load_sweep(path: Path) -> Sweep:
    """The sweep in ``path``, expanded and every run resolved (any problem raises before anything runs)."""
    path = Path(path).expanduser()
    raw = read_spec_file(path)
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise FrozenDTError(f"{path}: unknown key {unknown[0]!r} (a sweep file has {', '.join(TOP_KEYS)})")
    if not raw.get("out"):
        raise FrozenDTError(f"{path}: 'out' (the output root) is required")
    out = Path(raw["out"]).expanduser()
    base, grid = _mapping(raw, "base", path), _mapping(raw, "grid", path)
    overrides, evaluation, resources = (_mapping(raw, k, path) for k in ("overrides", "eval", "resources"))
    if "seeds" in raw:
        if "seed" in grid:
            raise FrozenDTError(f"{path}: give the seeds once, as 'seeds' or as grid 'seed'")
        grid["seed"] = raw["seeds"]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise FrozenDTError(f"{path}: grid '{key}' must be a non-empty list, got {values!r}")
    for key, default in EVAL_KEYS.items():
        evaluation.setdefault(key, default)
    for name, given, allowed in (("eval", evaluation, EVAL_KEYS), ("resources", resources, RESOURCE_KEYS)):
        bad = sorted(set(given) - set(allowed))
        if bad:
            raise FrozenDTError(f"{path}: unknown {name} key {bad[0]!r} (known: {', '.join(allowed)})")
    for key, default in RESOURCE_KEYS.items():
        resources.setdefault(key, default)
    if not (isinstance(resources["cpus"], int) and resources["cpus"] >= 1):
        raise FrozenDTError(f"{path}: resources 'cpus' must be a positive integer, got {resources['cpus']!r}")
    command = raw.get("command", "train")
    if command not in COMMANDS:
        raise FrozenDTError(f"{path}: unknown command {command!r} (a sweep runs {' or '.join(COMMANDS)} jobs)")
    if command == "probe":
        if overrides:
            raise FrozenDTError(f"{path}: probe sweeps take no per-algorithm overrides")
        evaluation["episodes"] = 0  # probes evaluate themselves
        return Sweep(path, raw, out, probe_runs(path, base, grid, out), evaluation, resources)

    algos = grid.get("algo", [base.get("algo", RunConfig.algo)])
    for algo in algos:
        if algo not in ALGORITHMS:
            raise FrozenDTError(f"{path}: unknown algorithm {algo!r} (known: {', '.join(ALGORITHMS)})")
    for algo in overrides:
        if algo not in algos:
            raise FrozenDTError(f"{path}: overrides for {algo!r}, which the sweep does not run (algorithms: "
                                f"{', '.join(algos)})")
    run_fields = _fields(RunConfig) - set(NOT_IN_SWEEPS)
    algo_fields = {a: _fields(get_spec(a).config) for a in algos}
    known = run_fields | set().union(*algo_fields.values())
    for key in list(base) + list(grid):
        if key in NOT_IN_SWEEPS:
            raise FrozenDTError(f"{path}: '{key}' is the sweep's to set, not the SPEC's")
        if key not in known:
            raise FrozenDTError(f"{path}: unknown setting {key!r} (not a run setting, nor one of "
                                f"{', '.join(algos)}'s)")
    for algo, settings in overrides.items():
        if not isinstance(settings, dict):
            raise FrozenDTError(f"{path}: overrides for {algo!r} must be a mapping")
        bad = sorted(set(settings) - algo_fields[algo] - run_fields)
        if bad:
            raise FrozenDTError(f"{path}: override {bad[0]!r} is not a setting of {algo}")

    runs, seen = [], set()
    keys = list(grid)
    for point in itertools.product(*(grid[k] for k in keys)):
        chosen = dict(zip(keys, point))
        algo = chosen.get("algo", base.get("algo", RunConfig.algo))
        own = run_fields | algo_fields[algo]
        settings = {k: v for k, v in {**base, **chosen}.items() if k in own}
        settings.update(overrides.get(algo, {}))
        settings["algo"] = algo
        settings.setdefault("seed", RunConfig.seed)
        if "task" not in settings:
            raise FrozenDTError(f"{path}: no task (set base 'task' or grid 'task')")
        identity = json.dumps(settings, sort_keys=True, default=str)
        if identity in seen:
            continue
        seen.add(identity)
        grid_keys = [k for k in keys if k in own and k not in ("algo", "seed", "task")]
        config_name = run_config_name(settings, grid_keys)
        run = SweepRun(settings, config_name, out / settings["task"] / config_name / f"seed{settings['seed']}",
                       int(settings["seed"]))
        resolve(run, path)
        runs.append(run)
    if not runs:
        raise FrozenDTError(f"{path}: the grid expands to no run")
    return Sweep(path, raw, out, runs, evaluation, resources)


def probe_runs(path: Path, base: dict, grid: dict, out: Path) -> list[SweepRun]:
    """The probe runs of a ``command: probe`` sweep, each checked as ``frozen-dt probe`` checks its flags."""
    from frozen_dt.config import ProbeArgs

    fields = _fields(ProbeArgs) - set(NOT_IN_PROBE_SWEEPS)
    for key in list(base) + list(grid):
        if key in NOT_IN_PROBE_SWEEPS:
            raise FrozenDTError(f"{path}: '{key}' is the sweep's to set, not the SPEC's")
        if key not in fields:
            raise FrozenDTError(f"{path}: unknown setting {key!r} (not a probe setting)")
    runs, keys = [], list(grid)
    for point in itertools.product(*(grid[k] for k in keys)):
        settings = {**base, **dict(zip(keys, point))}
        settings.setdefault("seed", ProbeArgs.seed)
        settings.setdefault("arm", ProbeArgs.arm)
        if "task" not in settings:
            raise FrozenDTError(f"{path}: no probe task (set base 'task' or grid 'task')")
        try:
            args = ProbeArgs(**{**settings, "summary_dir": ""})
            validate_fields(args)
            args.validate()
        except FrozenDTError as error:
            raise FrozenDTError(f"{path}: probe {settings}: {error}") from None
        named = {**settings, "algo": settings["arm"]}
        name = run_config_name(named, [k for k in keys if k not in ("arm", "seed", "task")])
        run_dir = out / "probes" / settings["task"] / name / f"seed{settings['seed']}"
        runs.append(SweepRun(settings, name, run_dir, int(settings["seed"]), int(args.steps), "probe",
                             out / "summaries"))
    if not runs:
        raise FrozenDTError(f"{path}: the grid expands to no run")
    return runs


def probe_argv(run: SweepRun) -> list[str]:
    """The ``frozen-dt probe`` arguments of ``run``; its summary goes to ``run.summary_dir``."""
    argv = ["probe", run.settings["task"], "--run-dir", str(run.run_dir), "--summary-dir", str(run.summary_dir)]
    return argv + flags({k: v for k, v in run.settings.items() if k != "task"})


def flags(settings: dict) -> list[str]:
    """Settings as ``--flag=value`` options (``--flag`` for true switches, nothing for false ones or None)."""
    argv = []
    for key, value in sorted(settings.items()):
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv.append(flag if value is True else f"{flag}={value}")
    return argv


def run_config_name(settings: dict, grid_keys: list[str]) -> str:
    """``<algo>[_<key>-<value>...]_<hash>``: readable from the grid settings, unique by the hash of all settings
    but the seed."""
    described = "".join(f"_{k}-{settings[k]}" for k in sorted(grid_keys))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{settings['algo']}{described}").strip("-")
    identity = json.dumps({k: v for k, v in settings.items() if k != "seed"}, sort_keys=True, default=str)
    return f"{name}_{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def resolve(run: SweepRun, where: Path) -> None:
    """Resolve ``run`` as ``frozen-dt train`` would (recipes under the SPEC's settings); errors name the run."""
    given = {**run.settings, "run_dir": str(run.run_dir)}
    try:
        resolved, _ = apply_recipes(given, frozenset(run.settings) - set(NOT_IN_RECIPES))
    except FrozenDTError as error:
        raise FrozenDTError(f"{where}: run {run.config_name}/seed{run.seed}: {error}") from None
    run.steps = resolved.run.steps
    for key, value in run.settings.items():  # a false switch over a recipe's true one has no flag to say it
        if isinstance(value, bool) and resolved.get(key) != value:
            raise FrozenDTError(f"{where}: run {run.config_name}/seed{run.seed}: {key}: false cannot override "
                                "the recipe's true (leave it out, or use another algorithm config)")


def train_argv(run: SweepRun) -> list[str]:
    """The ``frozen-dt train`` arguments of ``run``: its task, ``--run-dir`` and the SPEC's settings as flags."""
    return ["train", run.task, "--run-dir", str(run.run_dir)] + flags({k: v for k, v in run.settings.items()
                                                                       if k != "task"})
