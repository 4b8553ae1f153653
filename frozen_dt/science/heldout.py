"""Held-out action error for locomotion: a split of a dataset's episodes, and a trained run's action error on the
episodes it never saw.

Returns need many seeds to resolve a 20-point gap; the mean squared action error on held-out episodes is a far
less noisy measure of what a sequence model learned from the data. ``split`` draws a seeded fraction of the
episodes (at least one) as held out and writes both parts as Decision-Transformer pickles (``train.pkl``,
``heldout.pkl``: a list of per-episode dicts, which ``frozen-dt train --dataset`` reads), with ``split.json``
naming the source, the seed and the held-out episode indices. ``error`` loads a trained run (``frozen-dt train
--dataset .../train.pkl``) and measures the MSE of its predicted actions over the real (unpadded) steps of
``--windows`` context windows of the held-out episodes, drawn with a fixed seed (the same windows for every run of
the same context), normalised with the run's own observation statistics, at the run's return-to-go scale. With
``--per-step STRIDE`` it measures instead the action predicted at every STRIDE-th held-out step at the last position
of the window that ends at it (up to the context's steps of its episode, left-padded: the window a rollout acts on,
with the data's history), an exploratory check that the primary metric's every-position average does not decide
the reading.

``error --out FILE`` also writes the records (each run's arm: ``dt`` or ``frozen-dt-<init>``, its learning rate and
seed, the error, and the sweep's evaluated returns beside it, labelled as the noisier measure). ``select FILE``
applies the protocol's learning-rate rule to a pilot's records (per arm the rate with the lower error, ties to the
smaller); ``compare FILE`` gives each arm's per-seed errors with a t-interval (n stated) and, against the reference
arm, Welch's interval on the difference of means and the probability of a lower error with its bootstrap CI, read
with the protocol's wording (``results/science/PROTOCOL.md``, 2026-12-04, locomotion).

    python -m frozen_dt.science.heldout split walker2d-medium-v2 runs/data/walker2d-medium-split --fraction 0.1
    python -m frozen_dt.science.heldout error RUN_DIR... --heldout runs/data/walker2d-medium-split/heldout.pkl \
        --out results/science/locomotion/pilot.json
    python -m frozen_dt.science.heldout error RUN_DIR... --heldout ... --per-step 10 --out .../main-per-step.json
    python -m frozen_dt.science.heldout select results/science/locomotion/pilot.json
    python -m frozen_dt.science.heldout compare results/science/locomotion/main.json [--md FILE]
"""

from __future__ import annotations

import argparse
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from frozen_dt.data.dataset import OfflineDataset
from frozen_dt.errors import FrozenDTError
from frozen_dt.eval.stats import MIN_BOOTSTRAP_SEEDS
from frozen_dt.paths import atomic_path
from frozen_dt.run_dir import atomic_write_text, eval_path, read_json, run_eval_path, write_json
from frozen_dt.science import exit_code

WINDOW_SEED = 0x4E1D


def heldout_episodes(n_episodes: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out episodes: round(fraction * n), at least 1 and at most n - 1."""
    if n_episodes < 2:
        raise FrozenDTError(f"a held-out split needs at least 2 episodes, the dataset has {n_episodes}")
    if not 0 < fraction < 1:
        raise FrozenDTError(f"--fraction must be in (0, 1), got {fraction}")
    k = min(max(1, round(fraction * n_episodes)), n_episodes - 1)
    return np.sort(np.random.default_rng(seed).choice(n_episodes, size=k, replace=False))


def episodes_as_paths(dataset: OfflineDataset, episodes) -> list[dict]:
    """The episodes as Decision-Transformer path dicts (the last step's terminal flag: terminated or not)."""
    paths = []
    for e in episodes:
        s, n = int(dataset.episode_starts[e]), int(dataset.episode_lengths[e])
        path = {"observations": dataset.observations[s:s + n], "actions": dataset.actions[s:s + n]}
        if dataset.rewards is not None:
            path["rewards"] = dataset.rewards[s:s + n]
            terminals = np.zeros(n, bool)
            terminals[-1] = bool(dataset.episode_terminated[e])
            path["terminals"] = terminals
        if dataset.next_observations is not None:
            path["next_observations"] = dataset.next_observations[s:s + n]
        paths.append(path)
    return paths


def write_paths(path: Path, paths: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(paths, handle, protocol=4)


def split(dataset: OfflineDataset, out_dir: Path, fraction: float, seed: int) -> dict:
    held = heldout_episodes(dataset.n_episodes, fraction, seed)
    train = np.setdiff1d(np.arange(dataset.n_episodes), held)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_paths(out_dir / "train.pkl", episodes_as_paths(dataset, train))
    write_paths(out_dir / "heldout.pkl", episodes_as_paths(dataset, held))
    record = {"source": dataset.source, "fraction": fraction, "seed": seed, "n_episodes": int(dataset.n_episodes),
              "heldout_episodes": held.tolist(),
              "train_steps": int(dataset.episode_lengths[train].sum()),
              "heldout_steps": int(dataset.episode_lengths[held].sum())}
    write_json(out_dir / "split.json", record)
    return record


@torch.no_grad()
def action_error(model: torch.nn.Module, view, n_windows: int, seed: int = WINDOW_SEED, chunk: int = 256) -> float:
    """MSE of ``model``'s predicted actions over the real steps of ``n_windows`` seeded windows of ``view``."""
    from frozen_dt.sequence_models import masked_mean

    starts = np.random.default_rng(seed).integers(0, len(view), size=n_windows)
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    for i in range(0, n_windows, chunk):
        batch = view.batch_at(starts[i:i + chunk])
        tensors = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
        predicted = model(tensors).float()
        real = float(tensors["mask"].sum())
        total += float(masked_mean((predicted - tensors["actions"]) ** 2, tensors["mask"])) * real
        count += real
    return total / count


@torch.no_grad()
def step_action_error(model: torch.nn.Module, view, steps: np.ndarray, chunk: int = 256) -> float:
    """MSE of the action predicted for each step in ``steps`` at the last position of the window that ends at it
    (up to the context's steps of its own episode, left-padded): the window a rollout acts on at that step, here
    with the data's history and return-to-go, in the precision ``model`` is loaded in."""
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(steps), chunk):
        tensors = {k: torch.as_tensor(v, device=device) for k, v in view.batch_ending_at(steps[i:i + chunk]).items()}
        predicted = model(tensors).float()[:, -1]
        total += float(((predicted - tensors["actions"][:, -1].float()) ** 2).mean(dim=1).sum())
    return total / len(steps)


def run_error(run_dir: Path, heldout: Path, n_windows: int, stride: int | None = None) -> dict:
    from frozen_dt.data.readers import read_file
    from frozen_dt.data.views import SequenceView
    from frozen_dt.eval.runs import load_run

    data_env = check_trained_on_split(run_dir, heldout)
    loaded = load_run(run_dir)
    context = getattr(loaded.settings.algo, "context", None)
    if context is None:
        raise FrozenDTError(f"{run_dir}: held-out action error needs a sequence model (dt, frozen-dt)")
    if loaded.step != loaded.settings.run.steps:
        raise FrozenDTError(f"{run_dir} is at step {loaded.step} of {loaded.settings.run.steps}: finish it first")
    dataset = read_file(heldout)
    view = SequenceView(dataset, context, rtg_scale=loaded.problem.rtg_scale,
                        max_timestep=loaded.problem.max_timestep, obs_stats=loaded.obs_stats)
    if stride is None:
        error = action_error(loaded.model, view, n_windows)
    else:
        error = step_action_error(loaded.model, view, np.arange(0, len(view), stride))
    init = getattr(loaded.settings.algo, "init", None)
    returns = evaluated_scores(run_dir, data_env)
    if returns and data_env and returns["env_version"] != data_env:  # beside the error, so flagged, not refused
        returns["mismatch"] = (f"evaluated in the {returns['env_version']} env; the data came from {data_env} "
                               f"(frozen-dt eval RUN --env-version {data_env})")
    return {"run_dir": str(run_dir), "algo": loaded.settings.run.algo,
            "arm": loaded.settings.run.algo + (f"-{init}" if init else ""), "lr": loaded.settings.algo.lr,
            "seed": loaded.settings.run.seed, "step": loaded.step, "heldout": str(heldout),
            **({"windows": n_windows} if stride is None else {"stride": stride}),
            "metric": metric_name(n_windows, stride), "action_mse": error, "returns": returns}


def metric_name(n_windows: int, stride: int | None) -> str:
    """What ``error`` measured: the protocol's primary metric, or the per-step one (``--per-step``)."""
    if stride is None:
        return f"held-out action MSE over {n_windows} seeded windows (every position)"
    steps = "every held-out step" if stride == 1 else f"held-out steps 0, {stride}, {2 * stride}, ..."
    return f"held-out action MSE at {steps}, each predicted from the window that ends at it (exploratory)"


def evaluated_scores(run_dir: Path, env_version: str | None = None) -> dict | None:
    """The normalized score per return target of the run's last evaluation (validated as ``frozen-dt eval`` reads
    it), if any: the one in ``env_version`` when given and present (``eval-last-v5.json`` for a run trained with
    another version), else the run's own ``eval-last.json``."""
    from frozen_dt.eval.runs import read_eval_record

    other = run_eval_path(run_dir, "last", env_version)
    path = other if other.is_file() else eval_path(run_dir, "last")
    if not path.is_file():
        return None
    record = read_eval_record(path)
    return {"episodes": record.get("episodes"), "env_version": record.get("env_version"),
            "scores": {str(t): float(v["score"]) for t, v in record["targets"].items()}}


def names_file(recorded: Path, expected: Path) -> bool:
    """Whether a path a run recorded names ``expected``: the same file when absolute; when relative (to wherever
    training ran), the last components of ``expected``'s absolute path."""
    target = expected.resolve()
    if recorded.is_absolute():
        return recorded.resolve() == target
    parts = [p for p in recorded.parts if p != "."]
    return ".." not in parts and list(target.parts[-len(parts):]) == parts


def check_trained_on_split(run_dir: Path, heldout: Path) -> str | None:
    """Refuse a run that did not train on the split's ``train.pkl`` (its held-out error would be in-sample);
    returns the env version the split's data came from (``split.json`` beside the held-out file), if recorded."""
    split_file = heldout.parent / "split.json"
    if not split_file.is_file():
        return None
    recorded = read_json(split_file)
    trained = read_json(run_dir / "dataset.json") if (run_dir / "dataset.json").is_file() else {}
    path = (trained.get("source") or {}).get("path")
    if path is None or not names_file(Path(path), heldout.parent / "train.pkl") \
            or trained.get("n_transitions") != recorded.get("train_steps"):
        raise FrozenDTError(f"{run_dir} did not train on {heldout.parent / 'train.pkl'} (its dataset.json names "
                            f"{path!s:.200}, {trained.get('n_transitions')} transitions; the split's train file has "
                            f"{recorded.get('train_steps')}): its error on {heldout} would not be held out")
    return (recorded.get("source") or {}).get("env_version")


def read_records(path: Path) -> list[dict]:
    """The run records an ``error --out`` wrote, checked."""
    data = read_json(path)
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not runs:
        raise FrozenDTError(f"{path}: not a held-out error file (no runs; write one with error --out)")
    for r in runs:
        if not (isinstance(r, dict) and isinstance(r.get("arm"), str) and isinstance(r.get("lr"), (int, float))
                and isinstance(r.get("seed"), int) and isinstance(r.get("action_mse"), (int, float))):
            raise FrozenDTError(f"{path}: a run record lacks arm, lr, seed or action_mse: {r!r}"[:300])
    metrics = sorted({record_metric(r) for r in runs})
    if len(metrics) > 1:
        raise FrozenDTError(f"{path} mixes metrics ({'; '.join(metrics)}): one error command's records per file")
    return runs


def record_metric(record: dict) -> str:
    """The metric a record measured (records written before ``metric`` was recorded: the windows' one)."""
    metric = record.get("metric")
    return metric if isinstance(metric, str) else metric_name(record.get("windows", 0), None)


def select_rates(runs: list[dict]) -> dict[str, dict]:
    """Per arm, the protocol's pilot rule: the learning rate whose (mean, over its seeds) held-out error is lowest,
    ties to the smaller rate. {arm: {"errors": {lr: error}, "chosen": lr}}."""
    by_arm: dict[str, dict[float, list[dict]]] = {}
    for r in runs:
        by_arm.setdefault(r["arm"], {}).setdefault(float(r["lr"]), []).append(r)
    grid = sorted({lr for rates in by_arm.values() for lr in rates})
    chosen = {}
    for arm, rates in sorted(by_arm.items()):
        if sorted(rates) != grid:
            raise FrozenDTError(f"arm {arm} has runs at {[f'{lr:g}' for lr in sorted(rates)]}, not at every rate of "
                                f"the pilot ({[f'{lr:g}' for lr in grid]}): a missing run would decide its rate")
        for lr, rs in rates.items():
            check_one_run_per_seed(f"arm {arm} at lr {lr:g}", rs)
        errors = {lr: float(np.mean([r["action_mse"] for r in rs])) for lr, rs in sorted(rates.items())}
        chosen[arm] = {"errors": errors, "chosen": min(errors, key=lambda lr: (errors[lr], lr))}
    return chosen


def check_one_run_per_seed(what: str, runs: list[dict]) -> None:
    """Refuse two runs of one seed (runs of other settings, such as a device profile, mixed in): averaged or counted
    as two samples, they would pass for evidence they are not."""
    twice = sorted(seed for seed, count in Counter(r["seed"] for r in runs).items() if count > 1)
    if twice:
        raise FrozenDTError(f"{what} has seed {twice[0]} more than once (runs of other settings, such as a device "
                            "profile, mixed in?): give one run per seed")


def compare_arms(runs: list[dict], reference: str = "frozen-dt-pretrained") -> dict:
    """Each arm's per-seed errors, mean and t-interval (n >= 2); against ``reference``: Welch's t-interval on the
    difference of mean errors (reference - arm), P(reference has the lower error) with its bootstrap CI, and the
    protocol's reading: "cannot tell at this power" unless the Welch interval excludes 0."""
    from frozen_dt.eval.stats import probability_of_improvement_ci, t_interval, welch_difference

    arms: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        arms.setdefault(r["arm"], []).append(r)
    for arm, rs in arms.items():
        if len({r["lr"] for r in rs}) > 1:
            raise FrozenDTError(f"arm {arm} has runs at several learning rates ({sorted({r['lr'] for r in rs})}): "
                                "compare the main runs, one rate per arm")
        check_one_run_per_seed(f"arm {arm}", rs)
    if reference not in arms:
        raise FrozenDTError(f"no runs of the reference arm {reference}; arms: {', '.join(sorted(arms))}")
    summary = {}
    for arm, rs in arms.items():
        values = [float(r["action_mse"]) for r in rs]
        summary[arm] = {"lr": rs[0]["lr"], "seeds": [r["seed"] for r in rs], "errors": values, "n": len(values),
                        "mean": float(np.mean(values)),
                        "t_interval": list(t_interval(values)) if len(values) >= 2 else None,
                        "returns": seed_returns(rs)}
    ref = summary[reference]["errors"]
    comparisons = {}
    for arm in sorted(a for a in arms if a != reference):
        other = summary[arm]["errors"]
        welch = welch_difference(ref, other)
        p_lower, low, high = probability_of_improvement_ci(other, ref)  # P(other's error > reference's)
        if welch is None or welch["ci"][0] <= 0.0 <= welch["ci"][1]:
            reading = "cannot tell at this power"
        else:
            reading = f"{reference} lower" if welch["ci"][1] < 0 else f"{reference} higher"
        comparisons[arm] = {"n": [len(ref), len(other)], "welch": welch,
                            "p_reference_lower": [p_lower, low, high], "reading": reading}
    return {"reference": reference, "arms": summary, "comparisons": comparisons}


def seed_returns(runs: list[dict]) -> dict | None:
    """Per return target, each run's evaluated normalized score (its own ``eval-last.json``, as ``error`` recorded
    it) and the episodes per run; None unless every run has one for the same targets."""
    found = [r.get("returns") for r in runs]
    if not all(isinstance(f, dict) and isinstance(f.get("scores"), dict) and f["scores"] for f in found):
        return None
    targets = sorted(found[0]["scores"])
    if any(sorted(f["scores"]) != targets for f in found):
        return None
    try:
        scores = {t: [float(f["scores"][t]) for f in found] for t in targets}
    except (TypeError, ValueError):
        return None
    return {"episodes": sorted({f.get("episodes") for f in found}, key=str), "scores": scores,
            "env_versions": sorted({str(f.get("env_version")) for f in found}),
            "mismatch": sorted({f["mismatch"] for f in found if f.get("mismatch")})}


def comparison_markdown(result: dict) -> str:
    ref = result["reference"]
    lines = ["| arm | lr | n | per-seed held-out action MSE | mean [95 % t-interval] |", "|---|---|---|---|---|"]
    for arm, a in sorted(result["arms"].items()):
        interval = (f"[{a['t_interval'][0]:.4f}, {a['t_interval'][1]:.4f}]" if a["t_interval"]
                    else "(no interval at n = 1)")
        lines.append(f"| {arm} | {a['lr']:g} | {a['n']} | {', '.join(f'{v:.4f}' for v in a['errors'])} | "
                     f"{a['mean']:.4f} {interval} |")
    lines += ["", f"| {ref} vs | n | mean({ref}) - mean(arm) [Welch 95 % t-interval] | p (Welch, two-sided, "
              f"uncorrected: descriptive) | P({ref} lower) [95 % bootstrap CI] | reading |",
              "|---|---|---|---|---|---|"]
    for arm, c in result["comparisons"].items():
        w = c["welch"]
        diff = f"{w['difference']:+.4f} [{w['ci'][0]:+.4f}, {w['ci'][1]:+.4f}]" if w else "-"
        p = "-" if not w else f"{w['p']:.3f}" if w["p"] >= 0.001 else "< 0.001"
        pl = c["p_reference_lower"]
        lines.append(f"| {arm} | {c['n'][0]} v {c['n'][1]} | {diff} | {p} | {pl[0]:.2f} [{pl[1]:.2f}, {pl[2]:.2f}] | "
                     f"{c['reading']} |")
    if any(min(c["n"]) < MIN_BOOTSTRAP_SEEDS for c in result["comparisons"].values()):
        lines += ["", f"With fewer than {MIN_BOOTSTRAP_SEEDS} seeds a side the bootstrap interval of P(lower) "
                  "under-covers: it describes these seeds; the reading follows Welch's interval."]
    returns = {arm: a["returns"] for arm, a in sorted(result["arms"].items()) if a.get("returns")}
    if returns:
        lines += ["", "Returns beside it (each run's own evaluation: normalized score per return target; with 10 "
                      "episodes a run, noisier than the held-out error; not part of the reading):", "",
                  "| arm | target | env | episodes per seed | per-seed score | mean |", "|---|---|---|---|---|---|"]
        for arm, r in returns.items():
            for target, values in r["scores"].items():
                lines.append(f"| {arm} | {target} | {', '.join(r.get('env_versions', ['?']))} | "
                             f"{', '.join(map(str, r['episodes']))} | {', '.join(f'{v:.1f}' for v in values)} | "
                             f"{np.mean(values):.1f} |")
        for arm, r in returns.items():
            for line in r.get("mismatch", []):
                lines.append(f"\n**{arm}: returns {line}.**")
    missing = sorted(arm for arm in result["arms"] if arm not in returns)
    if returns and missing:
        lines += ["", f"No returns for {', '.join(missing)} (a run without its evaluation, or targets that differ)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frozen_dt.science.heldout", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("split")
    s.add_argument("dataset", help="a task name or a dataset file")
    s.add_argument("out_dir")
    s.add_argument("--fraction", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("error")
    e.add_argument("run_dirs", nargs="+")
    e.add_argument("--heldout", required=True)
    e.add_argument("--windows", type=int, default=2048, help="seeded windows for the protocol's primary metric")
    e.add_argument("--per-step", type=int, metavar="STRIDE",
                   help="measure instead the action predicted at every STRIDE-th held-out step from the window that "
                        "ends at it, as a rollout acts (exploratory; PROTOCOL.md)")
    e.add_argument("--out", help="also write the records (JSON) here, for select and compare")
    c = sub.add_parser("select", help="the pilot's learning-rate rule per arm")
    c.add_argument("records")
    c = sub.add_parser("compare", help="the main runs' arms against the reference arm")
    c.add_argument("records")
    c.add_argument("--reference", default="frozen-dt-pretrained")
    c.add_argument("--md", help="also write the tables (markdown) here")
    c.add_argument("--json", help="also write the result (JSON) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return exit_code(lambda: _command(args))


def _command(args) -> None:
    if args.action == "split":
        from frozen_dt.data.sources import load_any

        record = split(load_any(args.dataset)[0], Path(args.out_dir), args.fraction, args.seed)
        print(f"{len(record['heldout_episodes'])} of {record['n_episodes']} episodes held out "
              f"({record['heldout_steps']} steps; {record['train_steps']} train steps); wrote {args.out_dir}")
        version = (record["source"] or {}).get("env_version")
        if version and version != "v4":  # a Decision-Transformer pickle is read as D4RL's, v4
            print(f"the data came from the {version} env, which the pickles cannot record: train or evaluate runs "
                  f"on them with --env-version {version} (a sweep: eval: {{env_version: {version}}})")
    elif args.action == "error":
        if args.windows <= 0 or (args.per_step is not None and args.per_step <= 0):
            raise FrozenDTError(f"--windows and --per-step must be positive, got {args.windows}, {args.per_step}")
        records = []
        for run_dir in args.run_dirs:
            r = run_error(Path(run_dir), Path(args.heldout), args.windows, args.per_step)
            records.append(r)
            returns = ", ".join(f"{t} {v:.1f}" for t, v in (r["returns"] or {}).get("scores", {}).items())
            print(f"{r['run_dir']} ({r['arm']}, lr {r['lr']:g}, seed {r['seed']}, step {r['step']}): "
                  f"{r['metric']}: {r['action_mse']:.5f}"
                  + (f"; evaluated score by target (noisier) {returns}" if returns else ""), flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            write_json(Path(args.out), {"heldout": args.heldout, "metric": records[0]["metric"], "runs": records})
    elif args.action == "select":
        runs = read_records(Path(args.records))
        metric = record_metric(runs[0])  # one metric per file: read_records
        if metric != metric_name(runs[0].get("windows", 0), None):
            raise FrozenDTError(f"{args.records} holds the {metric}: the pilot's rule reads the primary metric "
                                "(error without --per-step)")
        for arm, rule in select_rates(runs).items():
            errors = ", ".join(f"lr {lr:g}: {e:.5f}" for lr, e in rule["errors"].items())
            print(f"{arm}: {errors} -> lr {rule['chosen']:g}")
    else:
        runs = read_records(Path(args.records))
        metric = record_metric(runs[0])
        result = {**compare_arms(runs, args.reference), "metric": metric}
        text = f"Metric: {metric}.\n\n" + comparison_markdown(result)
        print(text, end="")
        if args.md:
            atomic_write_text(Path(args.md), text)
        if args.json:
            write_json(Path(args.json), result)


if __name__ == "__main__":
    raise SystemExit(main())
