"""What ``frozen-dt train`` says at its end besides the scores (its own and, with ``--reference``, a reference
algorithm's trained on the same data): the data's own level, and how the run's scale compares with its recipe's.

Every figure is computed in the command that prints it: the level from the dataset's episodes, the reference by
training it there, the time from the run's own clock.
"""

from __future__ import annotations

import dataclasses
import time

FULL_EVAL_EPISODES = 100  # what the DT paper evaluates per target, and the leaderboard's full scale
SCALE_SETTINGS = ("steps", "batch_size", "backbone", "layers", "context")  # what sets the compute of a run
BOOKKEEPING = ("task", "algo", "seed", "seeds", "log_every", "eval_every", "eval_episodes", "eval_max_steps",
               "save_every", "device", "compile", "device_sampling", "env_version", "config", "run_dir", "resume",
               "download", "dataset", "wandb", "reference")  # settings that are not part of a recipe's scale or method


def data_level_line(task, dataset) -> str | None:
    """The dataset's mean normalized episode return (locomotion tasks), the level behaviour cloning aims at."""
    if task.score_type != "normalized" or dataset.rewards is None:
        return None
    summary = dataset.summary(task)
    return (f"frozen-dt: the data's own level: normalized return {summary['normalized_return_mean']:.1f} (mean over its "
            f"{summary['n_episodes']:,} episodes, {dataset.source.get('kind', 'file')} data)")


def scale_line(settings, elapsed: float) -> str:
    """Which settings make this run smaller than its recipe's, and what the recipe would cost at this run's rate."""
    from frozen_dt.config import RunConfig
    from frozen_dt.training.recipes import apply_recipes

    run = settings.run
    fields = dataclasses.fields(RunConfig) + dataclasses.fields(settings.spec.config)
    defaults = {f.name: f.default for f in fields}
    full, _ = apply_recipes({**defaults, "task": run.task, "algo": run.algo}, frozenset({"task", "algo"}))
    smaller = [f"{name} {settings.get(name)} (recipe {full.get(name)})" for name in SCALE_SETTINGS
               if settings.get(name) is not None and settings.get(name) != full.get(name)]
    if run.eval_episodes < FULL_EVAL_EPISODES:
        smaller.append(f"{run.eval_episodes} evaluation episodes per target ({FULL_EVAL_EPISODES})")
    other = [f"{f.name} {settings.get(f.name)} (recipe {full.get(f.name)})" for f in fields
             if f.name not in BOOKKEEPING + SCALE_SETTINGS and settings.get(f.name) != full.get(f.name)]
    if not smaller:
        return "frozen-dt: full scale" + (f", with settings other than the recipe's: {', '.join(other)}" if other else "")
    rate = elapsed / max(run.steps, 1)
    changed = f"; also {', '.join(other)}" if other else ""
    return (f"frozen-dt: REDUCED SCALE: {', '.join(smaller)}{changed}. The full recipe is 'frozen-dt train {run.task} --algo "
            f"{run.algo}'; this run took {elapsed:.0f} s here ({rate:.3g} s per step, evaluation included), so the "
            f"recipe's {full.run.steps:,} steps alone would take about {duration(rate * full.run.steps)} here at this "
            "run's size per step, more at the recipe's; on a GPU: --device cuda (docs/gpu.md)")


def duration(seconds: float) -> str:
    """A length of time as a reader wants it: seconds under 2 minutes, minutes under 2 hours, then hours (one
    decimal under 10)."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 10 else f"{hours:,.0f} h"


class Clock:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
