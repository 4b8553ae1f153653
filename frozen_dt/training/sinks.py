"""Where the trainer's metric rows go: one small protocol, CSV/JSONL always, Weights & Biases when asked.

A :class:`Sink` is told the step a run starts from (0, or the checkpoint's step on resume), receives every row
(a dict with ``step``) and is closed at the end, also after an interruption.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_write_text
from frozen_dt.run_dir import read_jsonl, write_csv

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"


class Sink(Protocol):
    def start(self, step: int) -> None: ...
    def write(self, row: dict) -> None: ...
    def close(self) -> None: ...


class MetricsLog:
    """Rows in ``metrics.jsonl`` (appended, flushed per row) and ``metrics.csv`` (rewritten per row with the union
    of the columns seen so far, so rows with and without evaluation share one header).

    On resume (``start(step)`` with the checkpoint's step), rows after that step (written after the checkpoint the
    run continues from) are dropped, so the continued log equals the log of an uninterrupted run.
    """

    def __init__(self, run_dir: Path):
        self.jsonl = Path(run_dir) / METRICS_JSONL
        self.csv = Path(run_dir) / METRICS_CSV
        self.rows: list[dict] = []

    def start(self, step: int) -> None:
        self.rows = []
        if step > 0:
            self.rows = [row for row in read_jsonl(self.jsonl) if row["step"] <= step]
        atomic_write_text(self.jsonl, "".join(json.dumps(row) + "\n" for row in self.rows))
        write_csv(self.csv, self.rows)

    def write(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        write_csv(self.csv, self.rows)

    def close(self) -> None:
        pass


def import_wandb(mode: str):
    """wandb, imported only when asked for; a clear error when it is not installed."""
    try:
        import wandb
    except ImportError:
        raise FrozenDTError(f"--wandb {mode} needs the wandb package: pip install 'frozen-dt[wandb]'") from None
    return wandb


def wandb_run_name(config: dict, run_dir: Path) -> str:
    """``<task>/<algo>/<run dir name>``."""
    args = config.get("args", {})
    return f"{args.get('task')}/{args.get('algo')}/{Path(run_dir).name}"


class WandbSink:
    """Mirror metric rows to Weights & Biases (``mode`` offline or online); the run's config.json is its config."""

    def __init__(self, mode: str, run_dir: Path, config: dict):
        self.mode, self.run_dir, self.config = mode, Path(run_dir), config
        self.run = None

    def start(self, step: int) -> None:
        self.run = import_wandb(self.mode).init(project="frozen-dt", mode=self.mode, dir=str(self.run_dir),
                                                config=self.config, name=wandb_run_name(self.config, self.run_dir))

    def write(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
