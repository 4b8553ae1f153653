"""A run directory and its files; the one JSON and CSV reader and writer every command uses.

* ``config.json``: the run's settings (``args``: the :class:`~frozen_dt.config.RunConfig` fields and the
  algorithm config's, flat, so flags, recipes and files share one vocabulary), the recipes applied, the flags
  given, env version, evaluation targets, dims;
* ``versions.json``: python and package versions, and the git commit (``sha`` is ``"unknown"`` outside git);
* ``dataset.json``: the dataset's ``source`` record and size;
* ``params.json``: ``trainable_params``, ``frozen_params`` and the frozen fingerprint;
* ``metrics.jsonl`` and ``metrics.csv`` (:mod:`frozen_dt.training.sinks`), ``checkpoints/last.pt`` and
  ``best.pt`` (:mod:`frozen_dt.training.trainer`), ``eval-<checkpoint>.json`` (:mod:`frozen_dt.eval.runs`).

Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
from dataclasses import dataclass
from pathlib import Path

from frozen_dt.algorithms import get_spec
from frozen_dt.config import RunConfig
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_write_text
from frozen_dt.schema import validate
from frozen_dt.provenance import RUN_PACKAGES, git_commit, package_versions, python_version

RUNS_ROOT = Path("runs")


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path, schema=None):
    """``path``'s JSON, checked against ``schema`` (:mod:`frozen_dt.schema`) when given: any problem is one message
    naming the file (and the field)."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FrozenDTError(f"{path} is missing: is this a frozen-dt run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FrozenDTError(f"{path} is not valid JSON ({error})") from None
    except RecursionError:
        raise FrozenDTError(f"{path} is nested too deeply to be a frozen-dt record") from None
    except OSError as error:
        raise FrozenDTError(f"cannot read {path} ({error.strerror or error})") from None
    return value if schema is None else validate(value, schema, path)


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-empty line (``metrics.jsonl``); an absent file has none."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except RecursionError:
        raise FrozenDTError(f"{path} is nested too deeply to be frozen-dt metrics") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FrozenDTError(f"{path} is not valid JSON lines ({error})") from None


def write_csv(path: Path, rows: list[dict], columns: list[str] | tuple | None = None) -> None:
    """``rows`` under ``columns`` (default: every key, in order of first appearance; keys outside ``columns`` are
    left out)."""
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path), buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    try:
        with open(Path(path).expanduser(), newline="") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise FrozenDTError(f"no such table: {path}") from None


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def eval_path(run_dir: Path, checkpoint: str = "last", suffix: str = "") -> Path:
    """``eval-<checkpoint><suffix>.json``: the evaluation record of a checkpoint (suffix: another task or env
    version than the run's own, :func:`eval_suffix`)."""
    return Path(run_dir) / f"eval-{checkpoint}{suffix}.json"


def run_eval_path(run_dir: Path, checkpoint: str = "last", env_version: str | None = None) -> Path:
    """The file holding a run's evaluation of ``checkpoint`` in ``env_version`` (None: its own version): its own
    ``eval-<checkpoint>.json``, or ``eval-<checkpoint>-v5.json`` for a run trained with another version (also for
    a run whose config cannot be read: its own file is not known to be in that version)."""
    if not env_version:
        return eval_path(run_dir, checkpoint)
    try:
        config = read_json(Path(run_dir) / "config.json")
        task, trained = config["args"]["task"], config.get("env_version")
    except (FrozenDTError, KeyError, TypeError):
        return eval_path(run_dir, checkpoint, f"-{env_version}")
    return eval_path(run_dir, checkpoint, eval_suffix(task, trained, None, env_version))


def eval_suffix(run_task: str, run_env_version: str | None, task: str | None = None,
                env_version: str | None = None) -> str:
    """The suffix of an evaluation on ``task`` and ``env_version`` (None: the run's own) of a run trained on
    ``run_task`` whose env version is ``run_env_version``: ``-<task>`` and ``-<version>`` where they are not the
    run's, so that such an evaluation never replaces the run's own ``eval-<checkpoint>.json``."""
    suffix = "" if task in (None, run_task) else f"-{task}"
    return suffix + (f"-{env_version}" if env_version and env_version != run_env_version else "")


def default_run_dir(task: str, algo: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = RUNS_ROOT / task / algo / stamp
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{stamp}-{n}")
    return path


def latest_run(root: Path = RUNS_ROOT) -> Path:
    """The run whose ``checkpoints/last.pt`` was written most recently (``frozen-dt eval`` with no run named)."""
    found = [p.parent.parent for p in Path(root).glob("**/checkpoints/last.pt")
             if (p.parent.parent / "config.json").is_file()]
    if not found:
        raise FrozenDTError(f"no trained run under {root}/ (looked for */checkpoints/last.pt); train one with "
                            "'frozen-dt train TASK', or name run directories")
    return max(found, key=lambda p: checkpoint_path(p).stat().st_mtime)


def write_run_metadata(run_dir: Path, *, config: dict, dataset, params: dict) -> None:
    """Everything a run records once, at its start."""
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "versions.json", {"python": python_version(), "packages": package_versions(RUN_PACKAGES),
                                           "git": git_commit()})
    write_json(run_dir / "dataset.json", {"source": dataset.source, "n_episodes": dataset.n_episodes,
                                          "n_transitions": dataset.n_transitions, "obs_dim": dataset.obs_dim,
                                          "act_dim": dataset.act_dim})
    write_json(run_dir / "params.json", params)


@dataclass
class RunSettings:
    """A run's settings: the run-level :class:`~frozen_dt.config.RunConfig`, its algorithm's spec and config."""

    run: object
    spec: object
    algo: object

    def record(self) -> dict:
        """The flat ``args`` of ``config.json``."""
        return {**dataclasses.asdict(self.run), **dataclasses.asdict(self.algo)}

    def get(self, name: str):
        """A setting by name, from the run config or the algorithm's (None if neither has it)."""
        return getattr(self.run if hasattr(self.run, name) else self.algo, name, None)


def settings_from_args(args: dict, *, strict: bool = True) -> RunSettings:
    """:class:`RunSettings` from flat ``args`` (``config.json``'s, or a recipe's merged values). ``strict=False``
    reads saved runs: the settings of other algorithms that older versions recorded are ignored."""
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    try:
        run = RunConfig(**{k: v for k, v in args.items() if k in run_fields})
    except TypeError as error:
        raise FrozenDTError(f"not a frozen-dt run configuration ({error})") from None
    spec = get_spec(run.algo)
    algo = spec.make_config({k: v for k, v in args.items() if k not in run_fields}, strict=strict)
    return RunSettings(run, spec, algo)


def read_run_config(run_dir: Path) -> tuple[dict, RunSettings]:
    """``config.json`` of a run directory and the settings it records (also of runs written by older versions)."""
    path = Path(run_dir) / "config.json"
    config = read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get("args"), dict):
        raise FrozenDTError(f"{path} is not a frozen-dt run configuration (no 'args')")
    try:
        settings = settings_from_args(config["args"], strict=False)
    except FrozenDTError as error:
        raise FrozenDTError(f"{path}: {error}") from None
    return config, settings
