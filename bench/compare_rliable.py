"""Our stratified bootstrap (eval/stats.py) against rliable's on the same score matrices: CIs and time.

Needs an environment where rliable imports (measured: rliable 1.2.0 fails with arch 7.2 / pandas 3.1, imports
with arch 7.0.0 / pandas 2.3.3). eval/stats.py is loaded from its file, so frozen-dt need not be installed there:

    python -m venv /tmp/rl && /tmp/rl/bin/pip install rliable "arch<7.1" "pandas<3"
    /tmp/rl/bin/python bench/compare_rliable.py
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
from rliable import library as rly
from rliable import metrics

spec = importlib.util.spec_from_file_location("stats", Path(__file__).resolve().parent.parent / "eval" / "stats.py")
stats = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stats)


def main() -> None:
    rng = np.random.default_rng(0)
    cases = {"5 seeds x 1 task": rng.normal(60, 12, size=(5, 1)),
             "3 seeds x 4 tasks": rng.normal(60, 12, size=(3, 4)) + np.array([0, 20, -20, 10]),
             "10 seeds x 9 tasks": rng.uniform(0, 100, size=(10, 9))}
    reps = 50_000
    for name, m in cases.items():
        for agg_name, ours_fn, theirs_fn in (("mean", stats.aggregate_mean, metrics.aggregate_mean),
                                             ("iqm", stats.aggregate_iqm, metrics.aggregate_iqm)):
            start = time.perf_counter()
            ours = stats.stratified_bootstrap_ci(m, ours_fn, reps=reps, seed=1)
            t_ours = time.perf_counter() - start
            start = time.perf_counter()
            _, ci = rly.get_interval_estimates({"x": m}, lambda s: np.array([theirs_fn(s)]), reps=reps)
            t_theirs = time.perf_counter() - start
            theirs = (float(ci["x"][0, 0]), float(ci["x"][1, 0]))
            print(f"{name:20s} {agg_name:4s}: ours [{ours[0]:.2f}, {ours[1]:.2f}] in {t_ours:.2f} s; "
                  f"rliable [{theirs[0]:.2f}, {theirs[1]:.2f}] in {t_theirs:.2f} s; "
                  f"max endpoint difference {max(abs(ours[0] - theirs[0]), abs(ours[1] - theirs[1])):.2f}")


if __name__ == "__main__":
    main()
