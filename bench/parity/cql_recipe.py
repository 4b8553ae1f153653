"""Why our CQL scores above d3rlpy's at 5k updates (results/parity/hopper-medium-v2-cql.json): the recipe, arm by arm.

Each side runs its own published CQL recipe. This trains our CQL exactly as run_parity.py's cql arm does (same
file, update count, batch, network sizes, seeds and evaluation), with d3rlpy's settings swapped in, one arm per
difference, and all of them together:

* ``actor-lr``: actor and temperature Adam lr 1e-4 (d3rlpy's reproduction), not CORL's 3e-5;
* ``raw-rewards``: rewards as stored (d3rlpy: no reward scaler), not CORL's hopper-medium 1000 / (max - min return);
* ``raw-obs``: observations as stored (d3rlpy: no observation scaler), not standardized;
* ``default-init``: PyTorch's default init of every linear layer (d3rlpy's encoders), not CORL's orthogonal
  critics and small last layers;
* ``d3rlpy``: all four.

What it leaves as it is (not switchable without changing the algorithm): d3rlpy's backup uses the actor's mean
action at s' (``soft_q_backup=False``), ours a sampled one, as CORL; d3rlpy's log-std is a clamped linear head,
ours CORL's ``a * raw + b``. Writes ``<task>-cql-recipe.json``; run dirs are reused (train once, evaluate once).

    python bench/parity/cql_recipe.py --dataset DATA/hopper-medium-v2.hdf5 --arms d3rlpy --seeds 0 1 --out results/parity
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np

EVAL_SEED = 10_000
ARMS = ("actor-lr", "raw-rewards", "raw-obs", "default-init", "d3rlpy")
PARTS = {"actor-lr": {"actor-lr"}, "raw-rewards": {"raw-rewards"}, "raw-obs": {"raw-obs"},
         "default-init": {"default-init"}, "d3rlpy": {"actor-lr", "raw-rewards", "raw-obs", "default-init"}}


@contextlib.contextmanager
def patched_cql(parts: set):
    """The registered CQL with ``raw-obs`` and ``default-init`` applied while the block runs (the flags do the rest)."""
    import frozen_dt.baselines.cql as cql
    from torch import nn

    from frozen_dt.baselines.common import reward_scale
    from frozen_dt.data.views import TransitionView, sampled_on

    plain = cql.SPEC
    spec = plain
    if "default-init" in parts:
        def build_model(config, problem, backbone=None):
            model = plain.build_model(config, problem, backbone)
            for layer in model.modules():
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
            return model

        spec = dataclasses.replace(spec, build_model=build_model)
    if "raw-obs" in parts:
        def build_algorithm(config, model, dataset, problem, run):
            raw = sampled_on(TransitionView(dataset, normalize=False), run)
            return cql.CQL(model, raw, config, device=run.device,
                           reward_scale=reward_scale(dataset) if config.normalize_reward else 1.0)

        spec = dataclasses.replace(spec, build_algorithm=build_algorithm, raw_observations=True)
    cql.SPEC = spec
    try:
        yield
    finally:
        cql.SPEC = plain


def flags(parts: set) -> list[str]:
    return [*(["--actor-lr", "0.0001"] if "actor-lr" in parts else []),
            *(["--no-normalize-reward"] if "raw-rewards" in parts else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--task", default="hopper-medium-v2")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=["d3rlpy"])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--work", default="runs/parity/cql-recipe")
    parser.add_argument("--out", default="results/parity")
    args = parser.parse_args()
    from frozen_dt.cli import main as cli
    from frozen_dt.envs.registry import get_task
    from frozen_dt.eval.scores import normalized_score

    out = Path(args.out) / f"{args.task}-cql-recipe.json"
    record = json.loads(out.read_text()) if out.is_file() else {"arms": {}}
    record.update(task=args.task, dataset=str(args.dataset), steps=args.steps, episodes=args.episodes,
                  eval_seed=EVAL_SEED, git=subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                                          text=True, cwd=Path(__file__).parent).stdout.strip(),
                  shared_flags=["--batch-size", "256", "--hidden-dim", "256", "--hidden-layers", "3"])
    for arm in args.arms:
        parts = PARTS[arm]
        seeds = {s["seed"]: s for s in record["arms"].get(arm, {}).get("seeds", [])}
        for seed in args.seeds:
            run_dir = Path(args.work) / arm / f"seed{seed}"
            with patched_cql(parts):
                if not (run_dir / "checkpoints" / "last.pt").is_file():
                    code = cli(["train", args.task, "--algo", "cql", "--dataset", args.dataset, "--steps",
                                str(args.steps), "--seed", str(seed), "--eval-episodes", "0", "--log-every",
                                str(max(args.steps // 20, 1)), "--save-every", str(args.steps), "--run-dir",
                                str(run_dir), *record["shared_flags"], *flags(parts)])
                    if code:
                        raise SystemExit(code)
                if not (run_dir / "eval-last.json").is_file():
                    code = cli(["eval", str(run_dir), "--episodes", str(args.episodes), "--num-envs", "10",
                                "--eval-seed", str(EVAL_SEED), "--workers", "1"])
                    if code:
                        raise SystemExit(code)
            evaluated = json.loads((run_dir / "eval-last.json").read_text())
            returns = [e["return"] for e in next(iter(evaluated["targets"].values()))["episodes"]]
            seeds[seed] = {"seed": seed, "returns": returns, "run_dir": str(run_dir),
                           "score": float(np.mean(normalized_score(get_task(args.task), np.asarray(returns))))}
        rows = [seeds[k] for k in sorted(seeds)]
        record["arms"][arm] = {"changes": sorted(parts), "flags": flags(parts),
                               "score": float(np.mean([s["score"] for s in rows])), "seeds": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, out)
        print(f"{args.task} cql, arm {arm}: " + ", ".join(f"seed {s['seed']} {s['score']:.1f}" for s in rows)
              + f" -> {out}", flush=True)


if __name__ == "__main__":
    main()
