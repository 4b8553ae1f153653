"""Update throughput of the value-based baselines: steps/s of one full update (sample, forward, backward, optimizer
steps, target update) for IQL, CQL and GCIQL at their recipes' batch sizes and network sizes, with plain behaviour
cloning (one 2x256 MLP, MSE, batch 256) measured in the same run as the reference: ``cost`` = BC steps/s divided by
the algorithm's steps/s (how many BC updates one update costs).

    python bench/bench_updates.py [--steps 200] [--threads N] [--out results/bench/updates_cpu.json]

Data: synthetic transitions shaped like hopper (11/3) for BC, IQL and CQL and like scene-play (40/5, 1000-step
trajectories) for GCIQL, so that the numbers do not depend on which datasets are on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from frozen_dt.algorithms import Problem
from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.envs.registry import get_task
from frozen_dt.paths import atomic_write_text
from frozen_dt.run_dir import RunSettings
from frozen_dt.training.recipes import apply_recipes

from bench_sequence_sampling import cpu_name  # noqa: E402  (bench/ is run as a script directory)

CASES = {"bc": "hopper-medium-v2", "iql": "hopper-medium-v2", "cql": "hopper-medium-v2", "gciql": "scene-play-v0"}


def synthetic(obs_dim: int, act_dim: int, n: int = 50_000):
    rng = np.random.default_rng(0)
    return from_flat_arrays(rng.normal(size=(n, obs_dim)).astype(np.float32),
                            rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
                            rng.normal(size=n).astype(np.float32), np.zeros(n, bool), np.arange(n) % 1000 == 999,
                            where="synthetic", source={"kind": "synthetic"})


def steps_per_second(algo: str, steps: int) -> tuple[float, RunSettings]:
    task = get_task(CASES[algo])
    args, _ = apply_recipes({"task": task.name, "algo": algo}, frozenset())
    dataset = synthetic(task.obs_dim("v5"), task.act_dim)
    problem = Problem.of(task, dataset.obs_dim, dataset.act_dim)
    torch.manual_seed(0)
    model = args.spec.build_model(args.algo, problem, None)
    algorithm = args.spec.build_algorithm(args.algo, model, dataset, problem, args.run)
    rng = np.random.default_rng(0)
    for _ in range(5):  # warm-up
        algorithm.update(algorithm.sample_batch(rng))
    start = time.perf_counter()
    for _ in range(steps):
        algorithm.update(algorithm.sample_batch(rng))
    return steps / (time.perf_counter() - start), args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    rows = {}
    for algo in CASES:
        rate, args = steps_per_second(algo, opts.steps)
        rows[algo] = {"steps_per_s": round(rate, 1), "batch_size": args.algo.batch_size, "task_shape": CASES[algo],
                      "hidden": f"{args.algo.hidden_dim} x {args.algo.hidden_layers}"}
    reference = rows["bc"]["steps_per_s"]
    for algo, row in rows.items():
        row["cost_vs_bc"] = round(reference / row["steps_per_s"], 2)
        print(f"{algo:6s} batch {row['batch_size']:5d}: {row['steps_per_s']:8.1f} updates/s "
              f"({row['cost_vs_bc']:.2f} BC updates each)", flush=True)
    record = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "steps": opts.steps, "results": rows}
    if opts.out:
        atomic_write_text(Path(opts.out), json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
