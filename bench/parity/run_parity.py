"""Parity bench: our BC, IQL, CQL and DT beside d3rlpy 2.8.1's on the same dataset file, the same update counts,
batch sizes and network sizes, evaluated on the same episodes (seeds 10000 + i) in the same env version.

    python bench/parity/run_parity.py --dataset FILE --task hopper-medium-v2 --algos bc iql --steps 10000 \\
        --seeds 0 1 2 --episodes 50 --out results/parity

Run from the repository root, in frozen-dt's environment. The d3rlpy side runs in its own venv (d3rlpy pins
gymnasium==1.0.0): ``bench/parity/.venv``, created from ``requirements.txt`` on first use (or pass
``--d3rlpy-python``). Every job gets ``--threads`` torch threads (1 by default) and jobs run one after another, so
updates/s compare like with like. Writes ``<out>/<task>-<algo>.json`` per algorithm: both sides' per-seed
scores, means with 95 % intervals over episodes and over seeds, the difference with its interval, updates/s and
their ratio, the settings each side used, versions and hardware. Over seeds the interval is the bootstrap from 5
seeds a side and Student-t (for the difference, Welch's) with 2-4, since a bootstrap of so few values under-covers;
``ci_over`` says which.

    python bench/parity/run_parity.py --recompute results/parity/*.json   # the intervals again, from the stored runs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EVAL_SEED = 10_000
PREFIX_ATTR = "parity_prefix"  # what a --transitions file holds: its source, the steps asked for and kept, episodes
DT_TARGET_RETURN = 3600  # both sides' DT is conditioned on this return (hopper's in kzl/decision-transformer)
# What both sides share per algorithm: batch size and network (the rest is each side's published setting; see
# d3rlpy_side.py and our recipes).
SHARED = {"bc": {"batch_size": 256, "hidden": 256, "layers": 2, "lr": 3e-4},
          "iql": {"batch_size": 256, "hidden": 256, "layers": 2},
          "cql": {"batch_size": 256, "hidden": 256, "layers": 3},
          "dt": {"batch_size": 64, "lr": 1e-4}}


def prefix_file(dataset: str, transitions: int, folder: Path) -> tuple[str, dict]:
    """The whole episodes at the start of ``dataset`` that fit in ``transitions`` steps (cut after the last episode
    end at or before it), as a D4RL-layout file in ``folder`` that both sides train on, and what it holds. The file
    carries the source's attributes (a generated file's ``frozen_dt_metadata``) and a ``parity_prefix`` one; an
    existing file is reused when that attribute matches."""
    import h5py

    from frozen_dt.data.readers import D4RL_KEYS
    from frozen_dt.paths import atomic_path

    source = Path(dataset).expanduser().resolve()
    path = (folder / f"{source.stem}-first{transitions}.hdf5").resolve()
    with h5py.File(source, "r") as f:
        ends = np.flatnonzero(f["terminals"][()].astype(bool) | f["timeouts"][()].astype(bool))
        if transitions >= len(f["rewards"]) or not len(ends) or ends[0] >= transitions:
            raise SystemExit(f"{source}: --transitions {transitions} must cover at least one whole episode and fewer "
                             f"steps than the file's {len(f['rewards'])}")
        used = int(ends[ends < transitions][-1]) + 1
        prefix = {"source": str(source), "requested": transitions, "transitions": used,
                  "episodes": int((ends < used).sum())}
        if path.is_file():
            with h5py.File(path, "r") as g:
                if json.loads(g.attrs.get(PREFIX_ATTR, "{}")) == prefix:
                    return str(path), prefix
        with atomic_path(path, ".hdf5") as tmp, h5py.File(tmp, "w") as g:
            for key in (*D4RL_KEYS, "next_observations"):
                if key in f:
                    g.create_dataset(key, data=f[key][:used])
            g.attrs.update(dict(f.attrs))
            g.attrs[PREFIX_ATTR] = json.dumps(prefix)
    return str(path), prefix


def parity_python(given: str | None) -> str:
    """The d3rlpy venv's python, creating ``bench/parity/.venv`` from requirements.txt when absent."""
    if given:
        return given
    python = HERE / ".venv" / "bin" / "python"
    if not python.is_file():
        print(f"creating {HERE / '.venv'} (d3rlpy 2.8.1 and its pins; see requirements.txt)", flush=True)
        venv.create(HERE / ".venv", with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(HERE / "requirements.txt")], check=True)
    return str(python)


def run(argv: list[str], env: dict, cwd=REPO) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def our_flags(args, algo: str) -> list[str]:
    shared = SHARED[algo]
    flags = ["--batch-size", str(shared["batch_size"])]
    if algo in ("bc", "iql", "cql"):
        flags += ["--hidden-dim", str(shared["hidden"]), "--hidden-layers", str(shared["layers"])]
    if "lr" in shared:
        flags += ["--lr", str(shared["lr"])]
    if algo == "dt":
        flags += ["--warmup-steps", str(args.warmup_steps)]
    return flags


def our_train(args, algo: str, seed: int, env: dict, run_dir: Path, steps: int) -> None:
    run([sys.executable, "-m", "frozen_dt.cli", "train", args.task, "--algo", algo, "--dataset", args.dataset,
         "--steps", str(steps), "--seed", str(seed), "--eval-episodes", "0", "--log-every", str(max(steps // 20, 1)),
         "--save-every", str(steps), "--run-dir", str(run_dir), *our_flags(args, algo)], env, cwd=args.work)


def our_rates(run_dir: Path) -> list[float]:
    """steps/s of each log row of a run (each covers --log-every updates)."""
    rows = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [row["steps_per_s"] for row in rows if "steps_per_s" in row]


def ours(args, algo: str, seed: int, env: dict) -> dict:
    run_dir = Path(args.work) / args.label / algo / f"seed{seed}"
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        our_train(args, algo, seed, env, run_dir, args.steps[algo])
    target = ["--target-return", str(DT_TARGET_RETURN)] if algo == "dt" else []
    done = run_dir / "eval-last.json"
    previous = json.loads(done.read_text()) if done.is_file() else {}
    same = (previous.get("episodes") == args.episodes and previous.get("eval_seed") == EVAL_SEED
            and previous.get("checkpoint_step") == args.steps[algo] and previous.get("max_steps") is None
            and [t.get("target_return") for t in previous.get("targets", {}).values()]
            == [float(DT_TARGET_RETURN) if target else None])
    if not same:  # a rerun (more seeds, an interruption) evaluates only what it has not evaluated yet
        run([sys.executable, "-m", "frozen_dt.cli", "eval", str(run_dir), "--episodes", str(args.episodes),
             "--num-envs", str(min(args.episodes, 10)), "--eval-seed", str(EVAL_SEED), "--workers", "1", *target],
            env, cwd=args.work)
    record = json.loads(done.read_text())
    [label] = [k for k in record["targets"]][:1]
    returns = [e["return"] for e in record["targets"][label]["episodes"]]
    rates = our_rates(run_dir)
    return {"side": "frozen-dt", "algo": algo, "seed": seed, "steps": args.steps[algo], "returns": returns,
            "updates_per_s": float(np.median(rates[1:] or rates)), "run_dir": str(run_dir),
            "env_id": record["env_id"], "flags": our_flags(args, algo)}


def their_argv(args, algo: str, seed: int, python: str, steps: int, episodes: int) -> list[str]:
    shared = SHARED[algo]
    argv = [python, str(HERE / "d3rlpy_side.py"), "--algo", algo, "--dataset", args.dataset, "--env-id", args.env_id,
            "--steps", str(steps), "--batch-size", str(shared["batch_size"]), "--seed", str(seed),
            "--episodes", str(episodes), "--eval-seed", str(EVAL_SEED), "--threads", str(args.threads)]
    for key in ("hidden", "layers", "lr"):
        if key in shared:
            argv += [f"--{key}", str(shared[key])]
    if algo == "dt":
        argv += ["--warmup-steps", str(args.warmup_steps), "--target-return", str(DT_TARGET_RETURN)]
    return argv


def write_record(path: Path, record: dict) -> None:
    """``record`` as JSON at ``path``, atomically (a unique temp file, fsync, rename)."""
    from frozen_dt.paths import atomic_write_text

    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def theirs(args, algo: str, seed: int, python: str, env: dict) -> dict:
    """d3rlpy's run of ``algo`` with ``seed``; its record is kept beside our run dirs, so a rerun adding seeds
    (or resuming after an interruption) trains only the seeds not yet measured."""
    saved = Path(args.work) / args.label / algo / f"d3rlpy-seed{seed}-{args.steps[algo]}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    argv = their_argv(args, algo, seed, python, args.steps[algo], args.episodes)
    record = json.loads(run(argv, env).strip().splitlines()[-1])
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_record(saved, record)
    return record


def throughput(args, python: str, env: dict) -> dict:
    """Updates/s of each side alone, one job at a time (``--throughput-only``, on a machine with nothing else
    running): both sides train ``--steps`` updates of each algorithm from scratch, seed 0, no evaluation. Both
    rates are updates over the training loop's wall time (d3rlpy: its ``fit``; ours: the sum of the log rows'
    intervals), dataset loading and model building excluded on both sides."""
    rows = {}
    for algo in args.algos:
        steps = args.steps[algo]
        run_dir = Path(args.work) / "throughput" / args.task / algo
        if run_dir.exists():
            shutil.rmtree(run_dir)
        our_train(args, algo, 0, env, run_dir, steps)
        interval = max(steps // 20, 1)
        rates = our_rates(run_dir)
        ours_rate = interval * len(rates) / sum(interval / r for r in rates)
        theirs_rate = json.loads(run(their_argv(args, algo, 0, python, steps, 0), env).strip().splitlines()[-1])[
            "updates_per_s"]
        rows[algo] = {"steps": steps, "ours_updates_per_s": ours_rate, "d3rlpy_updates_per_s": theirs_rate,
                      "ratio": ours_rate / theirs_rate, "shared_settings": SHARED[algo]}
        print(f"{algo}: ours {ours_rate:.1f} updates/s, d3rlpy {theirs_rate:.1f}: {ours_rate / theirs_rate:.2f}x",
              flush=True)
    return rows


def bootstrap_ci(values: np.ndarray, reps: int = 10_000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(1)
    return [float(q) for q in np.quantile(means, [0.025, 0.975])]


def side_summary(records: list[dict], normalize) -> dict:
    """One side's score (the mean of its seeds' means, as the leaderboard's, so that the seeds' interval is around
    it), its intervals over episodes and over seeds, the per-seed means and its update rate."""
    from frozen_dt.eval.stats import MIN_BOOTSTRAP_SEEDS, t_interval

    per_seed = [np.asarray(normalize(r["returns"])) for r in records]
    episodes = np.concatenate(per_seed)
    seed_means = np.array([s.mean() for s in per_seed])
    n = len(seed_means)
    ci_seeds = bootstrap_ci(seed_means) if n >= MIN_BOOTSTRAP_SEEDS else list(t_interval(seed_means)) if n >= 2 \
        else None
    return {"score": float(seed_means.mean()), "ci_episodes": bootstrap_ci(episodes), "ci_seeds": ci_seeds,
            "ci_seeds_over": None if n < 2 else f"seeds ({'bootstrap' if n >= MIN_BOOTSTRAP_SEEDS else 't'}, n={n})",
            "per_seed": seed_means.round(2).tolist(), "updates_per_s": float(np.mean([r["updates_per_s"]
                                                                                        for r in records]))}


def difference(a: list[dict], b: list[dict], normalize, reps: int = 10_000) -> dict:
    """ours - d3rlpy: over seeds (2 or more a side) the bootstrap interval from 5 seeds a side, Welch's t-interval
    below that; over episodes with one seed a side. Welch's test is reported beside it whenever it applies."""
    from frozen_dt.eval.stats import MIN_BOOTSTRAP_SEEDS

    rng = np.random.default_rng(1)
    if len(a) >= 2 and len(b) >= 2:
        xa = np.array([np.mean(normalize(r["returns"])) for r in a])
        xb = np.array([np.mean(normalize(r["returns"])) for r in b])
        over = "seeds"
        if min(len(xa), len(xb)) < MIN_BOOTSTRAP_SEEDS:
            w = welch(xa, xb)
            if w is None:  # every seed mean equal on both sides: no t-interval, and a bootstrap of them is no better
                return {"difference": float(xa.mean() - xb.mean()), "ci": None,
                        "ci_over": "seeds (no spread on either side: no interval)", "n": [len(xa), len(xb)],
                        "within_ci": None, "welch": None}
            return {"difference": float(xa.mean() - xb.mean()), "ci": w["ci"], "ci_over": "seeds (Welch t)",
                    "n": [len(xa), len(xb)], "within_ci": bool(w["ci"][0] <= 0.0 <= w["ci"][1]), "welch": w}
    else:
        xa = np.concatenate([normalize(r["returns"]) for r in a])
        xb = np.concatenate([normalize(r["returns"]) for r in b])
        over = "episodes"
    diffs = (xa[rng.integers(0, len(xa), size=(reps, len(xa)))].mean(1)
             - xb[rng.integers(0, len(xb), size=(reps, len(xb)))].mean(1))
    low, high = np.quantile(diffs, [0.025, 0.975])
    return {"difference": float(xa.mean() - xb.mean()), "ci": [float(low), float(high)],
            "ci_over": f"{over} (bootstrap)" if over == "seeds" else over,
            "n": [len(xa), len(xb)], "within_ci": bool(low <= 0.0 <= high), "welch": welch(xa, xb)}


def interval_text(d: dict) -> str:
    """A difference's interval as printed: ``[-3.1, +26.8]``, or ``no interval``."""
    return "no interval" if d["ci"] is None else f"[{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"


def welch(xa: np.ndarray, xb: np.ndarray) -> dict | None:
    """Welch's t-test of mean(xa) = mean(xb) and the 95 % t-interval of their difference
    (:func:`frozen_dt.eval.stats.welch_difference`); None with fewer than 2 values a side or no spread."""
    from frozen_dt.eval.stats import welch_difference

    result = welch_difference(xa, xb)
    return None if result is None else {k: result[k] for k in ("t", "df", "p", "ci")}


def recompute(paths: list[str]) -> None:
    """Rewrite each parity record's summaries and difference from the per-episode returns it stores (``runs``),
    with this file's interval rules; a file without both sides' runs (a throughput or recipe record) is left alone."""
    if importlib.util.find_spec("frozen_dt") is None:
        sys.path.insert(0, str(REPO))
    from frozen_dt.envs.registry import get_task
    from frozen_dt.eval.scores import normalized_score

    for path in map(Path, paths):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"run_parity.py: {path}: not a readable parity record ({error})") from None
        runs = record.get("runs") if isinstance(record, dict) else None
        if not (isinstance(runs, dict) and runs.get("ours") and runs.get("d3rlpy")):
            print(f"{path}: no runs of both sides; left as it is")
            continue
        task = get_task(record["task"])

        def normalize(returns):
            return normalized_score(task, np.asarray(returns))

        record.update(ours=side_summary(runs["ours"], normalize), d3rlpy=side_summary(runs["d3rlpy"], normalize),
                      difference=difference(runs["ours"], runs["d3rlpy"], normalize))
        write_record(path, record)
        d = record["difference"]
        print(f"{path}: difference {d['difference']:+.1f} {interval_text(d)} over "
              f"{d['ci_over']} (n {d['n'][0]} vs {d['n'][1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recompute", nargs="+", metavar="RECORD",
                        help="rewrite these committed parity records' summaries and intervals from the per-episode "
                             "returns they store (nothing is trained; no other option applies)")
    parser.add_argument("--dataset", help="D4RL-layout hdf5 file both sides train on (required unless --recompute)")
    parser.add_argument("--task", default="hopper-medium-v2", help="the task the file belongs to (scores, env)")
    parser.add_argument("--algos", nargs="+", default=["bc", "iql", "cql", "dt"], choices=tuple(SHARED))
    parser.add_argument("--steps", nargs="+", default=["10000"],
                        help="updates per algorithm: one number, or algo=N pairs (bc=50000 dt=5000)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--warmup-steps", type=int, default=500, help="DT warm-up (both sides)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--d3rlpy-python", help="python of a venv with bench/parity/requirements.txt installed")
    parser.add_argument("--work", default="runs/parity", help="our run dirs")
    parser.add_argument("--out", default="results/parity")
    parser.add_argument("--transitions", type=int,
                        help="train both sides on the whole episodes among the file's first N transitions (a file "
                             "written under --work; results are named <task>-first<N>-<algo>.json)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only updates/s of each side alone, --steps updates each (no scores): run it with "
                             "nothing else on the machine; writes <task>-throughput.json")
    args = parser.parse_args()
    if args.recompute:
        return recompute(args.recompute)
    if not args.dataset:
        parser.error("--dataset is required (the D4RL-layout file both sides train on)")
    steps = {}
    for item in args.steps:
        algo, _, n = item.rpartition("=")
        for a in ([algo] if algo else args.algos):
            steps[a] = int(n)
    args.steps = {a: steps.get(a, 10_000) for a in args.algos}

    if importlib.util.find_spec("frozen_dt") is None:  # run from a checkout without the package installed
        sys.path.insert(0, str(REPO))
    from frozen_dt.envs.registry import get_task
    from frozen_dt.eval.scores import normalized_score
    from frozen_dt.provenance import git_commit, package_versions

    task = get_task(args.task)
    args.env_id = task.env_id("v5")

    def normalize(returns):
        return normalized_score(task, np.asarray(returns))

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    python = parity_python(args.d3rlpy_python)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    args.work = str(Path(args.work).resolve())  # our CLI runs there, so the run dirs it is given are absolute
    Path(args.work).mkdir(parents=True, exist_ok=True)  # our CLI runs there (its relative paths stay out of a checkout)
    args.dataset, prefix, name = str(Path(args.dataset).expanduser().resolve()), None, args.task
    if args.transitions:  # run dirs, d3rlpy records and results of a prefix are kept apart from the whole file's
        args.dataset, prefix = prefix_file(args.dataset, args.transitions, Path(args.work) / "data")
        name = f"{args.task}-first{args.transitions}"
        print(f"training on {args.dataset}: {prefix['transitions']} transitions, {prefix['episodes']} episodes",
              flush=True)
    args.label = name
    if args.throughput_only:  # measured algorithms replace their rows; the others' rows (and commits) stay
        path = Path(args.out) / f"{args.task}-throughput.json"
        record = json.loads(path.read_text()) if path.is_file() else {"algos": {}}
        commit = git_commit(REPO)
        for row in record["algos"].values():
            row.setdefault("git", record.get("git"))
        record["algos"].update({algo: {**row, "git": commit} for algo, row in throughput(args, python, env).items()})
        record.update(task=args.task, dataset=str(args.dataset), threads=args.threads,
                      hardware=f"{platform.machine()} {platform.processor() or ''}".strip(), cpu_count=os.cpu_count(),
                      git=commit, versions={"ours": package_versions()})
        write_record(path, record)
        print(f"-> {path}")
        return
    from frozen_dt.locks import LockHeld, run_lock

    for algo in args.algos:
        a, b = [], []
        for seed in args.seeds:
            try:  # several instances may share a run (e.g. one taking the seeds in reverse): one trains each seed
                with run_lock(Path(args.work) / name / algo / "locks" / f"seed{seed}", "parity seed"):
                    a.append(ours(args, algo, seed, env))
                    b.append(theirs(args, algo, seed, python, env))
            except LockHeld:
                print(f"{algo} seed {seed}: another instance is running it; skipped here (a rerun collects it)",
                      flush=True)
                continue
            print(f"{algo} seed {seed}: ours {np.mean(normalize(a[-1]['returns'])):.1f} "
                  f"({a[-1]['updates_per_s']:.0f} updates/s), d3rlpy {np.mean(normalize(b[-1]['returns'])):.1f} "
                  f"({b[-1]['updates_per_s']:.0f} updates/s)", flush=True)
        if not a:
            continue
        record = {"task": args.task, "algo": algo, "dataset": str(args.dataset), "prefix": prefix,
                  "steps": args.steps[algo],
                  "seeds": [r["seed"] for r in a], "episodes": args.episodes, "eval_seed": EVAL_SEED,
                  "env_id": args.env_id,
                  "shared_settings": SHARED[algo], "ours": side_summary(a, normalize), "d3rlpy": side_summary(b, normalize),
                  "difference": difference(a, b, normalize),
                  "updates_per_s_ratio": float(np.mean([r["updates_per_s"] for r in a])
                                               / np.mean([r["updates_per_s"] for r in b])),
                  "threads": args.threads, "hardware": f"{platform.machine()} {platform.processor() or ''}".strip(),
                  "cpu_count": os.cpu_count(), "versions": {"ours": package_versions(), "d3rlpy": b[0]["versions"]},
                  "git": git_commit(REPO), "runs": {"ours": a, "d3rlpy": b}}
        path = Path(args.out) / f"{name}-{algo}.json"
        write_record(path, record)
        d = record["difference"]
        print(f"{name} {algo}: ours {record['ours']['score']:.1f}, d3rlpy {record['d3rlpy']['score']:.1f}, "
              f"difference {d['difference']:+.1f} {interval_text(d)} over {d['ci_over']} "
              f"(n {d['n'][0]} vs {d['n'][1]}"
              + (f", Welch p {d['welch']['p']:.3f}" if d["welch"] and d["ci_over"].startswith("seeds") else "") + "); "
              f"updates/s ratio {record['updates_per_s_ratio']:.2f} -> {path}", flush=True)


if __name__ == "__main__":
    main()
