"""Training recipes: one JSON file per (algorithm, task family) in ``frozen_dt/configs/`` (``dt-locomotion.json``).

A recipe sets :class:`~frozen_dt.config.TrainArgs` fields by name and says where its values come from (``source``,
required in the shipped files; ``notes`` optional). Precedence, lowest first: the ``TrainArgs`` defaults, the
shipped recipe of the run's (algorithm, task family), the ``--config FILE`` recipe, the flags given on the
command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

from frozen_dt.config import TrainArgs
from frozen_dt.envs.registry import get_task
from frozen_dt.errors import FrozenDTError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DESCRIPTIVE_KEYS = ("source", "notes")
# What a run is and where it lives is the command line's business, never a recipe's.
NOT_IN_RECIPES = ("task", "algo", "config", "resume", "run_dir", "download", "dataset", "wandb", "device")
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def recipe_keys() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainArgs) if f.name not in NOT_IN_RECIPES}


def builtin_recipes(algo: str, task: str) -> list[Path]:
    """The shipped recipes for ``algo`` on ``task``, lowest precedence first: the task family's
    (``iql-locomotion.json``), then the task's own (``iql-hopper-medium-v2.json``, as CORL's per-task configs)."""
    names = (f"{algo}-{get_task(task).family}.json", f"{algo}-{task}.json")
    return [CONFIG_DIR / n for n in names if (CONFIG_DIR / n).is_file()]


def recipe_steps(algo: str, task: str) -> int:
    """The full-scale training length of ``algo`` on ``task``: its shipped recipes' ``steps`` (else the default)."""
    steps = TrainArgs.steps
    for path in builtin_recipes(algo, task):
        steps = read_recipe(path).get("steps", steps)
    return int(steps)


def read_recipe(path: Path) -> dict:
    """The recipe in ``path``, its keys and value types checked against ``TrainArgs``."""
    try:
        recipe = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FrozenDTError(f"no recipe file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FrozenDTError(f"recipe {path} is not valid JSON ({error})") from None
    if not isinstance(recipe, dict):
        raise FrozenDTError(f"recipe {path} must hold a JSON object of settings")
    fields = recipe_keys()
    for key, value in recipe.items():
        if key in DESCRIPTIVE_KEYS:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FrozenDTError(f"recipe {path}: unknown setting {key!r}{hint}")
        field = fields[key]
        ok = (value is None and field.default is None) or (
            isinstance(value, _TYPES[str(field.type)]) and not (isinstance(value, bool) and str(field.type) != "bool"))
        if not ok:
            raise FrozenDTError(f"recipe {path}: {key!r} must be a {field.type}, got {value!r}")
        if isinstance(value, int) and str(field.type) == "float":
            recipe[key] = float(value)
    return recipe


def apply_recipes(args: TrainArgs, explicit: frozenset) -> tuple[TrainArgs, dict]:
    """``args`` with recipe values for every setting not given on the command line; and a record of the recipes."""
    paths = builtin_recipes(args.algo, args.task) + ([Path(args.config).expanduser()] if args.config else [])
    settings, record = {}, []
    for path in paths:
        recipe = read_recipe(path)
        record.append({"file": str(path), "source": recipe.get("source")})
        settings.update({k: v for k, v in recipe.items() if k not in DESCRIPTIVE_KEYS})
    resolved = dataclasses.replace(args, **{k: v for k, v in settings.items() if k not in explicit})
    resolved.validate()
    return resolved, {"recipes": record, "explicit": sorted(explicit)}
