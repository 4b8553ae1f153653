"""Sweep files: a base config, a grid, per-algorithm overrides, evaluation settings and an output root, expanded
into runs with stable run directories.

A SPEC (YAML or JSON)::

    out: runs/sweeps/hopper-reduced        # output root (run dirs, sweep.json, the leaderboard)
    base: {task: hopper-medium-v2, steps: 3000, eval_episodes: 5}   # any train setting, by field name
    grid: {algo: [dt, frozen-dt], layers: ["0:2"], init: [pretrained, random]}
    seeds: [0, 1]                          # the seeds of every config (or grid: {seed: [...]})
    overrides: {frozen-dt: {precision: bf16}}                        # per algorithm, its own settings only
    eval: {episodes: 10, num_envs: 10}     # frozen-dt eval after training (episodes 0: none); training then
                                           #  evaluates nothing itself unless the SPEC sets eval_episodes;
                                           #  a job checkpoints every tenth of its steps unless it sets save_every
    resources: {cpus: 1, gpus: 0}          # per job: torch threads and Ray's num_cpus / num_gpus
    data:                                  # datasets the sweep generates first when absent (runs name them
      - {task: scene-play-v0, episodes: 100, out: runs/data/scene-play-100.npz}   #  with `dataset`)

``grid`` may also be a list of grids, whose configs are pooled: one SPEC for runs that share nothing but the
output root (``[{task: [hopper-medium-v2], algo: [iql, cql]}, {task: [scene-play-v0], algo: [gciql]}]``). An entry
may carry its own ``eval`` mapping, which replaces the sweep's for its runs.

Before any job starts, the sweep makes sure every run's dataset is here: a ``data`` entry whose ``out`` is
missing is generated, and a task whose runs name no ``dataset`` and which has no local dataset is generated
once at its default size (rather than by several jobs at once).

Every grid point is a config; a base or grid setting that the config's algorithm does not have (``layers`` for dt)
is left out of that config, and configs that become the same are kept once. A setting no algorithm of the sweep has
is an error, as is an override key the algorithm lacks. Each run is then resolved as ``frozen-dt train`` resolves
it (recipes under the SPEC's settings), so a bad value fails before anything starts.

A run's directory is ``<out>/<task>/<config name>/seed<seed>``: the config name is the algorithm, then the grid
settings that apply to it (``frozen-dt_init-random_layers-0-2``), then a short hash of all its settings, so it is
readable, stable across invocations and unique.

``stack_seeds: true`` makes each config one job that trains its seeds together (``frozen-dt train --seeds``: one
process, a pretrained frozen slice held once; on a GPU the fast way to run seeds); its run dirs are the same.

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
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from frozen_dt.algorithms import ALGORITHMS, get_spec
from frozen_dt.config import RunConfig
from frozen_dt.envs.registry import ENV_VERSIONS
from frozen_dt.errors import FrozenDTError
from frozen_dt.schema import Invalid, choice, either, flag, integer, list_of, nullable, number, text
from frozen_dt.settings import validate_fields
from frozen_dt.training.recipes import NOT_IN_RECIPES, apply_recipes

TOP_KEYS = ("out", "command", "base", "grid", "seeds", "overrides", "eval", "resources", "data", "name", "stack_seeds",
            "profiles")
PROFILE_KEYS = ("out", "stack_seeds", "base", "eval", "resources")  # what a profile may change (mappings merged)
DATA_KEYS = ("task", "out", "episodes", "transitions", "seed")
COMMANDS = ("train", "probe")
NOT_IN_PROBE_SWEEPS = ("run_dir", "summary_dir")
EVAL_KEYS = {"episodes": 10, "num_envs": 10, "eval_seed": 10_000, "checkpoint": "last",
             "env_version": None}  # None: each run's own (its dataset's) env version
RESOURCE_KEYS = {"cpus": 1, "gpus": 0}
MAX_SPEC_BYTES = 256 * 1024
MAX_RUNS = 1000  # a SPEC expanding to more is refused unless `frozen-dt sweep --max-runs` raises it
MAX_VALUE_CHARS = 500  # a string setting
MAX_READABLE = 80  # characters of a config name before its hash (a run-dir component stays far below 255 bytes)
TOP_CHECKS = {"out": text(1000), "name": text(200),
              "seeds": either(list_of(integer(-2**63, 2**63 - 1)), integer(-2**63, 2**63 - 1))}
EVAL_CHECKS = {"episodes": integer(0, 10**6), "num_envs": integer(1, 4096), "eval_seed": integer(0, 2**32 - 1),
               "checkpoint": choice("last", "best"), "env_version": nullable(choice(*ENV_VERSIONS))}
# where runs live, what they continue, which seeds run (the SPEC's 'seeds' list): the sweep's own
NOT_IN_SWEEPS = ("run_dir", "resume", "config", "wandb", "seeds", "stop_after")


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
    evaluation: dict = field(default_factory=dict)  # what `frozen-dt eval` runs after training (the sweep's eval)

    @property
    def algo(self) -> str:
        return self.settings.get("algo", f"probe-{self.settings.get('arm')}")

    @property
    def task(self) -> str:
        return self.settings["task"]


@dataclass
class Sweep:
    spec_file: Path
    raw: dict  # the SPEC as run: its profile (``--profile``) merged in
    out: Path
    runs: list[SweepRun]
    eval: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    data: list[dict] = field(default_factory=list)  # datasets to generate before the jobs (``data`` entries)
    stack_seeds: bool = False  # one job per config, its seeds trained together (frozen-dt train --seeds)
    profile: str | None = None  # the profile merged in (``frozen-dt sweep --profile``)

    def jobs(self) -> list:
        """What the backends run: each run on its own, or with ``stack_seeds`` the runs of each config together
        (a list: its seeds, stacked in one process)."""
        if not self.stack_seeds:
            return list(self.runs)
        groups: dict[Path, list[SweepRun]] = {}
        for run in self.runs:
            groups.setdefault(run.run_dir.parent, []).append(run)
        return [group if len(group) > 1 else group[0] for group in groups.values()]


def read_spec_file(path: Path) -> dict:
    """The SPEC's mapping: at most :data:`MAX_SPEC_BYTES`, YAML without anchors or aliases (each value written
    where it is used), JSON nested at most a few hundred levels."""
    path = Path(path).expanduser()
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise FrozenDTError(f"sweep file {path} is over {MAX_SPEC_BYTES // 1024} KiB: not a SPEC")
        text = path.read_text()
    except FileNotFoundError:
        raise FrozenDTError(f"no sweep file {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FrozenDTError(f"cannot read sweep file {path} ({getattr(error, 'strerror', None) or error})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            raw = _load_yaml(text)
        else:
            raw = json.loads(text)
    except RecursionError:
        raise FrozenDTError(f"sweep file {path} is nested too deeply") from None
    except Exception as error:  # yaml.YAMLError or json.JSONDecodeError
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FrozenDTError(f"sweep file {path} is not valid {'YAML' if path.suffix != '.json' else 'JSON'} "
                            f"({first})") from None
    if not isinstance(raw, dict):
        raise FrozenDTError(f"sweep file {path} must hold a mapping of {', '.join(TOP_KEYS)}")
    return raw


def _load_yaml(text: str):
    """``yaml.safe_load`` that refuses anchors and aliases: a few hundred bytes of nested aliases expand to
    gigabytes."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"line {mark.line + 1}: YAML anchors and aliases (&, *) are not allowed in a "
                                     "SPEC: write each value out")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliasLoader)


def _mapping(raw: dict, key: str, where: Path) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise FrozenDTError(f"{where}: '{key}' must be a mapping, got {value!r}")
    return dict(value)


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def setting_check(f: dataclasses.Field):
    """The check of a setting's SPEC value (:mod:`frozen_dt.schema`): its field's type, its choices, None only
    where the field's default is None."""
    check = {"int": integer(-2**63, 2**63 - 1), "float": number(), "str": text(MAX_VALUE_CHARS),
             "bool": flag()}[str(f.type)]
    if f.metadata.get("choices"):
        check = choice(*f.metadata["choices"])
    return nullable(check) if f.default is None else check


def check_values(path: Path, sections: list[tuple[str, dict, bool]], fields: list) -> None:
    """Every value of the ``(name, settings, is_grid)`` sections fits its field (a grid value: the field's value or
    a list of them); the first that does not is one message naming the key."""
    checks = {}
    for cls in fields:
        for f in dataclasses.fields(cls):
            checks.setdefault(f.name, setting_check(f))
    for where, settings, is_grid in sections:
        for key, value in settings.items():
            check = checks.get(key)
            if check is None:
                continue
            try:
                if is_grid and isinstance(value, list):
                    list_of(check)(value, f"{where}.{key}")
                else:
                    check(value, f"{where}.{key}")
            except Invalid as error:
                raise FrozenDTError(f"{path}: {error}") from None


def check_run_count(path: Path, grids: list, max_runs: int) -> None:
    """Refuse, before expanding it, a SPEC whose grids hold more than ``max_runs`` points."""
    count = sum(math.prod(len(v) for v in axes.values()) for axes, _, _ in grids)
    if count > max_runs:
        raise FrozenDTError(f"{path}: the grid expands to {count} runs, more than {max_runs} (raise the cap with "
                            "--max-runs if you mean it)")


def apply_profile(raw: dict, profile: str | None, path: Path) -> dict:
    """The SPEC with profile ``profile`` of its ``profiles`` merged in: the profile's ``out`` and ``stack_seeds``
    replace the SPEC's, its base, eval and resources are merged over the SPEC's own, key by key; ``profiles`` itself
    is dropped. A profile's setting the SPEC sets again where it wins (an algorithm's overrides, a grid's value or
    its own eval) is an error, not silently lost. Every profile's shape is checked here, used or not (and its
    settings by :func:`load_sweep`)."""
    profiles = _mapping(raw, "profiles", path)
    for name, sections in profiles.items():
        if not isinstance(sections, dict):
            raise FrozenDTError(f"{path}: profile {name!r} must be a mapping of {', '.join(PROFILE_KEYS)}")
        bad = sorted(set(sections) - set(PROFILE_KEYS))
        if bad:
            raise FrozenDTError(f"{path}: profile {name!r} sets {bad[0]!r}; a profile changes only "
                                f"{', '.join(PROFILE_KEYS)}")
        for key in set(sections) - {"out", "stack_seeds"}:
            _mapping(sections, key, f"{path}: profile {name!r}")
    merged = {k: v for k, v in raw.items() if k != "profiles"}
    if profile is None:
        return merged
    if profile not in profiles:
        known = f"its profiles: {', '.join(map(str, profiles))}" if profiles else "it has no 'profiles'"
        raise FrozenDTError(f"{path}: no profile {profile!r} ({known})")
    check_not_shadowed(raw, profiles[profile], f"{path}: profile {profile!r}")
    for key, changes in profiles[profile].items():
        merged[key] = changes if key in ("out", "stack_seeds") else {**_mapping(raw, key, path), **(changes or {})}
    return merged


def check_not_shadowed(raw: dict, sections: dict, where: str) -> None:
    """Refuse a profile's base setting that an algorithm's ``overrides`` or a grid sets again, or its eval setting
    that a grid's own ``eval`` sets again: those win over the profile's, which would be silently lost."""
    given = raw.get("grid") or {}
    grids = [g for g in (given if isinstance(given, list) else [given]) if isinstance(g, dict)]
    overrides = raw.get("overrides") if isinstance(raw.get("overrides"), dict) else {}
    setters = [(f"overrides.{algo}", o) for algo, o in overrides.items() if isinstance(o, dict)]
    setters += [(f"grid {i}" if isinstance(given, list) else "grid", g) for i, g in enumerate(grids)]
    evals = [(f"grid {i} eval" if isinstance(given, list) else "grid eval", g["eval"]) for i, g in enumerate(grids)
             if isinstance(g.get("eval"), dict)]
    for section, others in (("base", setters), ("eval", evals)):
        for key in sections.get(section) or {}:
            for name, settings in others:
                if key in settings:
                    raise FrozenDTError(f"{where} sets {section}.{key}, which the SPEC's {name} sets again (and that "
                                        "wins): set it in one place")


def load_sweep(path: Path, max_runs: int = MAX_RUNS, profile: str | None = None) -> Sweep:
    """The sweep in ``path`` (with ``profile`` of its ``profiles`` merged in), expanded and every run resolved (any
    problem raises before anything runs)."""
    path = Path(path).expanduser()
    raw = read_spec_file(path)
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise FrozenDTError(f"{path}: unknown key {unknown[0]!r} (a sweep file has {', '.join(TOP_KEYS)})")
    sweep = resolve_sweep(raw, path, max_runs, profile)
    profiles = raw.get("profiles") if isinstance(raw.get("profiles"), dict) else {}
    for other in (name for name in profiles if name != profile):  # a profile not run now is checked all the same
        try:
            resolve_sweep(raw, path, max_runs, other)
        except FrozenDTError as error:
            raise FrozenDTError(f"{error} (with profile {other!r}: `--profile {other}` would refuse it)") from None
    return sweep


def resolve_sweep(raw: dict, path: Path, max_runs: int, profile: str | None) -> Sweep:
    """:func:`load_sweep`'s work for one profile (or none) of the SPEC ``raw`` read from ``path``."""
    raw = apply_profile(raw, profile, path)
    if not raw.get("out"):
        raise FrozenDTError(f"{path}: 'out' (the output root) is required")
    for key, check in TOP_CHECKS.items():
        if key in raw:
            try:
                check(raw[key], key)
            except Invalid as error:
                raise FrozenDTError(f"{path}: {error}") from None
    out = Path(raw["out"]).expanduser()
    out = out.absolute() if str(out).startswith("-") else out  # no run dir in a job's command reads as an option
    base = _mapping(raw, "base", path)
    overrides, evaluation, resources = (_mapping(raw, k, path) for k in ("overrides", "eval", "resources"))
    for key, default in EVAL_KEYS.items():
        evaluation.setdefault(key, default)
    grids = read_grids(raw, path, evaluation)
    for name, given, allowed in (("eval", evaluation, EVAL_KEYS), ("resources", resources, RESOURCE_KEYS)):
        bad = sorted(set(given) - set(allowed))
        if bad:
            raise FrozenDTError(f"{path}: unknown {name} key {bad[0]!r} (known: {', '.join(allowed)})")
    for where, given in [("eval", evaluation)] + [(f"grid eval {i}", e) for i, (_, _, e) in enumerate(grids)]:
        for key, check in EVAL_CHECKS.items():
            try:
                check(given[key], f"{where}.{key}")
            except Invalid as error:
                raise FrozenDTError(f"{path}: {error}") from None
    check_run_count(path, grids, max_runs)
    data = read_data_entries(raw, path)
    for key, default in RESOURCE_KEYS.items():
        resources.setdefault(key, default)
    if not (isinstance(resources["cpus"], int) and resources["cpus"] >= 1):
        raise FrozenDTError(f"{path}: resources 'cpus' must be a positive integer, got {resources['cpus']!r}")
    command = raw.get("command", "train")
    if command not in COMMANDS:
        raise FrozenDTError(f"{path}: unknown command {command!r} (a sweep runs {' or '.join(COMMANDS)} jobs)")
    stack = raw.get("stack_seeds", False)
    if not isinstance(stack, bool) or (stack and command == "probe"):
        raise FrozenDTError(f"{path}: 'stack_seeds' is true or false, and for train sweeps only")
    if command == "probe":
        if overrides:
            raise FrozenDTError(f"{path}: probe sweeps take no per-algorithm overrides")
        evaluation["episodes"] = 0  # probes evaluate themselves
        if len(grids) != 1:
            raise FrozenDTError(f"{path}: a probe sweep has one grid")
        axes, fixed, _ = grids[0]
        from frozen_dt.config import ProbeArgs

        check_values(path, [("base", base, False), ("grid", {**axes, **fixed}, True)], [ProbeArgs])
        return Sweep(path, raw, out, probe_runs(path, {**base, **fixed}, axes, out), evaluation, resources, data,
                     profile=profile)

    check_values(path, [("base", base, False)] + [("grid", {**axes, **fixed}, True) for axes, fixed, _ in grids]
                 + [(f"overrides.{algo}", settings, False) for algo, settings in overrides.items()
                    if isinstance(settings, dict)],
                 [RunConfig] + [get_spec(a).config for a in ALGORITHMS])
    algos = list(dict.fromkeys(a for axes, fixed, _ in grids
                               for a in axes.get("algo", [fixed.get("algo", base.get("algo", RunConfig.algo))])))
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
    for key in list(base) + [k for axes, fixed, _ in grids for k in [*axes, *fixed]]:
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

    from frozen_dt.envs.registry import get_task

    for task in {t for axes, fixed, _ in grids for t in axes.get("task", [fixed.get("task", base.get("task"))])}:
        if task is not None:
            get_task(task)  # a known task: a plain name, in run dirs and job commands
    runs, seen = [], set()
    for axes, fixed, run_eval in grids:
        runs += grid_runs(path, out, {**base, **fixed}, axes, overrides, run_eval, run_fields, algo_fields, seen)
    if not runs:
        raise FrozenDTError(f"{path}: the grid expands to no run")
    return Sweep(path, raw, out, runs, evaluation, resources, data, stack_seeds=stack, profile=profile)


def read_grids(raw: dict, path: Path, evaluation: dict) -> list[tuple[dict, dict, dict]]:
    """The SPEC's grids (one mapping, or a list of them) as ``(axes, fixed, eval)``: the settings a grid varies
    (lists), the ones it sets to one value (scalars: not part of the run's name) and its runs' evaluation."""
    given = raw.get("grid")
    given = {} if given is None else given
    entries = given if isinstance(given, list) else [given]
    if not entries:
        raise FrozenDTError(f"{path}: 'grid' is an empty list")
    grids = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise FrozenDTError(f"{path}: 'grid' must be a mapping or a list of mappings, got {entry!r}")
        grid = dict(entry)
        own_eval = grid.pop("eval", None)
        if own_eval is not None and not isinstance(own_eval, dict):
            raise FrozenDTError(f"{path}: a grid's 'eval' must be a mapping, got {own_eval!r}")
        for key in ("checkpoint", "env_version"):
            if key in (own_eval or {}):
                raise FrozenDTError(f"{path}: '{key}' is the sweep's eval setting (one leaderboard), not a grid's")
        bad = sorted(set(own_eval or {}) - set(EVAL_KEYS))
        if bad:
            raise FrozenDTError(f"{path}: unknown eval key {bad[0]!r} (known: {', '.join(EVAL_KEYS)})")
        if "seeds" in raw:
            if "seed" in grid and not isinstance(given, list):
                raise FrozenDTError(f"{path}: give the seeds once, as 'seeds' or as grid 'seed'")
            grid.setdefault("seed", raw["seeds"])  # a grid of a list may have seeds of its own
        for key, values in grid.items():
            if isinstance(values, list) and not values or values is None or isinstance(values, dict):
                raise FrozenDTError(f"{path}: grid '{key}' must be a non-empty list (or one value), got {values!r}")
        axes = {k: v for k, v in grid.items() if isinstance(v, list)}
        fixed = {k: v for k, v in grid.items() if not isinstance(v, list)}
        grids.append((axes, fixed, {**evaluation, **(own_eval or {})}))
    return grids


def read_data_entries(raw: dict, path: Path) -> list[dict]:
    """The SPEC's ``data`` entries: datasets to generate (``frozen-dt data generate``) before the jobs."""
    from frozen_dt.envs.registry import get_task

    entries = raw.get("data") or []
    if not isinstance(entries, list):
        raise FrozenDTError(f"{path}: 'data' must be a list of mappings ({', '.join(DATA_KEYS)})")
    for entry in entries:
        if not isinstance(entry, dict) or not {"task", "out"} <= set(entry) or not isinstance(entry["out"], str) \
                or not isinstance(entry["task"], str):
            raise FrozenDTError(f"{path}: each 'data' entry is a mapping with 'task' and 'out' (strings), got "
                                f"{entry!r:.200}")
        bad = sorted(set(entry) - set(DATA_KEYS))
        if bad:
            raise FrozenDTError(f"{path}: unknown data key {bad[0]!r} (known: {', '.join(DATA_KEYS)})")
        if "episodes" in entry and "transitions" in entry:
            raise FrozenDTError(f"{path}: a data entry gives 'episodes' or 'transitions', not both")
        for key in ("episodes", "transitions", "seed"):
            if key in entry and not (isinstance(entry[key], int) and entry[key] >= (0 if key == "seed" else 1)):
                raise FrozenDTError(f"{path}: data '{key}' must be a {'non-negative' if key == 'seed' else 'positive'}"
                                    f" integer, got {entry[key]!r}")
        get_task(entry["task"])
    return [dict(entry) for entry in entries]


def grid_runs(path: Path, out: Path, base: dict, grid: dict, overrides: dict, evaluation: dict, run_fields: set,
              algo_fields: dict, seen: set) -> list[SweepRun]:
    """The runs of one grid (configs already in ``seen`` are kept once)."""
    runs, keys = [], list(grid)
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
                       int(settings["seed"]), evaluation=evaluation)
        resolve(run, path)
        runs.append(run)
    return runs


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
    argv = ["probe", run.settings["task"], f"--run-dir={run.run_dir}", f"--summary-dir={run.summary_dir}"]
    return argv + flags({k: v for k, v in run.settings.items() if k != "task"})


def flags(settings: dict) -> list[str]:
    """Settings as ``--flag=value`` options (``--flag`` for true switches, nothing for false ones or None): one
    argument each, so no value can be read as an option of its own."""
    argv = []
    for key, value in sorted(settings.items()):
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv.append(flag if value is True else f"{flag}={value}")
    return argv


def run_config_name(settings: dict, grid_keys: list[str]) -> str:
    """``<algo>[_<key>-<value>...]_<hash>``: readable from the grid settings (cut at :data:`MAX_READABLE`
    characters), unique by the hash of all settings but the seed."""
    described = "".join(f"_{k}-{settings[k]}" for k in sorted(grid_keys))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{settings['algo']}{described}").strip("-")[:MAX_READABLE].rstrip("-.")
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


def stack_train_argv(runs: list[SweepRun]) -> list[str]:
    """``frozen-dt train --seeds`` of one config's runs: the config's directory is the stack's, whose members are
    exactly the runs' directories (``<config dir>/seed<k>``)."""
    settings = {k: v for k, v in train_settings(runs[0]).items() if k not in ("task", "seed")}
    return ["train", runs[0].task, f"--run-dir={runs[0].run_dir.parent}",
            "--seeds=" + ",".join(str(run.seed) for run in runs)] + flags(settings)


def train_argv(run: SweepRun) -> list[str]:
    """The ``frozen-dt train`` arguments of ``run``: its task, ``--run-dir`` and the SPEC's settings as flags."""
    return ["train", run.task, f"--run-dir={run.run_dir}"] + flags({k: v for k, v in train_settings(run).items()
                                                                       if k != "task"})


JOB_CHECKPOINTS = 10  # a job that sets no save_every checkpoints at least this often over its steps


def train_settings(run: SweepRun) -> dict:
    """The SPEC's settings of ``run``, and two that the job chooses when the SPEC does not (the run's name and hash
    are those of the SPEC's settings alone):

    * ``eval_episodes: 0`` when the sweep evaluates the last checkpoint after training: the trainer's own final
      evaluation would roll the same checkpoint out again;
    * ``save_every`` at most a tenth of the run's steps, so that a job stopped anywhere loses little when it resumes
      (the default, 5,000 steps, is longer than many sweeps' runs: such a job restarted from step 0).
    """
    settings = dict(run.settings)
    evaluation = run.evaluation
    if evaluation.get("episodes", 0) > 0 and evaluation.get("checkpoint") == "last" and \
            "eval_episodes" not in settings:
        settings["eval_episodes"] = 0
    if "save_every" not in settings and run.steps:
        from frozen_dt.config import RunConfig

        default = RunConfig.__dataclass_fields__["save_every"].default
        settings["save_every"] = min(default, max(1, -(-run.steps // JOB_CHECKPOINTS)))
    return settings
