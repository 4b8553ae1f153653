"""Collect probe summaries into a table and learning-curve figure: ``python -m frozen_dt.probes.report``.

Reads ``<results>/<task>-*.json`` (written by ``frozen-dt probe``), copies each run's ``metrics.csv`` to
``<results>/curves/<summary stem>.csv`` (run directories are not committed), and writes ``<results>/<task>_table.md``
(test per-bit error per L, final and best over evaluations, mean over seeds with the per-seed values) and
``<results>/<task>_curves.png``.
"""

from __future__ import annotations

import argparse
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from frozen_dt.paths import atomic_path, atomic_write_text
from frozen_dt.probes.models import ARMS as ARM_ORDER  # pretrained first, then the controls
from frozen_dt.run_dir import read_csv, read_json


def collect(results: Path, task: str) -> list[dict]:
    summaries = []
    for path in sorted(results.glob(f"{task}-*.json")):
        summary = read_json(path)
        summary["stem"] = path.stem
        metrics = Path(summary["run_dir"]) / "metrics.csv"
        curve = results / "curves" / f"{path.stem}.csv"
        if metrics.exists():
            curve.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(curve) as tmp:
                shutil.copyfile(metrics, tmp)
        summary["curve"] = curve if curve.exists() else None
        summaries.append(summary)
    return summaries


def majority_baseline(summary: dict) -> dict[str, float]:
    """Test error of a rule that needs no recall: predict each bit as the majority of that bit over all L values
    of the sequence (ties: 0). On the runs' own fixed recall test sets (interleaved format, the summary's sizes)."""
    from frozen_dt.probes.tasks import recall_batch, test_rng

    config = read_json(Path(summary["run_dir"]) / "config.json")
    out = {}
    for metric in summary["final"]:
        length = int(metric[len("err_L"):])
        batch = recall_batch(test_rng(length), config["n_test"], length, config["bits"], config["format"])
        bits = config["bits"]
        if config["format"] == "interleaved":
            values = batch.inputs[:, 1:-1:2, :bits] > 0
        else:
            values = batch.inputs[:, :-1, bits:2 * bits] > 0
        prediction = values.mean(axis=1) > 0.5
        out[metric] = float((prediction != (batch.targets[:, -1] > 0.5)).mean())
    return out


def table(summaries: list[dict]) -> str:
    groups = defaultdict(list)
    for s in summaries:
        groups[(s["backbone"], s["layers"], s["arm"])].append(s)
    keys = sorted(groups, key=lambda k: (k[0], k[1], ARM_ORDER.index(k[2]) if k[2] in ARM_ORDER else 99))
    metrics = sorted({m for s in summaries for m in s["final"]}, key=lambda m: int(m[5:]) if m[5:].isdigit() else 0)
    lines = []
    for which in ("final", "best"):
        lines += [f"**{which}** test per-bit error ({'at the last step' if which == 'final' else 'minimum over the evaluations'}); "
                  "mean over seeds [per-seed values]", "",
                  "| body | layers | arm | trainable params | steps | seeds | " + " | ".join(metrics) + " |",
                  "|---" * (6 + len(metrics)) + "|"]
        for key in keys:
            runs = sorted(groups[key], key=lambda s: s["seed"])
            cells = []
            for m in metrics:
                values = [s[which][m] for s in runs if m in s[which]]
                cells.append(f"{np.mean(values):.3f} [{', '.join(f'{v:.3f}' for v in values)}]")
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {runs[0]['trainable_params']:,} | "
                         f"{runs[0]['steps']} | {', '.join(str(s['seed']) for s in runs)} | " + " | ".join(cells) + " |")
        if summaries[0]["task"] == "recall" and Path(summaries[0]["run_dir"], "config.json").exists():
            base = majority_baseline(summaries[0])
            lines.append("| *no recall: majority of all values* | | | 0 | | | "
                         + " | ".join(f"{base.get(m, float('nan')):.3f}" for m in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


def figure(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [s for s in summaries if s["curve"] is not None]
    metrics = sorted({m for s in curves for m in s["final"]}, key=lambda m: int(m[5:]) if m[5:].isdigit() else 0)
    panels = ["train_loss"] + metrics
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    colors = {arm: f"C{i}" for i, arm in enumerate(ARM_ORDER)}
    for s in curves:
        rows = read_csv(s["curve"])
        for ax, metric in zip(axes[0], panels):
            points = [(int(r["step"]), float(r[metric])) for r in rows if r.get(metric)]
            if points:
                ax.plot(*zip(*points), color=colors.get(s["arm"], "k"), alpha=0.8,
                        linestyle="-" if s["seed"] == 0 else "--", label=f"{s['arm']} s{s['seed']}")
    for ax, metric in zip(axes[0], panels):
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if metric != "train_loss":
            ax.axhline(0.5, color="grey", linewidth=0.5)
            ax.set_ylim(0, 0.6)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/probes", help="summary directory (default: results/probes)")
    parser.add_argument("--task", default="recall", help="task whose summaries are collected (default: recall)")
    args = parser.parse_args(argv)
    results = Path(args.results)
    summaries = collect(results, args.task)
    if not summaries:
        raise SystemExit(f"no {args.task} summaries in {results}")
    text = table(summaries)
    atomic_write_text(results / f"{args.task}_table.md", text)
    figure(summaries, results / f"{args.task}_curves.png")
    print(text)


if __name__ == "__main__":
    main()
