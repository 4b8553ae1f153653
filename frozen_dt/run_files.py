"""The files of a run directory besides its checkpoints.

* ``config.json``: the resolved training configuration (recipe, flags, env version, eval targets);
* ``versions.json``: python and package versions, and the git commit (``sha`` is ``"unknown"`` outside git);
* ``dataset.json``: the dataset's ``source`` record and size;
* ``params.json``: ``trainable_params`` and ``frozen_params``;
* ``metrics.jsonl`` and ``metrics.csv``: one row per log interval and per evaluation, keyed by ``step``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_write_text
from frozen_dt.provenance import RUN_PACKAGES, git_commit, package_versions, python_version

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FrozenDTError(f"{path} is missing: is this a frozen-dt run directory?") from None
    except json.JSONDecodeError as error:
        raise FrozenDTError(f"{path} is not valid JSON ({error})") from None


def write_run_metadata(run_dir: Path, *, config: dict, dataset, params: dict) -> None:
    """Everything a run records once, at its start."""
    write_json(run_dir / "config.json", config)
    write_json(run_dir / "versions.json", {"python": python_version(), "packages": package_versions(RUN_PACKAGES),
                                           "git": git_commit()})
    write_json(run_dir / "dataset.json", {"source": dataset.source, "n_episodes": dataset.n_episodes,
                                          "n_transitions": dataset.n_transitions, "obs_dim": dataset.obs_dim,
                                          "act_dim": dataset.act_dim})
    write_json(run_dir / "params.json", params)


class MetricsLog:
    """Rows of metrics in ``metrics.jsonl`` (appended, flushed per row) and ``metrics.csv`` (rewritten per row with
    the union of the columns seen so far, so rows with and without evaluation share one header).

    ``keep_until``: on resume, rows after that step (written after the checkpoint the run continues from) are
    dropped, so that the continued log equals the log of an uninterrupted run.
    """

    def __init__(self, run_dir: Path, keep_until: int | None = None):
        self.jsonl = Path(run_dir) / METRICS_JSONL
        self.csv = Path(run_dir) / METRICS_CSV
        self.rows: list[dict] = []
        if keep_until is not None and self.jsonl.exists():
            rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
            self.rows = [row for row in rows if row["step"] <= keep_until]
        atomic_write_text(self.jsonl, "".join(json.dumps(row) + "\n" for row in self.rows))
        self._write_csv()

    def write(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self._write_csv()

    def _write_csv(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv, buffer.getvalue())


def import_wandb(mode: str):
    """wandb, imported only when asked for; a clear error when it is not installed."""
    try:
        import wandb
    except ImportError:
        raise FrozenDTError(f"--wandb {mode} needs the wandb package: pip install 'frozen-dt[wandb]'") from None
    return wandb


class WandbSink:
    """Mirror metric rows to Weights & Biases (``mode`` offline or online)."""

    def __init__(self, mode: str, run_dir: Path, config: dict):
        self.run = import_wandb(mode).init(project="frozen-dt", mode=mode, dir=str(run_dir), config=config,
                              name=f"{config.get('task')}/{config.get('algo')}/{Path(run_dir).name}")

    def write(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        self.run.finish()
