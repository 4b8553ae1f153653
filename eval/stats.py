"""Aggregate statistics over runs (seeds) and tasks, with rliable's stratified bootstrap confidence intervals.

Scores come as a matrix ``(n_runs, n_tasks)``: one row per run (seed), one column per task, each entry the run's
mean score over its evaluation episodes. Aggregates (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice"): mean, median (of the per-run task means), IQM (mean of the middle 50 % of all run x task scores).

The confidence interval is rliable's default: a stratified independent bootstrap (runs are resampled with
replacement *within* each task, independently across tasks), the aggregate recomputed on each resample, and the
percentile interval of those ``reps`` values. ``rliable`` itself is not a dependency (see the issue: it did not
import against the arch/pandas versions installed here); this is the same method on numpy.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

REPS = 50_000  # rliable's default number of bootstrap resamples
CONFIDENCE = 0.95


def as_matrix(scores) -> np.ndarray:
    m = np.asarray(scores, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"scores must be (n_runs, n_tasks) with at least one of each, got shape {m.shape}")
    return m


def aggregate_mean(m: np.ndarray) -> np.ndarray:
    return m.mean(axis=(-2, -1))


def aggregate_median(m: np.ndarray) -> np.ndarray:
    return np.median(m.mean(axis=-1), axis=-1)


def aggregate_iqm(m: np.ndarray) -> np.ndarray:
    """Interquartile mean of all run x task scores (scipy's trim_mean with 25 % cut at each end, as rliable)."""
    flat = m.reshape(*m.shape[:-2], -1)
    return scipy_stats.trim_mean(flat, proportiontocut=0.25, axis=-1)


AGGREGATES = {"mean": aggregate_mean, "median": aggregate_median, "iqm": aggregate_iqm}


def stratified_bootstrap_ci(scores, aggregate=aggregate_mean, *, reps: int = REPS, confidence: float = CONFIDENCE,
                            seed: int = 0, chunk: int = 5_000) -> tuple[float, float]:
    """Percentile CI of ``aggregate`` under a stratified (per-task) bootstrap of the runs."""
    m = as_matrix(scores)
    n_runs, n_tasks = m.shape
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, reps, chunk):
        size = min(chunk, reps - start)
        rows = rng.integers(0, n_runs, size=(size, n_runs, n_tasks))  # each task's runs resampled independently
        resampled = np.take_along_axis(np.broadcast_to(m, (size, n_runs, n_tasks)), rows, axis=1)
        values.append(aggregate(resampled))
    values = np.concatenate(values)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def summarize_runs(scores, *, reps: int = REPS, seed: int = 0) -> dict:
    """mean, median, IQM and the 95 % stratified bootstrap CI of the mean, for a (runs, tasks) score matrix."""
    m = as_matrix(scores)
    low, high = stratified_bootstrap_ci(m, aggregate_mean, reps=reps, seed=seed)
    return {"n_runs": int(m.shape[0]), "n_tasks": int(m.shape[1]), "mean": float(aggregate_mean(m)),
            "median": float(aggregate_median(m)), "iqm": float(aggregate_iqm(m)), "ci_low": low, "ci_high": high}


def seed_summary(episode_scores: list) -> dict:
    """Summary of one configuration from its runs' per-episode scores (one array per seed).

    With two or more seeds, every statistic is over the seeds' mean scores (the CI is the stratified bootstrap over
    seeds). With one seed the CI can only speak for its episodes: mean and IQM are still the seed's mean (so one
    seed's IQM is its mean, not an episode IQM), the CI is the bootstrap over its episodes. ``ci_over`` says which.
    """
    per_run = [np.asarray(s, dtype=np.float64) for s in episode_scores]
    if not per_run or any(len(s) == 0 for s in per_run):
        raise ValueError("every run needs at least one episode score")
    means = np.array([s.mean() for s in per_run])
    if len(per_run) >= 2:
        summary, ci_over = summarize_runs(means[:, None]), "seeds"
    else:
        summary, ci_over = summarize_runs(per_run[0][:, None]), "episodes (one seed)"
        summary.update(mean=float(means[0]), median=float(means[0]), iqm=float(means[0]))
    summary.update(ci_over=ci_over, n_seeds=len(per_run), n_episodes=int(sum(len(s) for s in per_run)))
    return summary
