"""Where our CQL, IQL and DT part from d3rlpy's on the same data (results/parity/): the recipe, setting by setting.

Each side of the parity bench runs its own published recipe. This trains ours exactly as run_parity.py's arm for
the algorithm does (same file, update count, batch, network sizes, seeds and evaluation) with d3rlpy's settings
swapped in, one arm per difference, and all of them together (arm ``d3rlpy``):

* cql (d3rlpy's reproductions/offline/cql.py against CORL's hopper-medium file):
  ``actor-lr`` actor and temperature Adam lr 1e-4, not 3e-5; ``raw-rewards`` rewards as stored, not CORL's
  1000 / (max - min episode return); ``raw-obs`` observations as stored, not standardized; ``default-init``
  PyTorch's default init of every linear layer, not CORL's orthogonal critics and small last layers.
  ``mean-backup`` the backup's action at s' is the actor's squashed mean (d3rlpy's ``soft_q_backup=False``
  path, ``policy(s').squashed_mu``), not a sample (CORL); ``log-std-head`` the log-std is the actor's linear
  output clamped to [-20, 2] (d3rlpy's ``NormalPolicy``), not CORL's learned ``scale * raw + offset`` (1, -1 at
  init); arm ``d3rlpy-all`` is ``d3rlpy`` with both.
  Left as ours: the temperature's loss (d3rlpy ``-exp(log_alpha) * (log_pi - A)``, ours ``-log_alpha * (...)``:
  Adam steps on gradients that differ by the factor alpha, which moves by under 1e-4 per update in log space) and
  the order of the steps (d3rlpy's actor steps on the critics after their step, ours before).
* iql (d3rlpy's reproductions/offline/iql.py against CORL's walker2d/halfcheetah files):
  ``scaled-rewards`` rewards x 1000 / (max - min episode return) (d3rlpy's ReturnBasedRewardScaler, the same rule
  as our --normalize-reward), not as stored; ``raw-obs`` as above; ``std-sigmoid`` the actor's state-independent
  log-std is -5 + 7 sigmoid(p) with p = 0 at init (d3rlpy's ``NormalPolicy(use_std_parameter=True)``: log-std
  -1.5 at init, inside [-5, 2] by construction), not CORL's free parameter at 0 clamped to [-5, 2]; arm
  ``d3rlpy-all`` is ``d3rlpy`` with it.
* dt (d3rlpy's ContinuousDecisionTransformer against kzl/decision-transformer, which ours follows):
  ``timestep-init`` the timestep table drawn from N(0, 0.02) at init (d3rlpy's ``_init_weights`` covers the
  position encoding), not PyTorch's N(0, 1) (kzl). Evaluated with run_parity.py's target return, 3600.

Writes ``<out>/<task>-<algo>-recipe.json``; run dirs (``<work>/<arm>/seed<k>``) are reused: train once, evaluate once.
``--transitions N`` trains on the whole episodes among the file's first N transitions (run_parity.py's prefix file,
the same one its ``--transitions`` arm trains both sides on): ``<out>/<task>-first<N>-<algo>-recipe.json``.

    python experiments/parity/recipe_swap.py --algo cql --dataset DATA/hopper-medium-v2.hdf5 --task hopper-medium-v2 \
        --arms d3rlpy raw-rewards --seeds 0 1 --out results/parity
    python experiments/parity/recipe_swap.py --algo iql --dataset DATA/walker2d-medium-v2.hdf5 --task walker2d-medium-v2 \
        --arms d3rlpy --seeds 0 1 --out results/parity
    python experiments/parity/recipe_swap.py --algo dt --dataset DATA/hopper-medium-v2.hdf5 --arms timestep-init
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "parity"))
from run_parity import DT_TARGET_RETURN, EVAL_SEED, REPO, our_flags, prefix_file, welch  # noqa: E402

STEPS = {"cql": 5000, "iql": 50000, "dt": 5000}  # run_parity.py's sizes for these arms in results/parity
FLAGS = {"actor-lr": ["--actor-lr", "0.0001"], "raw-rewards": ["--no-normalize-reward"],
         "scaled-rewards": ["--normalize-reward"]}
ARMS = {"cql": {"actor-lr": {"actor-lr"}, "raw-rewards": {"raw-rewards"}, "raw-obs": {"raw-obs"},
                "default-init": {"default-init"}, "d3rlpy": {"actor-lr", "raw-rewards", "raw-obs", "default-init"},
                "mean-backup": {"mean-backup"}, "log-std-head": {"log-std-head"},
                "d3rlpy-all": {"actor-lr", "raw-rewards", "raw-obs", "default-init", "mean-backup", "log-std-head"},
                "d3rlpy+mean-backup": {"actor-lr", "raw-rewards", "raw-obs", "default-init", "mean-backup"},
                "d3rlpy+log-std-head": {"actor-lr", "raw-rewards", "raw-obs", "default-init", "log-std-head"}},
        "iql": {"scaled-rewards": {"scaled-rewards"}, "raw-obs": {"raw-obs"}, "d3rlpy": {"scaled-rewards", "raw-obs"},
                "std-sigmoid": {"std-sigmoid"}, "d3rlpy-all": {"scaled-rewards", "raw-obs", "std-sigmoid"}},
        "dt": {"timestep-init": {"timestep-init"}}}


class SigmoidLogStd(nn.Module):
    """d3rlpy's state-independent log-std, ``low + sigmoid(p) * (high - low)``, as a parametrization of IQL's
    ``actor.log_std`` whose stored value p starts at 0 (log-std -1.5)."""

    def __init__(self, low: float = -5.0, high: float = 2.0):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.low + torch.sigmoid(p) * (self.high - self.low)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:  # registering keeps p = 0, d3rlpy's initial value
        return torch.zeros_like(value)


@contextlib.contextmanager
def patched(algo: str, parts: set):
    """The registered ``algo`` with ``raw-obs``, ``default-init``, ``timestep-init``, ``log-std-head``,
    ``std-sigmoid`` and ``mean-backup`` applied while the block runs (flags do the rest)."""
    from frozen_dt.algorithms import REGISTRY
    from frozen_dt.data import views

    module = importlib.import_module(REGISTRY[algo])
    plain_spec, plain_view = module.SPEC, getattr(module, "TransitionView", None)  # DT's module reads sequences
    spec = plain_spec
    plain_gaussian, plain_update = getattr(module, "tanh_gaussian", None), getattr(module, "CQL", None)
    plain_update = plain_update and plain_update.__dict__["update_stack"]
    if parts & {"default-init", "timestep-init", "log-std-head", "std-sigmoid"}:
        def build_model(config, problem, backbone=None):
            model = plain_spec.build_model(config, problem, backbone)
            if "default-init" in parts:
                for layer in model.modules():
                    if isinstance(layer, nn.Linear):
                        layer.reset_parameters()
            if "timestep-init" in parts:
                with torch.no_grad():
                    model.embed_timestep.weight.normal_(0.0, 0.02)
            if "log-std-head" in parts:  # log_std = clamp(raw): a plain linear head, as d3rlpy's NormalPolicy
                with torch.no_grad():
                    model.actor.log_std_scale.fill_(1.0)
                    model.actor.log_std_offset.fill_(0.0)
                model.actor.log_std_scale.requires_grad_(False)
                model.actor.log_std_offset.requires_grad_(False)
            if "std-sigmoid" in parts:
                nn.utils.parametrize.register_parametrization(model.actor, "log_std", SigmoidLogStd())
            return model

        spec = dataclasses.replace(spec, build_model=build_model)
    if "raw-obs" in parts:  # the module's TransitionView, looked up when its build_algorithm runs
        def raw_view(dataset, **_):
            return views.TransitionView(dataset, normalize=False)

        module.TransitionView = raw_view
        spec = dataclasses.replace(spec, raw_observations=True)
    if "mean-backup" in parts:  # update_stack's second tanh_gaussian call is the backup's draw at s'
        calls = [0]

        def gaussian(mean, log_std, noise):
            calls[0] += 1
            return plain_gaussian(mean, log_std, torch.zeros_like(noise) if calls[0] == 2 else noise)

        def update_stack(*args, **kwargs):
            calls[0] = 0
            return plain_update.__func__(*args, **kwargs)

        module.tanh_gaussian, module.CQL.update_stack = gaussian, staticmethod(update_stack)
    module.SPEC = spec
    try:
        yield
    finally:
        module.SPEC = plain_spec
        if "mean-backup" in parts:
            module.tanh_gaussian, module.CQL.update_stack = plain_gaussian, plain_update
        if plain_view is not None:
            module.TransitionView = plain_view


def against_parity(path: Path, rows: list[dict]) -> dict:
    """The arm's seed means against each side of run_parity.py's record of the same arm (``path``, when it exists):
    the difference of the means with Welch's test and t-interval, n each side (``vs_ours``, ``vs_d3rlpy``)."""
    if not path.is_file() or len(rows) < 2:
        return {}
    parity = json.loads(path.read_text())
    arm = np.array([r["score"] for r in rows])
    out = {}
    for side in ("ours", "d3rlpy"):
        other = np.array(parity[side]["per_seed"])
        out[f"vs_{side}"] = {"difference": float(arm.mean() - other.mean()), "n": [len(arm), len(other)],
                             "welch": welch(arm, other), "record": str(path)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", required=True, choices=tuple(ARMS))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--task", default="hopper-medium-v2")
    parser.add_argument("--arms", nargs="+", default=["d3rlpy"])
    parser.add_argument("--steps", type=int, help="updates (default: the parity arm's, cql 5000, iql 50000, dt 5000)")
    parser.add_argument("--warmup-steps", type=int, default=500, help="dt's lr warm-up (the parity arm's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--transitions", type=int,
                        help="train on the whole episodes among the file's first N transitions (run_parity's prefix)")
    parser.add_argument("--work", help="run dirs (default: runs/parity/<algo>-recipe, with --transitions "
                                       "runs/parity/<task>-first<N>/<algo>-recipe)")
    parser.add_argument("--out", default="results/parity")
    args = parser.parse_args()
    unknown = sorted(set(args.arms) - set(ARMS[args.algo]))
    if unknown:
        parser.error(f"{args.algo} has no arm {', '.join(unknown)}; its arms: {', '.join(ARMS[args.algo])}")
    steps, name, prefix = args.steps or STEPS[args.algo], args.task, None
    if args.transitions:
        args.dataset, prefix = prefix_file(args.dataset, args.transitions, Path("runs/parity/data"))
        name = f"{args.task}-first{args.transitions}"
    work = Path(args.work or f"runs/parity/{name + '/' if prefix else ''}{args.algo}-recipe")
    from frozen_dt.cli import main as cli
    from frozen_dt.envs.registry import get_task
    from frozen_dt.eval.scores import normalized_score
    from frozen_dt.provenance import git_commit

    shared_flags = our_flags(args, args.algo)
    target = ["--target-return", str(DT_TARGET_RETURN)] if args.algo == "dt" else []
    out = Path(args.out) / f"{name}-{args.algo}-recipe.json"
    record = json.loads(out.read_text()) if out.is_file() else {"arms": {}}
    record.update(task=args.task, algo=args.algo, dataset=str(args.dataset), prefix=prefix, steps=steps,
                  episodes=args.episodes,
                  eval_seed=EVAL_SEED, shared_flags=shared_flags)
    commit = git_commit(REPO)  # the checkout this script runs from, as run_parity.py records it
    record["git"] = commit  # the last run that wrote this file; each seed says where it was trained
    for arm in args.arms:
        parts = ARMS[args.algo][arm]
        flags = [f for part in sorted(parts) for f in FLAGS.get(part, [])]
        seeds = {s["seed"]: s for s in record["arms"].get(arm, {}).get("seeds", [])}
        for seed in args.seeds:
            run_dir = work / arm / f"seed{seed}"
            trained_at = seeds.get(seed, {}).get("git")
            with patched(args.algo, parts):
                if not (run_dir / "checkpoints" / "last.pt").is_file():
                    trained_at = commit
                    code = cli(["train", args.task, "--algo", args.algo, "--dataset", args.dataset, "--steps",
                                str(steps), "--seed", str(seed), "--eval-episodes", "0", "--log-every",
                                str(max(steps // 20, 1)), "--save-every", str(steps), "--run-dir", str(run_dir),
                                *shared_flags, *flags])
                    if code:
                        raise SystemExit(code)
                if not (run_dir / "eval-last.json").is_file():
                    code = cli(["eval", str(run_dir), "--episodes", str(args.episodes),
                                "--num-envs", str(min(args.episodes, 10)),
                                "--eval-seed", str(EVAL_SEED), "--workers", "1", *target])
                    if code:
                        raise SystemExit(code)
            evaluated = json.loads((run_dir / "eval-last.json").read_text())
            returns = [e["return"] for e in next(iter(evaluated["targets"].values()))["episodes"]]
            seeds[seed] = {"seed": seed, "returns": returns, "run_dir": str(run_dir), "git": trained_at or commit,
                           "score": float(np.mean(normalized_score(get_task(args.task), np.asarray(returns))))}
        rows = [seeds[k] for k in sorted(seeds)]
        record["arms"][arm] = {"changes": sorted(parts), "flags": flags,
                               "score": float(np.mean([s["score"] for s in rows])), "seeds": rows,
                               **against_parity(Path(args.out) / f"{name}-{args.algo}.json", rows)}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, out)
        print(f"{name} {args.algo}, arm {arm}: " + ", ".join(f"seed {s['seed']} {s['score']:.1f}" for s in rows)
              + f" -> {out}", flush=True)


if __name__ == "__main__":
    main()
