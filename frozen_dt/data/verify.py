"""``frozen-dt data verify TASK``: a dataset's size and return statistics beside the published D4RL dataset's
(:data:`frozen_dt.envs.registry.D4RL_DATASET_STATS`), and whether it stands in for it.

Within tolerance means: the mean normalized episode return within :data:`MEAN_TOLERANCE` points of D4RL's, and as
many transitions as D4RL's file holds (within :data:`SIZE_TOLERANCE`). The spread of episode returns (normalized
std) is reported beside D4RL's but not judged: D4RL's own levels differ in it by a factor of three.
"""

from __future__ import annotations

from frozen_dt.envs.registry import D4RL_STATS_SOURCE, Task
from frozen_dt.errors import FrozenDTError

MEAN_TOLERANCE = 5.0  # normalized points
SIZE_TOLERANCE = 0.01  # relative difference in transitions


def reference(task: Task):
    """The published statistics ``task``'s dataset is compared with (an error for tasks without)."""
    if task.d4rl is None:
        raise FrozenDTError(f"{task.name}: there are no published D4RL statistics to compare with (D4RL's v2 "
                            "datasets of hopper, walker2d and halfcheetah have them)")
    return task.d4rl


def compare(dataset, task: Task) -> dict:
    """Our statistics, D4RL's, their differences and the verdict (``within_tolerance``)."""
    from frozen_dt.eval.scores import normalized_score

    ref = reference(task)
    if dataset.rewards is None:
        raise FrozenDTError(f"{task.name}: the dataset has no rewards, so no returns to compare")
    returns = dataset.episode_returns()
    norm = normalized_score(task, returns)
    span = task.ref_max - task.ref_min
    ours = {"transitions": int(dataset.n_transitions), "episodes": int(dataset.n_episodes),
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "normalized_mean": float(norm.mean()), "normalized_std": float(norm.std())}
    d4rl = {"transitions": ref.file_transitions, "episodes": ref.episodes, "return_mean": ref.return_mean,
            "return_std": ref.return_std, "normalized_mean": float(normalized_score(task, ref.return_mean)),
            "normalized_std": 100.0 * ref.return_std / span}
    mean_gap = ours["normalized_mean"] - d4rl["normalized_mean"]
    size_gap = (ours["transitions"] - d4rl["transitions"]) / d4rl["transitions"]
    checks = {"normalized_mean": bool(abs(mean_gap) <= MEAN_TOLERANCE),
              "transitions": bool(abs(size_gap) <= SIZE_TOLERANCE)}
    return {"task": task.name, "source": dataset.source.get("kind"), "path": dataset.source.get("path"),
            "generated": _generated_from(dataset.source), "ours": ours, "d4rl": d4rl,
            "d4rl_source": D4RL_STATS_SOURCE, "d4rl_transitions_in_complete_episodes": ref.transitions,
            "tolerance": {"normalized_mean": MEAN_TOLERANCE, "transitions_relative": SIZE_TOLERANCE},
            "checks": checks, "within_tolerance": all(checks.values())}


def _generated_from(source: dict) -> list[str] | None:
    generated = source.get("generated") or {}
    return [p.get("file") for p in generated.get("policies", [])] or None


def report_lines(result: dict) -> list[str]:
    """The comparison as the table ``frozen-dt data verify`` prints."""
    ours, d4rl = result["ours"], result["d4rl"]
    made = f" from {', '.join(result['generated'])}" if result["generated"] else ""
    lines = [f"{result['task']}: {result['source']} dataset{made} ({result['path']})",
             f"  vs D4RL: {result['d4rl_source']}",
             f"  {'':18s}{'ours':>14s}{'d4rl':>14s}{'difference':>14s}"]
    for key, fmt in (("transitions", "{:.0f}"), ("episodes", "{:.0f}"), ("return_mean", "{:.1f}"),
                     ("return_std", "{:.1f}"), ("normalized_mean", "{:.1f}"), ("normalized_std", "{:.1f}")):
        diff = ours[key] - d4rl[key]
        mark = ""
        if key in result["checks"]:
            mark = "  ok" if result["checks"][key] else "  OUTSIDE TOLERANCE"
        lines.append(f"  {key:18s}{fmt.format(ours[key]):>14s}{fmt.format(d4rl[key]):>14s}"
                     f"{('+' if diff >= 0 else '') + fmt.format(diff):>14s}{mark}")
    tol = result["tolerance"]
    verdict = "within tolerance" if result["within_tolerance"] else "NOT within tolerance"
    lines.append(f"  {verdict} (normalized mean within {tol['normalized_mean']:g} points, transitions within "
                 f"{100 * tol['transitions_relative']:g} %)")
    return lines
