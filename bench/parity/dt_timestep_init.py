"""Why our DT trails d3rlpy's at 5k updates (results/parity/hopper-medium-v2-dt.json): the timestep table's init.

kzl/decision-transformer (which our DT follows) leaves ``embed_timestep`` at PyTorch's default, N(0, 1); d3rlpy's
``ContinuousDecisionTransformer`` runs its ``_init_weights`` over the position encoding, N(0, 0.02). This trains our
DT exactly as run_parity.py's dt arm does (same file, flags, seeds, evaluation), with that one change, and writes
``<task>-dt-timestep-init.json``. Run dirs are reused when present (train once, evaluate once).

    python bench/parity/dt_timestep_init.py --dataset DATA/hopper-medium-v2.hdf5 --seeds 0 1 --out results/parity
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

EVAL_SEED = 10_000


def d3rlpy_timestep_init() -> None:
    """Make the registered DT build its timestep table with std 0.02 (d3rlpy's init); nothing else changes."""
    import frozen_dt.baselines.dt as dt

    plain = dt.build_model

    def build(config, problem, backbone=None):
        model = plain(config, problem, backbone)
        with torch.no_grad():
            model.embed_timestep.weight.normal_(0.0, 0.02)
        return model

    dt.SPEC = dataclasses.replace(dt.SPEC, build_model=build)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--task", default="hopper-medium-v2")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--work", default="runs/parity/dt-timestep-init")
    parser.add_argument("--out", default="results/parity")
    args = parser.parse_args()
    d3rlpy_timestep_init()
    from frozen_dt.cli import main as cli
    from frozen_dt.envs.registry import get_task
    from frozen_dt.eval.scores import normalized_score
    from frozen_dt.training.trainer import load_checkpoint

    seeds = []
    for seed in args.seeds:
        run_dir = Path(args.work) / f"seed{seed}"
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            code = cli(["train", args.task, "--algo", "dt", "--dataset", args.dataset, "--steps", str(args.steps),
                        "--seed", str(seed), "--eval-episodes", "0", "--log-every", str(max(args.steps // 20, 1)),
                        "--save-every", str(args.steps), "--run-dir", str(run_dir), "--batch-size", "64",
                        "--lr", "0.0001", "--warmup-steps", str(args.warmup_steps)])
            if code:
                raise SystemExit(code)
        if not (run_dir / "eval-last.json").is_file():
            code = cli(["eval", str(run_dir), "--episodes", str(args.episodes), "--num-envs", "10", "--eval-seed",
                        str(EVAL_SEED), "--workers", "1", "--target-return", "3600"])
            if code:
                raise SystemExit(code)
        record = json.loads((run_dir / "eval-last.json").read_text())
        returns = [e["return"] for e in next(iter(record["targets"].values()))["episodes"]]
        table = load_checkpoint(run_dir / "checkpoints" / "last.pt")["algorithm"]["model"]
        seeds.append({"seed": seed, "returns": returns, "run_dir": str(run_dir),
                      "score": float(np.mean(normalized_score(get_task(args.task), np.asarray(returns)))),
                      "timestep_table_std_after": float(table["embed_timestep.weight"].std())})
    out = Path(args.out) / f"{args.task}-dt-timestep-init.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"task": args.task, "dataset": str(args.dataset), "steps": args.steps, "episodes": args.episodes,
              "eval_seed": EVAL_SEED, "change": "embed_timestep ~ N(0, 0.02) at init (d3rlpy), not N(0, 1) (kzl)",
              "score": float(np.mean([s["score"] for s in seeds])), "seeds": seeds}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"{args.task} dt with d3rlpy's timestep init: " + ", ".join(f"seed {s['seed']} {s['score']:.1f}"
                                                                       for s in seeds) + f" -> {out}")


if __name__ == "__main__":
    main()
