"""Training recipes: JSON files in ``frozen_dt/configs/``, one per (algorithm, task family) and, as CORL's per-task
configs, one per (algorithm, task) over it: ``iql-locomotion.json``, then ``iql-hopper-medium-v2.json``.

An algorithm's config dataclass holds its defaults (each the published setting its module's docstring cites); a
recipe sets only what differs for its tasks, by field name: the algorithm's hyperparameters and the run's
training length and evaluation schedule (:class:`~frozen_dt.config.RunConfig`). ``source`` (required in shipped
files) says where the values come from; ``notes`` is optional. Precedence, lowest first: the defaults, the family
recipe, the task recipe, the ``--config FILE`` recipe, the flags given on the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

from frozen_dt.algorithms import AlgorithmSpec, get_spec, owners_of
from frozen_dt.config import RunConfig
from frozen_dt.envs.registry import get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.run_dir import RunSettings, settings_from_args

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DESCRIPTIVE_KEYS = ("source", "notes")
# What a run is and where it lives is the command line's business, never a recipe's.
NOT_IN_RECIPES = ("task", "algo", "config", "resume", "run_dir", "download", "dataset", "wandb", "device")
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def recipe_fields(spec: AlgorithmSpec) -> dict[str, dataclasses.Field]:
    """The settings a recipe of ``spec`` may set: run-level ones and the algorithm's."""
    run = {f.name: f for f in dataclasses.fields(RunConfig) if f.name not in NOT_IN_RECIPES}
    return {**run, **{f.name: f for f in dataclasses.fields(spec.config)}}


def builtin_recipes(algo: str, task: str) -> list[Path]:
    """The shipped recipes for ``algo`` on ``task``, lowest precedence first."""
    names = (f"{algo}-{get_task(task).family}.json", f"{algo}-{task}.json")
    return [CONFIG_DIR / n for n in names if (CONFIG_DIR / n).is_file()]


def recipe_steps(algo: str, task: str) -> int:
    """The full-scale training length of ``algo`` on ``task``: its shipped recipes' ``steps`` (else the default)."""
    steps = RunConfig.steps
    for path in builtin_recipes(algo, task):
        steps = read_recipe(path, get_spec(algo)).get("steps", steps)
    return int(steps)


def read_recipe(path: Path, spec: AlgorithmSpec) -> dict:
    """The recipe in ``path`` for algorithm ``spec``, its keys and value types checked."""
    try:
        recipe = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FrozenDTError(f"no recipe file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FrozenDTError(f"recipe {path} is not valid JSON ({error})") from None
    if not isinstance(recipe, dict):
        raise FrozenDTError(f"recipe {path} must hold a JSON object of settings")
    fields = recipe_fields(spec)
    for key, value in recipe.items():
        if key in DESCRIPTIVE_KEYS:
            continue
        if key not in fields:
            owners = [a for a in owners_of(key) if a != spec.name]
            close = difflib.get_close_matches(key, fields, n=1)
            hint = (f" (a setting of {', '.join(owners)})" if owners else
                    f" (did you mean {close[0]!r}?)" if close else "")
            raise FrozenDTError(f"recipe {path}: {key!r} is not a setting of {spec.name} runs{hint}")
        field = fields[key]
        ok = (value is None and field.default is None) or (
            isinstance(value, _TYPES[str(field.type)]) and not (isinstance(value, bool) and str(field.type) != "bool"))
        if not ok:
            raise FrozenDTError(f"recipe {path}: {key!r} must be a {field.type}, got {value!r}")
        if isinstance(value, int) and str(field.type) == "float":
            recipe[key] = float(value)
    return recipe


def apply_recipes(given: dict, explicit: frozenset) -> tuple[RunSettings, dict]:
    """Settings for a new run from ``given`` (flat: run and algorithm fields, as parsed), with recipe values for
    every setting not in ``explicit`` (the flags given on the command line); and a record of the recipes."""
    spec = get_spec(given["algo"])
    paths = builtin_recipes(spec.name, given["task"]) + ([Path(given["config"]).expanduser()]
                                                         if given.get("config") else [])
    settings, record = {}, []
    for path in paths:
        recipe = read_recipe(path, spec)
        record.append({"file": str(path), "source": recipe.get("source")})
        settings.update({k: v for k, v in recipe.items() if k not in DESCRIPTIVE_KEYS})
    merged = {**given, **{k: v for k, v in settings.items() if k not in explicit}}
    resolved = settings_from_args(merged)
    resolved.run.precision = resolved.spec.precision(resolved.run.precision, resolved.run.device)
    resolved.run.validate()
    return resolved, {"recipes": record, "explicit": sorted(explicit)}
