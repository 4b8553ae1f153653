"""Aggregate statistics over runs (seeds) and tasks, with rliable's stratified bootstrap confidence intervals.

Scores come as a matrix ``(n_runs, n_tasks)``: one row per run (seed), one column per task, each entry the run's
mean score over its evaluation episodes. Aggregates (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice"): mean, median (of the per-run task means), IQM (mean of the middle 50 % of all run x task scores).

The confidence interval is rliable's default: a stratified independent bootstrap (runs are resampled with
replacement *within* each task, independently across tasks), the aggregate recomputed on each resample, and the
percentile interval of those ``reps`` values. ``rliable`` itself is not a dependency (see the issue: it did not
import against the arch/pandas versions installed here); this is the same method on numpy.

With fewer than :data:`MIN_BOOTSTRAP_SEEDS` seeds a bootstrap percentile interval cannot reach its nominal coverage
(with two seeds it is the [min, max] of the two means, which covers the true mean about half the time), so
:func:`seed_summary` gives the per-seed means and a Student-t interval over them instead (95 % coverage if the seed
means are normal; ``ci_over`` says ``t over n seeds``).

**Probability of improvement** (:func:`probability_of_improvement`, rliable's definition): P(X > Y) for a random
run X of arm x and Y of arm y, estimated over all pairs of runs with ties counting one half (the Mann-Whitney U
statistic divided by n_x * n_y); its CI is the percentile interval of the independent bootstrap of both arms' runs.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

REPS = 50_000  # rliable's default number of bootstrap resamples
CONFIDENCE = 0.95
MIN_BOOTSTRAP_SEEDS = 5  # below this, seed_summary's interval is a t-interval over the seeds


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


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval for the mean of ``values`` (n >= 2): mean +- t_{n-1} * sd / sqrt(n)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ValueError("a t-interval needs at least two values")
    half = scipy_stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def welch_difference(x, y, confidence: float = CONFIDENCE) -> dict | None:
    """Welch's t-test of mean(x) = mean(y) and the t-interval of mean(x) - mean(y) (scipy's ``ttest_ind`` with
    unequal variances): {"difference", "t", "df", "p", "ci", "n"}; None with fewer than 2 values a side or no spread."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if min(x.size, y.size) < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):  # equal values' var() can be 1e-32, not 0
        return None
    result = scipy_stats.ttest_ind(x, y, equal_var=False)
    low, high = result.confidence_interval(confidence)
    return {"difference": float(x.mean() - y.mean()), "t": float(result.statistic), "df": float(result.df),
            "p": float(result.pvalue), "ci": [float(low), float(high)], "n": [int(x.size), int(y.size)]}


def probability_of_improvement(x, y) -> float:
    """rliable's P(X > Y): the fraction of run pairs (x_i, y_j) with x_i > y_j, ties counting 1/2."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        raise ValueError("probability of improvement needs runs in both arms")
    diff = x[:, None] - y[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def probability_of_improvement_ci(x, y, *, reps: int = 10_000, confidence: float = CONFIDENCE,
                                  seed: int = 0) -> tuple[float, float, float]:
    """(P(X > Y), low, high): the percentile CI of the independent bootstrap of each arm's runs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    point = probability_of_improvement(x, y)
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, x.size, size=(reps, x.size))]
    ys = y[rng.integers(0, y.size, size=(reps, y.size))]
    diff = xs[:, :, None] - ys[:, None, :]
    values = ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(1, 2))
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return point, float(low), float(high)


def seed_summary(episode_scores: list) -> dict:
    """Summary of one configuration from its runs' per-episode scores (one array per seed).

    With :data:`MIN_BOOTSTRAP_SEEDS` or more seeds, every statistic is over the seeds' mean scores and the CI is the
    stratified bootstrap over seeds. With 2 to 4 seeds the CI is a Student-t interval over the seed means (its n
    in ``ci_over``), since a bootstrap of so few values under-covers. With one seed the CI can only speak for its
    episodes: mean and IQM are still the seed's mean (so one seed's IQM is its mean, not an episode IQM), the CI is
    the bootstrap over its episodes. ``ci_over`` says which; ``per_seed`` holds the seeds' means.
    """
    per_run = [np.asarray(s, dtype=np.float64) for s in episode_scores]
    if not per_run or any(len(s) == 0 for s in per_run):
        raise ValueError("every run needs at least one episode score")
    means = np.array([s.mean() for s in per_run])
    if len(per_run) >= MIN_BOOTSTRAP_SEEDS:
        summary, ci_over = summarize_runs(means[:, None]), f"seeds (bootstrap, n={len(per_run)})"
    elif len(per_run) >= 2:
        summary, ci_over = summarize_runs(means[:, None], reps=1), f"t over {len(per_run)} seeds"
        summary["ci_low"], summary["ci_high"] = t_interval(means)
    else:
        summary, ci_over = summarize_runs(per_run[0][:, None]), "episodes (one seed)"
        summary.update(mean=float(means[0]), median=float(means[0]), iqm=float(means[0]))
    summary.update(ci_over=ci_over, n_seeds=len(per_run), n_episodes=int(sum(len(s) for s in per_run)),
                   per_seed=[float(m) for m in means])
    return summary
