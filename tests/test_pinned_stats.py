"""The evaluation statistics (and the D4RL normalization) pinned by exact values (the bootstrap's resampling unit, the aggregates, the summaries'
counts and refusals), computed by hand where the distribution of the resampled aggregate is small enough to write
down. Each test names the one-line mutations it kills; ``tests/mutations.py`` applies the ones that matter most."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as scipy_stats

from frozen_dt.envs.registry import get_task
from frozen_dt.eval.scores import normalized_score
from frozen_dt.eval.stats import (aggregate_iqm, aggregate_median, as_matrix, probability_of_improvement,
                                  probability_of_improvement_ci, seed_summary, stratified_bootstrap_ci, summarize_runs,
                                  t_interval, welch_difference)


# --- the bootstrap's resampling unit ---------------------------------------------------------------------------


def test_across_seed_interval_resamples_seeds_not_episodes():
    """Five seeds whose episodes spread from 0 to 40 but whose means are all 20: every bootstrap resample of the seeds
    has mean 20, so the interval over seeds is exactly [20, 20]; resampling the 50 episodes would give a wide one.
    With distinct seed means the interval is the stratified bootstrap of the seed means themselves. Kills: episodes
    pooled into the across-seed summary, the interval taken over the wrong unit."""
    spreads = [20.0, 15.0, 10.0, 5.0, 2.5]
    summary = seed_summary([np.array([20.0 - d, 20.0 + d] * 5) for d in spreads])
    assert (summary["ci_low"], summary["ci_high"]) == (20.0, 20.0)
    assert "seeds" in summary["ci_over"] and summary["n_seeds"] == 5 and summary["n_episodes"] == 50
    assert summary["per_seed"] == [20.0] * 5 and summary["mean"] == 20.0 and summary["median"] == 20.0
    episodes = [np.array([0.0, 20.0] * 5) + 10.0 * i for i in range(5)]  # seed means 10, 20, 30, 40, 50
    summary = seed_summary(episodes)
    means = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    assert (summary["ci_low"], summary["ci_high"]) == stratified_bootstrap_ci(means[:, None])
    assert (summary["ci_low"], summary["ci_high"]) != stratified_bootstrap_ci(np.concatenate(episodes)[:, None])


def test_two_to_four_seeds_get_a_t_interval_over_the_seed_means_not_their_episodes():
    """Two seeds with means 20 and 40: 30 +- t(0.975, 1) * sd / sqrt(2); two seeds with equal means and spread-out
    episodes: exactly [30, 30] (the episodes' spread is not the seeds')."""
    summary = seed_summary([np.array([0.0, 40.0] * 5), np.array([20.0, 60.0] * 5)])
    half = scipy_stats.t.ppf(0.975, 1) * np.std([20.0, 40.0], ddof=1) / np.sqrt(2)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((30.0 - half, 30.0 + half), rel=1e-12)
    assert summary["n_seeds"] == 2 and summary["mean"] == 30.0
    summary = seed_summary([np.array([0.0, 60.0] * 5), np.array([20.0, 40.0] * 5), np.array([10.0, 50.0] * 5)])
    assert (summary["ci_low"], summary["ci_high"]) == (30.0, 30.0) and summary["n_seeds"] == 3


def test_few_seeds_get_a_t_interval_over_their_means():
    """3 seeds (means 10, 20, 30: sd 10): mean +- t(0.975, 2 df) * 10 / sqrt(3), the per-seed means beside it; a
    bootstrap of three means would be their [min, max] (each extreme resample has probability 1/27 > 2.5 %).
    Kills: the t-interval over the 30 episodes, a bootstrap below 5 seeds."""
    episodes = [np.array([0.0, 20.0] * 5), np.array([10.0, 30.0] * 5), np.array([20.0, 40.0] * 5)]  # means 10, 20, 30
    summary = seed_summary(episodes)
    half = 4.302652729911275 * 10.0 / np.sqrt(3)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((20.0 - half, 20.0 + half))
    assert summary["ci_over"] == "t over 3 seeds" and summary["per_seed"] == [10.0, 20.0, 30.0]
    four = seed_summary([np.array([m]) for m in (10.0, 20.0, 30.0, 40.0)])  # 4 seeds: still t; 5: the bootstrap
    assert four["ci_over"] == "t over 4 seeds" and (four["ci_low"], four["ci_high"]) == t_interval([10, 20, 30, 40])
    assert seed_summary([np.array([m]) for m in (10.0, 20.0, 30.0, 40.0, 50.0)])["ci_over"] == "seeds (bootstrap, n=5)"


def test_one_seed_interval_is_over_its_episodes_and_its_statistics_its_mean():
    """One seed: mean, median and IQM are its episodes' mean; the interval is the bootstrap over its episodes (two
    episodes 0 and 100: each resample's mean is 0, 50 or 100 with probabilities 1/4, 1/2, 1/4)."""
    summary = seed_summary([np.array([0.0, 100.0])])
    assert (summary["mean"], summary["median"], summary["iqm"]) == (50.0, 50.0, 50.0)
    assert (summary["ci_low"], summary["ci_high"]) == (0.0, 100.0)
    assert summary["ci_over"] == "episodes (one seed)" and summary["n_seeds"] == 1 and summary["n_episodes"] == 2


def test_stratified_bootstrap_draws_each_tasks_runs_independently():
    """Runs (0, 1) and (1, 0) on two tasks: the same rows drawn for both tasks make every resample's mean 0.5;
    independent draws per task give 0 and 1 with probability 1/16 > 2.5 % each, so the 95 % interval is exactly
    [0, 1]. Kills: one draw of runs shared by all tasks."""
    assert stratified_bootstrap_ci([[0.0, 1.0], [1.0, 0.0]], reps=20_000) == (0.0, 1.0)


def test_stratified_bootstrap_interval_is_the_percentile_interval_of_the_resampled_aggregate():
    """Per resample the aggregate sees (reps, runs, tasks) with rows drawn from the task's own runs; the interval is
    the 2.5 % and 97.5 % quantiles of those values (recomputed here from the same generator)."""
    m = np.array([[1.0, 5.0], [2.0, 7.0], [4.0, 6.0]])
    seen = []

    def record(resampled):
        seen.append(resampled.copy())
        return resampled.mean(axis=(-2, -1))

    low, high = stratified_bootstrap_ci(m, aggregate=record, reps=1000, chunk=400, seed=7)
    rng = np.random.default_rng(7)
    values = []
    for size in (400, 400, 200):
        rows = rng.integers(0, 3, size=(size, 3, 2))
        values.append(np.stack([m[rows[..., j], j] for j in range(2)], -1).mean(axis=(-2, -1)))
    values = np.concatenate(values)
    np.testing.assert_array_equal(np.concatenate([v.mean(axis=(-2, -1)) for v in seen]), values)
    assert (low, high) == tuple(np.quantile(values, [0.025, 0.975]))


def test_seed_summary_refuses_no_runs_and_runs_without_episodes_but_takes_one_episode():
    with pytest.raises(ValueError, match="at least one episode"):
        seed_summary([])
    with pytest.raises(ValueError, match="at least one episode"):
        seed_summary([np.array([1.0, 2.0]), np.array([])])
    assert seed_summary([np.array([5.0])])["mean"] == 5.0


def test_score_matrices_need_a_run_and_a_task_and_one_run_is_enough():
    for shape in [(0, 3), (3, 0), (2, 2, 2)]:
        with pytest.raises(ValueError, match="n_runs, n_tasks"):
            as_matrix(np.zeros(shape))
    assert as_matrix([[1.0, 2.0, 3.0]]).shape == (1, 3) and as_matrix([1.0, 2.0]).shape == (2, 1)


def test_summary_counts_runs_and_tasks():
    summary = summarize_runs(np.arange(6.0).reshape(3, 2), reps=100)
    assert (summary["n_runs"], summary["n_tasks"]) == (3, 2)


def test_median_and_iqm_act_on_each_resample_of_a_batch():
    """The bootstrap calls the aggregates on (resamples, runs, tasks): the median is over each resample's per-run task
    means, the IQM over each resample's run x task scores, resample by resample."""
    a = np.array([[0.0, 10.0], [1.0, 1.0], [2.0, 20.0]])  # run means 5, 1, 11: median 5 (task means 1, 10.3)
    b = np.array([[4.0, 4.0], [0.0, 2.0], [9.0, 9.0]])  # run means 4, 1, 9: median 4
    assert aggregate_median(a) == 5.0
    np.testing.assert_array_equal(aggregate_median(np.stack([a, b])), [5.0, 4.0])
    iqm = [float(np.sort(x.ravel())[1:-1].mean()) for x in (a, b)]  # 6 scores: scipy cuts int(0.25 * 6) = 1 each end
    assert iqm == [3.5, 4.75]
    np.testing.assert_array_equal(aggregate_iqm(np.stack([a, b])), iqm)


# --- D4RL normalization -----------------------------------------------------------------------------------------


def test_a_task_missing_either_reference_score_has_no_normalized_score():
    """A task with only one of the two D4RL references (or neither) refuses to normalize rather than compute with a
    None. Kills: ``or`` -> ``and`` in the check."""
    hopper = get_task("hopper-medium-v2")
    for task in (replace(hopper, ref_max=None), replace(hopper, ref_min=None), replace(hopper, ref_min=None,
                                                                                        ref_max=None)):
        with pytest.raises(ValueError, match="no D4RL reference scores"):
            normalized_score(task, 100.0)
    assert normalized_score(hopper, [hopper.ref_min, hopper.ref_max]).tolist() == [0.0, 100.0]


# --- two arms: the t-interval, Welch's difference, rliable's probability of improvement -----------------------------


def test_t_interval_is_mean_plus_minus_t_quantile_times_standard_error():
    """Kills: the quantile's level or degrees of freedom, sd without ddof=1, the sqrt(n), the n >= 2 bound."""
    low, high = t_interval([1.0, 2.0, 3.0])
    half = scipy_stats.t.ppf(0.975, 2) / np.sqrt(3)  # t_{0.975, 2} (4.303) * sd 1 / sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half), abs=1e-12)
    t1 = scipy_stats.t.ppf(0.975, 1)  # 12.71 * sd sqrt(2) / sqrt(2)
    assert t_interval([1.0, 3.0]) == pytest.approx((2 - t1, 2 + t1), abs=1e-12)
    half90 = scipy_stats.t.ppf(0.95, 2) / np.sqrt(3)
    assert t_interval([1.0, 2.0, 3.0], confidence=0.9) == pytest.approx((2 - half90, 2 + half90), abs=1e-12)
    with pytest.raises(ValueError, match="two values"):
        t_interval([1.0])


def test_welch_difference_is_the_welch_satterthwaite_t_test_and_interval():
    """Computed by hand: difference of means, t = d / sqrt(s1^2/n1 + s2^2/n2), Welch-Satterthwaite df, two-sided p
    and the t-interval on the difference. None with one value a side or no spread at all, a result with spread on
    one side only. Kills: the difference's sign, the refusal bounds, the variance test's constant."""
    x, y = np.array([1.0, 2.0, 4.0, 7.0]), np.array([0.0, 1.0, 1.5])
    v1, v2 = x.var(ddof=1) / 4, y.var(ddof=1) / 3
    d, se = x.mean() - y.mean(), np.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / 3 + v2 ** 2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * se
    result = welch_difference(x, y)
    assert result["difference"] == pytest.approx(d, abs=1e-12) and result["n"] == [4, 3]
    assert result["t"] == pytest.approx(d / se) and result["df"] == pytest.approx(df)
    assert result["p"] == pytest.approx(2 * scipy_stats.t.sf(d / se, df))
    assert result["ci"] == pytest.approx([d - half, d + half])
    assert welch_difference(y, x)["difference"] == pytest.approx(-d, abs=1e-12)
    assert welch_difference([1.0], [2.0, 3.0]) is None and welch_difference([1.0, 2.0], [3.0]) is None
    assert welch_difference([1.0, 1.0], [2.0, 2.0]) is None  # no spread: no test
    assert welch_difference([0.8] * 3, [0.7] * 3) is None  # np.var([0.7] * 3) is 1.2e-32: still no spread
    assert welch_difference([0.0, 2.0], [5.0, 7.0])["difference"] == -5.0  # equal (nonzero) variances: a test
    one_sided_spread = welch_difference([0.0, 2.0], [5.0, 5.0])  # population variances 1.0 + 0.0
    assert one_sided_spread is not None and one_sided_spread["difference"] == -4.0


def test_probability_of_improvement_counts_pairs_with_ties_as_one_half():
    """Kills: ties counted 0 or 1, the pair difference's sign, the refusal of an empty arm (one run is enough)."""
    assert probability_of_improvement([3, 4], [1, 2]) == 1.0
    assert probability_of_improvement([1, 2], [3, 4]) == 0.0
    assert probability_of_improvement([1, 2], [1, 2]) == 0.5
    assert probability_of_improvement([1, 3], [2]) == 0.5 and probability_of_improvement([2], [1, 3]) == 0.5
    x, y = [0.1, 0.5, 0.7, 0.9], [0.2, 0.3, 0.6]
    assert probability_of_improvement(x, y) == pytest.approx(scipy_stats.mannwhitneyu(x, y).statistic / 12)
    for empty in (([], [1.0]), ([1.0], [])):
        with pytest.raises(ValueError, match="both arms"):
            probability_of_improvement(*empty)


def test_probability_of_improvement_ci_is_the_percentile_interval_of_each_arms_own_bootstrap():
    """The interval recomputed by a loop over the same draws (each arm's runs resampled on their own, x first), with
    ties in the data so that the tie weight shows. Kills: the tie weight, the pair difference, the draws' sizes,
    the quantile levels."""
    x, y = np.array([1.0, 2.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    reps, seed = 300, 7
    rng = np.random.default_rng(seed)
    ix, iy = rng.integers(0, 4, size=(reps, 4)), rng.integers(0, 3, size=(reps, 3))
    values = [probability_of_improvement(x[i], y[j]) for i, j in zip(ix, iy)]
    point, low, high = probability_of_improvement_ci(x, y, reps=reps, seed=seed)
    assert point == probability_of_improvement(x, y) == pytest.approx(7.5 / 12)
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])), abs=1e-12)
    assert probability_of_improvement_ci([5, 6, 7], [1, 2, 3], reps=200) == (1.0, 1.0, 1.0)
    narrow = probability_of_improvement_ci(x, y, reps=reps, seed=seed, confidence=0.5)
    assert (narrow[1], narrow[2]) == pytest.approx(tuple(np.quantile(values, [0.25, 0.75])), abs=1e-12)
