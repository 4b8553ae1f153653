"""The leaderboard: evaluated runs grouped by configuration, one row each, as CSV, Markdown and figures.

A row is one configuration (every setting that changes what a run learns, :func:`frozen_dt.eval.runs.config_key`)
at one task, dataset source and checkpoint step, with every seed evaluated for it (``eval-<checkpoint>.json`` in each
run dir, written by ``frozen-dt eval``). Rows the named columns (algo, backbone, layers, init, ...) cannot
tell apart, such as a sweep over the learning rate, say in ``settings`` what differs between them (``lr=0.001``).
The score is the mean over seeds of each seed's mean over episodes at the run's primary return target; the 95 %
interval is :func:`frozen_dt.eval.stats.seed_summary`'s (``ci_over`` says which: over episodes for one seed, a
Student-t over 2-4 seeds, the stratified bootstrap over 5 or more). ``scale`` is
``reduced`` when training stopped before the recipe's full step count, or evaluation used fewer than 100 episodes
or cut them short (``frozen-dt eval --max-steps``).

With a reference (``frozen-dt leaderboard --reference dt``), every other row of a condition (task, target, dataset
source and checkpoint step) gets its difference from that condition's row of that label: the difference of the seed
means (row - reference), Welch's 95 % t-interval on it and its p, with both n (blank where either side has fewer than
2 seeds); a condition without such a row says so in each of its rows.

Figures: ``scores.png`` (score bars with CIs, per task) and ``curves.png`` (periodic evaluation scores from the
runs' ``metrics.jsonl``, the mean over seeds with a min-max band).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from frozen_dt.data.sources import data_label
from frozen_dt.errors import FrozenDTError
from frozen_dt.eval.runs import backbone_columns, config_key, settings_that_differ
from frozen_dt.paths import atomic_path, atomic_write_text
from frozen_dt.run_dir import read_json, read_jsonl, read_run_config, run_eval_path, write_csv
from frozen_dt.schema import integer, nullable, record, text
from frozen_dt.training.recipes import recipe_steps

COLUMNS = ("algo", "backbone", "layers", "init", "freeze", "settings", "task", "dataset_source", "scale", "n_seeds",
           "n_episodes", "score_mean", "ci_low", "ci_high", "ci_over", "iqm", "target", "trainable_params", "steps",
           "device", "git_sha", "date")
COMPARISON_COLUMNS = ("vs", "difference", "diff_ci_low", "diff_ci_high", "diff_p", "diff_n")
# What a row's label (:func:`row_label`) and condition name; rows equal in these differ in their configuration, and
# ``settings`` says how (``freeze=none``, ``lr=0.001``).
KEY_COLUMNS = ("algo", "backbone", "layers", "init", "task", "dataset_source", "steps", "target")
CONDITION = ("task", "target", "dataset_source", "steps")  # what rows compared with a reference share
FULL_EPISODES = 100


VERSIONS = record({}, {"git": record({}, {"sha": text(100)})})
PARAMS = record({}, {"trainable_params": nullable(integer(0))})
DATASET = record({}, {"source": record({}, {"kind": text(100), "download": nullable(record({}, {"url": text()}))})})
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def find_runs(patterns: list[str] | None, checkpoint: str = "last", env_version: str | None = None) -> list[Path]:
    """Run dirs holding their evaluation of ``checkpoint`` (in ``env_version``: :func:`run_eval_path`) among the
    given dirs/globs (default: everything under runs/); a directory reached by two paths (``runs/a`` and
    ``./runs/a``, a symlink) is found once."""
    patterns = patterns or ["runs/**"]
    found = {}
    for pattern in patterns:
        for match in glob.glob(pattern, recursive=True) or ([pattern] if Path(pattern).exists() else []):
            path = Path(match)
            if run_eval_path(path, checkpoint, env_version).is_file():
                found.setdefault(path.resolve(), path)
    return sorted(found.values())


def run_entries(run_dir: Path, checkpoint: str = "last", env_version: str | None = None) -> list[dict]:
    """One entry per evaluation condition of a run (each return target; OGBench: all goals, then each goal), the
    run's primary one first (``primary``: the one the figures show). Every file read is validated."""
    from frozen_dt.eval.runs import read_eval_record

    _, settings = read_run_config(run_dir)
    record = read_eval_record(run_eval_path(run_dir, checkpoint, env_version))
    versions = read_json(run_dir / "versions.json", VERSIONS) if (run_dir / "versions.json").is_file() else {}
    common = {
        "run_dir": str(run_dir), "record": record, "full_steps": recipe_steps(settings.run.algo, settings.run.task),
        "trainable_params": read_json(run_dir / "params.json", PARAMS).get("trainable_params"),
        "device": record.get("device", ""), "git_sha": str(versions.get("git", {}).get("sha", "unknown"))[:10],
        "date": record.get("created_at", "")[:10], "metrics": run_dir / "metrics.jsonl", "seed": settings.run.seed,
        "config": config_key(settings, record["task"])[1],
    }
    key = {
        "algo": settings.run.algo, **backbone_columns(settings), "task": record["task"],
        "dataset_source": data_label(read_json(run_dir / "dataset.json", DATASET).get("source", {})),
        "steps": record["checkpoint_step"],
    }
    labels = [record["primary_target"]] + [k for k in record["targets"] if k != record["primary_target"]]
    return [{**common, "primary": label == record["primary_target"], "key": {**key, "target": label},
             "episode_scores": np.asarray([e["score"] for e in record["targets"][label]["episodes"]], np.float64)}
            for label in labels]


def build_rows(entries: list[dict]) -> list[dict]:
    from frozen_dt.eval.stats import seed_summary

    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault((tuple(e["key"].items()), e["config"]), []).append(e)
    rows = []
    for (key, config), group in groups.items():
        key = dict(key)
        s = seed_summary([g["episode_scores"] for g in group])
        reduced = key["steps"] < group[0]["full_steps"] or min(len(g["episode_scores"]) for g in group) < FULL_EPISODES \
            or any(g["record"].get("max_steps") for g in group)  # episodes cut short (eval --max-steps)
        rows.append({**key, "scale": "reduced" if reduced else "full", "n_seeds": s["n_seeds"],
                     "n_episodes": s["n_episodes"], "score_mean": round(s["mean"], 2),
                     "ci_low": round(s["ci_low"], 2), "ci_high": round(s["ci_high"], 2), "ci_over": s["ci_over"],
                     "iqm": round(s["iqm"], 2),
                     "trainable_params": group[0]["trainable_params"],
                     "device": "; ".join(sorted({g["device"] for g in group})),
                     "git_sha": "; ".join(sorted({g["git_sha"] for g in group})),
                     "date": max(g["date"] for g in group), "primary": group[0]["primary"], "_runs": group,
                     "_per_seed": s["per_seed"], "_config": dict(config)})
    name_differences(rows)
    rows.sort(key=lambda r: (r["task"], not r["primary"], -r["score_mean"]))
    return rows


def name_differences(rows: list[dict]) -> None:
    """Set each row's ``settings``: among rows whose named columns are equal, the settings that differ between them
    (``"lr=0.001; batch_size=64"``); empty for a row no other row looks like."""
    alike: dict[tuple, list[dict]] = {}
    for r in rows:
        alike.setdefault(tuple(r[c] for c in KEY_COLUMNS), []).append(r)
    for same in alike.values():
        for r, label in zip(same, settings_that_differ([r["_config"] for r in same])):
            r["settings"] = label


def compare_rows(rows: list[dict], reference: str) -> None:
    """Set each row's comparison with the row labelled ``reference`` (:func:`row_label`) of its condition (task,
    target, dataset source, checkpoint step): Welch's t-interval on the difference of seed means (row - reference)
    and its p; blank where either side has fewer than 2 seeds (or no spread). A row whose condition has no reference
    row gets ``vs`` and an empty ``diff_n``, which :func:`comparison_label` reads as "no such row here"."""
    from frozen_dt.eval.stats import welch_difference

    conditions: dict[tuple, list[dict]] = {}
    for r in rows:
        conditions.setdefault(tuple(r[c] for c in CONDITION), []).append(r)
        r.update({c: "" for c in COMPARISON_COLUMNS})
    found = False
    for group in conditions.values():
        refs = [r for r in group if row_label(r) == reference]  # labels are unique within a condition
        if not refs:
            for r in group:
                r["vs"] = reference
            continue
        found = True
        ref_means = refs[0]["_per_seed"]
        for r in group:
            if r is refs[0]:
                continue
            means = r["_per_seed"]
            r.update(vs=reference, diff_n=f"{len(means)} v {len(ref_means)}")
            w = welch_difference(means, ref_means)
            if w is not None:
                r.update(difference=round(w["difference"], 2), diff_ci_low=round(w["ci"][0], 2),
                         diff_ci_high=round(w["ci"][1], 2), diff_p=round(w["p"], 4))
    if not found:
        labels = sorted({row_label(r) for r in rows})
        raise FrozenDTError(f"--reference {reference!r} is no row of this leaderboard (rows: {', '.join(labels)})")


def comparison_label(r: dict) -> str:
    """``diff +12.3 [-3.1, +26.8], Welch p 0.21 (3 v 3)`` against the reference, or why there is none."""
    if not r.get("vs"):
        return "-"
    if r["diff_n"] == "":
        return f"no {r['vs']} row at this task, target, data and step"
    if r["difference"] == "":
        return f"no interval ({r['diff_n']} seeds)"
    return (f"diff {r['difference']:+.1f} [{r['diff_ci_low']:+.1f}, {r['diff_ci_high']:+.1f}], Welch p {r['diff_p']:.3f} "
            f"({r['diff_n']})")


def safe_cell(value):
    """A cell a spreadsheet shows as text: a string starting like a formula gets a leading apostrophe (numbers are
    left alone, and so is a lone "-": nothing follows the sign); line breaks become spaces."""
    if not isinstance(value, str) or value == "-":
        return value
    value = value.replace("\r", " ").replace("\n", " ")
    return "'" + value if value.startswith(FORMULA_START) else value


def markdown_table(rows: list[dict], reference: str | None = None) -> str:
    cols = ("task", "target", "algo", "backbone", "layers", "init", "settings", "dataset_source", "scale", "steps",
            "n_seeds", "n_episodes", "score_mean", "ci", "iqm", "trainable_params")
    vs = f"vs {reference} (difference, Welch 95 % t-interval, p, n)"
    cols += (vs,) if reference else ()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = {**r, "ci": interval_label(r), vs: comparison_label(r)}
        lines.append("| " + " | ".join(str(safe_cell(cells[c])).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def interval_label(r: dict) -> str:
    """The row's 95 % interval with what it is over; with 2-4 seeds (a t-interval) the per-seed means beside it."""
    seeds = ""
    if 2 <= r["n_seeds"] < 5:
        seeds = "; seeds " + ", ".join(f"{m:.1f}" for m in r["_per_seed"])
    return f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}] (95 %, {r['ci_over']}{seeds})"


def row_label(r: dict) -> str:
    """The algorithm, with its backbone, layers and init when it has a backbone, and the settings that tell it from a
    row that looks the same."""
    label = f"{r['algo']} {r['backbone']} {r['layers']} {r['init']}" if r["backbone"] != "-" else r["algo"]
    return f"{label} {r['settings']}" if r.get("settings") else label


def plot_scores(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        task_rows = [r for r in rows if r["task"] == task]
        means = [r["score_mean"] for r in task_rows]
        err = np.array([[m - r["ci_low"] for m, r in zip(means, task_rows)],
                        [r["ci_high"] - m for m, r in zip(means, task_rows)]])
        ax.bar(range(len(task_rows)), means, yerr=np.clip(err, 0, None), capsize=4, color="tab:blue")
        ax.set_xticks(range(len(task_rows)), [row_label(r) for r in task_rows], rotation=30, ha="right", fontsize=8)
        scale = "reduced-scale" if any(r["scale"] == "reduced" for r in task_rows) else "full-scale"
        ax.set_title(f"{task} ({data_labels(task_rows)} data, {scale})", fontsize=9)
        ax.set_ylabel("normalized score (95 % interval: t over seeds if < 5, else bootstrap)", fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out)


def data_labels(rows: list[dict]) -> str:
    return " + ".join(sorted({r["dataset_source"] for r in rows}))


def learning_curve(metrics: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [row for row in read_jsonl(metrics) if "score" in row]
    return np.asarray([r["step"] for r in rows]), np.asarray([r["score"] for r in rows])


def plot_curves(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            curves = [learning_curve(g["metrics"]) for g in r["_runs"]]
            curves = [c for c in curves if len(c[0])]
            if not curves:
                continue
            n = min(len(c[0]) for c in curves)
            steps, values = curves[0][0][:n], np.stack([c[1][:n] for c in curves])
            line, = ax.plot(steps, values.mean(0), marker="o", ms=3, label=f"{row_label(r)} ({len(curves)} seeds)")
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2, color=line.get_color())
        ax.set_title(f"{task} ({data_labels([r for r in rows if r['task'] == task])} data)", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("eval score (training-time episodes)")
        if ax.get_legend_handles_labels()[0]:  # runs without periodic evaluations draw no curve
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out)


def _save_figure(fig, out: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def collect_entries(runs: list[Path], checkpoint: str,
                    env_version: str | None = None) -> tuple[list[dict], list[str]]:
    """The entries of every readable run, and one line per run left out: a file that fails validation, or a seed
    of a configuration already counted from another run dir (a copy of a run counts once)."""
    entries, skipped, counted = [], [], {}
    for run_dir in runs:
        try:
            found = run_entries(run_dir, checkpoint, env_version)
        except FrozenDTError as error:
            skipped.append(f"{run_dir}: {error}")
            continue
        seed = (tuple(found[0]["key"].items()), found[0]["config"], found[0]["seed"])
        if seed in counted:
            skipped.append(f"{run_dir}: seed {seed[-1]} of this configuration is already counted from {counted[seed]}")
            continue
        counted[seed] = run_dir
        entries += found
    return entries, skipped


def write_leaderboard(patterns: list[str] | None, out: Path, checkpoint: str = "last",
                      reference: str | None = None, env_version: str | None = None) -> tuple[list[dict], list[str]]:
    """Write the leaderboard of the runs ``patterns`` name (with ``reference``, each row's difference from that row;
    with ``env_version``, their evaluations in that MuJoCo version); returns its rows and the runs left out (each a
    line saying why)."""
    runs = find_runs(patterns, checkpoint, env_version)
    where = ", ".join(patterns) if patterns else "runs/**"
    if not runs:
        needs = f"eval-{checkpoint}.json" if not env_version else \
            f"its evaluation in {env_version}, eval-{checkpoint}-{env_version}.json (or eval-{checkpoint}.json for a " \
            f"run trained in {env_version})"
        run_first = "RUN_DIR" + (f" --env-version {env_version}" if env_version else "")
        raise FrozenDTError(f"no evaluated runs in {where} (each needs {needs}: run `frozen-dt eval {run_first}` "
                            "first)")
    entries, skipped = collect_entries(runs, checkpoint, env_version)
    if not entries:
        raise FrozenDTError(f"no valid evaluated run in {where}; first left out: {skipped[0]}")
    rows = build_rows(entries)
    if reference:
        compare_rows(rows, reference)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, [{k: safe_cell(v) for k, v in r.items()} for r in rows],
              COLUMNS + (COMPARISON_COLUMNS if reference else ()))
    atomic_write_text(out.with_suffix(".md"), markdown_table(rows, reference))
    primary = [r for r in rows if r["primary"]]  # figures: each run's primary target (OGBench: all goals)
    plot_scores(primary, out.parent / "scores.png")
    plot_curves(primary, out.parent / "curves.png")
    return rows, skipped
