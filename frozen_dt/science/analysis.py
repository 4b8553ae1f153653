"""The pre-registered tests of the recall study (``results/science/PROTOCOL.md``).

Per run: the **final error** (per-bit test error at the fixed length, mean of the last ``last_evals`` evaluations:
the primary metric), the final error at the longer length, **solved** (final error at most ``solve_fraction`` x the
no-recall error) and **steps to threshold** (first evaluation at or under that bar; censored at the step budget).

Per comparison of the pretrained arm with another arm (lower error = better):

* primary: one-sided exact Mann-Whitney U on the final errors (H1: pretrained lower; exact also under ties:
  :func:`mann_whitney_less`); the two primary comparisons (random-init, shuffled) are Holm-adjusted together;
* Fisher's exact test on solved / unsolved (one-sided, pretrained solves more);
* exact Mann-Whitney on steps to threshold, censored runs tied at the budget + 1 (with one common censoring time
  this is Gehan's generalized Wilcoxon test);
* rliable's probability of improvement P(pretrained better) with its bootstrap 95 % CI.

Decision (:func:`verdict`): **held** when both primary comparisons reject at Holm-adjusted 0.05 and the pretrained
arm's median run solves; **refuted** when for some primary comparator the pretrained arm is not better: the
comparator solves in at least as many seeds and its median final error is at most the pretrained's, or the
reverse one-sided test rejects at 0.05; otherwise **cannot tell at this power**.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats

from frozen_dt.errors import FrozenDTError
from frozen_dt.eval.stats import probability_of_improvement_ci, t_interval
from frozen_dt.run_dir import atomic_write_text, read_json, write_json
from frozen_dt.science.train import final_error, steps_to_threshold

PRIMARY = ("random-init", "shuffled")
ALPHA = 0.05


def run_metrics(record: dict, rule: dict) -> dict:
    fixed, long = rule["fixed"], rule["long"]
    last = int(rule["last_evals"])
    norecall = record["baselines"][f"norecall_{fixed}"]
    bar = rule["solve_fraction"] * norecall
    err = final_error(record, f"err_{fixed}", last)
    reached = steps_to_threshold(record["curve"], f"err_{fixed}", bar)
    return {"seed": record["spec"]["seed"], "lr": record["spec"]["lr"], "final": err,
            "final_long": final_error(record, f"err_{long}", last), "solved": bool(err <= bar),
            "steps_to_threshold": reached, "budget": record["spec"]["steps"],
            "norecall": norecall, "bar": bar, "norecall_long": record["baselines"][f"norecall_{long}"]}


EXACT_SPLITS = 10**6  # up to this many splits of the pooled values the permutation p is exact (about 15 s)


def mann_whitney_less(x, y) -> float:
    """One-sided p of H1 'x tends to be smaller than y', exact with or without ties: U (midranks for ties) against
    its distribution over every split of the pooled values (scipy's ``method="auto"`` falls back to a normal
    approximation when values tie, as steps to threshold and errors of exactly 0 do). Beyond
    :data:`EXACT_SPLITS` splits (11 v 11 seeds and up) 100,000 seeded random splits estimate it instead."""
    exact = math.comb(len(x) + len(y), len(x)) <= EXACT_SPLITS
    method = stats.PermutationMethod(n_resamples=np.inf) if exact else \
        stats.PermutationMethod(n_resamples=100_000, rng=np.random.default_rng(0))
    return float(stats.mannwhitneyu(x, y, alternative="less", method=method).pvalue)


def fisher_more(solved_a: int, n_a: int, solved_b: int, n_b: int) -> float:
    """One-sided Fisher exact p of H1 'a solves more often than b'."""
    return float(stats.fisher_exact([[solved_a, n_a - solved_a], [solved_b, n_b - solved_b]],
                                    alternative="greater").pvalue)


def censored_steps(metrics: list[dict]) -> np.ndarray:
    return np.array([m["steps_to_threshold"] if m["steps_to_threshold"] is not None else m["budget"] + 1
                     for m in metrics], dtype=float)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (step-down, monotone)."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def seeds_for_power(x, y) -> float | None:
    """Seeds per arm a two-sided 0.05 t-test needs for 80 % power at the observed difference of means and seed
    spreads (normal approximation: (1.96 + 0.84)^2 (s_x^2 + s_y^2) / d^2); None without a difference or spread."""
    d = float(np.mean(y) - np.mean(x))
    spread = float(np.var(x, ddof=1) + np.var(y, ddof=1)) if min(len(x), len(y)) >= 2 else 0.0
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(0.8)
    return None if d == 0.0 or spread == 0.0 else float(z ** 2 * spread / d ** 2)


def compare(a: list[dict], b: list[dict]) -> dict:
    """Pretrained runs ``a`` against another arm's ``b``: the pre-registered tests, then descriptive figures (Welch's
    interval on the difference of mean final errors, b - a, and the seeds for 80 % power at it) and an exploratory
    one-sided Mann-Whitney at the longer length (not pre-registered)."""
    from frozen_dt.eval.stats import welch_difference

    xa, xb = [m["final"] for m in a], [m["final"] for m in b]
    sa, sb = sum(m["solved"] for m in a), sum(m["solved"] for m in b)
    poi, low, high = probability_of_improvement_ci([-v for v in xa], [-v for v in xb])
    return {"n": [len(a), len(b)], "p_mw": mann_whitney_less(xa, xb), "p_mw_reverse": mann_whitney_less(xb, xa),
            "solved": [sa, sb], "p_fisher": fisher_more(sa, len(a), sb, len(b)),
            "p_steps": mann_whitney_less(censored_steps(a), censored_steps(b)) if sa + sb else 1.0,
            "poi": poi, "poi_ci": [low, high], "median": [float(np.median(xa)), float(np.median(xb))],
            "welch": welch_difference(xb, xa), "seeds_for_power": seeds_for_power(xa, xb),
            "p_mw_long_exploratory": mann_whitney_less([m["final_long"] for m in a], [m["final_long"] for m in b])}


def verdict(comparisons: dict[str, dict], pretrained: list[dict]) -> str:
    adjusted = holm({k: comparisons[k]["p_mw"] for k in PRIMARY if k in comparisons})
    for k in adjusted:
        comparisons[k]["p_mw_holm"] = adjusted[k]
    if len(adjusted) < len(PRIMARY):
        return "cannot tell (primary comparators missing)"
    median_solves = float(np.median([m["final"] for m in pretrained])) <= pretrained[0]["bar"]
    if all(p < ALPHA for p in adjusted.values()) and median_solves:
        return "held"
    for k in PRIMARY:
        c = comparisons[k]
        if c["solved"][1] >= c["solved"][0] and c["median"][1] <= c["median"][0]:
            c["refutes"] = (f"{k} solves in as many seeds ({c['solved'][1]} v {c['solved'][0]}) and its median final "
                            "error is at most pretrained's" + (" (neither arm solves any seed: the medians compare "
                                                               "two arms at the no-recall level)" if not c["solved"][0]
                                                               and not c["solved"][1] else ""))
            return "refuted"
        if c["p_mw_reverse"] < ALPHA:
            c["refutes"] = f"{k}'s final error is lower (one-sided Mann-Whitney p {c['p_mw_reverse']:.4f})"
            return "refuted"
    return "cannot tell at this power"


def phase_results(spec: dict, phase: str, names: list[str] | None = None) -> list[dict]:
    """Every result file of a study phase (with ``names``, only those runs' files), in name order (none when the
    phase has not started)."""
    folder = Path(spec["results"]) / phase
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [read_json(f) for f in files if names is None or f.stem in names]


def analyze_phase(spec: dict, phase: str, expected: list[str] | None = None) -> str:
    """The phase's per-arm table, its comparisons with the pretrained arm and the pre-registered verdict, written to
    ``<results>/<phase>_analysis.{json,md}``. With ``expected`` (the names of the phase's runs) only those runs'
    files are read, and the verdict is given only once every one of them is complete (before that the comparisons
    are labelled interim). A phase with several rates per arm (a pilot) is refused: its rule is ``select``."""
    rule = spec["rule"]
    if isinstance(spec["phases"].get(phase, {}).get("arms"), dict):
        raise FrozenDTError(f"phase {phase} is a pilot (several rates per arm): its rule is 'select'; 'analyze' "
                            "compares the seeds of one rate per arm")
    records = [r for r in phase_results(spec, phase, expected) if r["status"] == "complete"]
    by_arm: dict[str, list[dict]] = {}
    for r in records:
        by_arm.setdefault(r["spec"]["arm"], []).append(run_metrics(r, rule))
    mixed = sorted(arm for arm, ms in by_arm.items() if len({m["lr"] for m in ms}) > 1)
    if mixed:
        raise FrozenDTError(f"phase {phase} has runs of {mixed[0]} at several learning rates (a pilot): its rule is "
                            "'select'; 'analyze' compares the seeds of one rate per arm")
    complete = expected is None or len(records) == len(expected)  # one file per name: every expected run
    lines = [f"# {phase}: per-bit test error at {rule['fixed']} (fixed) and {rule['long']} (longer), "
             f"mean of the last {rule['last_evals']} evaluations", ""]
    if not by_arm:
        return "no complete runs"
    any_run = next(iter(by_arm.values()))[0]
    lines += [f"No-recall baseline (majority of the L values): {rule['fixed']} {any_run['norecall']:.4f}, "
              f"{rule['long']} {any_run['norecall_long']:.4f}; solved = final error <= "
              f"{rule['solve_fraction']} x no-recall = {rule['solve_fraction'] * any_run['norecall']:.4f}.", "",
              "| arm | lr | n | per-seed final error | mean [95 % t-interval, n] | longer length mean | solved |",
              "|---|---|---|---|---|---|---|"]
    for arm, ms in sorted(by_arm.items()):
        finals = [m["final"] for m in sorted(ms, key=lambda m: m["seed"])]
        interval = "[{:.4f}, {:.4f}]".format(*t_interval(finals)) if len(finals) >= 2 else "(one seed)"
        lines.append(f"| {arm} | {ms[0]['lr']:g} | {len(ms)} | {', '.join(f'{v:.4f}' for v in finals)} | "
                     f"{np.mean(finals):.4f} {interval} | {np.mean([m['final_long'] for m in ms]):.4f} | "
                     f"{sum(m['solved'] for m in ms)}/{len(ms)} |")
    profiles = sorted({f"{r['spec']['device']}/{r['spec']['precision']}" for r in records})
    lines += ["", f"Runs: {len(records)} complete, profile(s) {', '.join(profiles)}"
              + (" (MIXED: see PROTOCOL.md)" if len(profiles) > 1 else "") + "."]
    if not complete:
        lines[-1] += f" INTERIM: {len(records)} of the phase's {len(expected)} runs are complete."
    result = {"phase": phase, "rule": rule, "arms": by_arm, "profiles": profiles,
              "complete_runs": len(records), "expected_runs": None if expected is None else len(expected)}
    if "pretrained" in by_arm and len(by_arm) > 1:
        comparisons = {arm: compare(by_arm["pretrained"], ms) for arm, ms in by_arm.items() if arm != "pretrained"}
        result["verdict"] = verdict(comparisons, by_arm["pretrained"]) if complete else None
        result["comparisons"] = comparisons
        if not complete:
            lines += ["", "Interim comparisons (not every run is complete; the tests below are not the verdict):"]
        lines += ["", "| pretrained vs | n | MW one-sided p | Holm p | Fisher p (solved) | steps-to-threshold p | "
                      "P(pretrained better) [95 % CI] |", "|---|---|---|---|---|---|---|"]
        for arm, c in comparisons.items():
            holm_p = f"{c['p_mw_holm']:.4f}" if "p_mw_holm" in c else "-"
            lines.append(f"| {arm} | {c['n'][0]} v {c['n'][1]} | {c['p_mw']:.4f} | {holm_p} | {c['p_fisher']:.4f} | "
                         f"{c['p_steps']:.4f} | {c['poi']:.2f} [{c['poi_ci'][0]:.2f}, {c['poi_ci'][1]:.2f}] |")
        lines += ["", "Descriptive and exploratory (not the pre-registered tests): the difference of mean final errors "
                      "(arm - pretrained) with Welch's 95 % t-interval, the seeds per arm a two-sided t-test would "
                      f"need for 80 % power at it, and a one-sided Mann-Whitney at {rule['long']}.", "",
                  "| pretrained vs | n | difference [Welch 95 % t-interval], p | seeds for 80 % power | "
                  f"{rule['long']} MW one-sided p (exploratory) |", "|---|---|---|---|---|"]
        for arm, c in comparisons.items():
            w = c["welch"]
            p_text = f"p {w['p']:.3f}" if w is not None and w["p"] >= 0.001 else "p < 0.001"
            welch = "no spread" if w is None else \
                f"{w['difference']:+.5f} [{w['ci'][0]:+.5f}, {w['ci'][1]:+.5f}], {p_text}"
            n = c["seeds_for_power"]
            power = "-" if n is None else "under 2" if n < 2 else f"{n:.1f}"
            lines.append(f"| {arm} | {c['n'][0]} v {c['n'][1]} | {welch} | {power} | "
                         f"{c['p_mw_long_exploratory']:.4f} |")
        reason = next((c["refutes"] for c in comparisons.values() if "refutes" in c), None)
        lines += ["", f"Verdict (pre-registered rule): **{result['verdict']}**" + (f" ({reason})" if reason else "")
                  if complete else f"Verdict (pre-registered rule): withheld until all {len(expected)} runs are "
                                   "complete"]
    text = "\n".join(lines) + "\n"
    folder = Path(spec["results"])
    write_json(folder / f"{phase}_analysis.json", result)
    atomic_write_text(folder / f"{phase}_analysis.md", text)
    return text
