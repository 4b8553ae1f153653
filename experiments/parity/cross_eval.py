"""Diagnostic for a BC gap: roll out d3rlpy's trained BC policy (``d3rlpy_side.py --save-policy FILE``) in
frozen-dt's harness, on the same episodes as both sides' own evaluations. If it scores what d3rlpy's own
evaluation gave, the two evaluations agree and the gap is in training; if it scores what our BC scores, the gap is
in d3rlpy's evaluation loop.

    python experiments/parity/cross_eval.py --policy d3rlpy-bc.npz --task hopper-medium-v2 --episodes 20

The other direction: ``--export RUN_DIR --policy ours-bc.npz`` writes our trained BC policy (a run dir of
``frozen-dt train --algo bc``) in the same layout, and ``d3rlpy_side.py --eval-policy ours-bc.npz`` rolls it out in
d3rlpy's evaluation loop (its gymnasium and MuJoCo): if it scores there what it scores in ours, our evaluation is
not what costs our BC its score.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def export(run_dir: str, path: str) -> None:
    """Our BC run's last checkpoint as ``d3rlpy_side.save_policy``'s layout: ``W<i>``, ``b<i>`` of the linear
    layers in order, ``mean``, ``std`` (ours already holds the eps) and ``eps`` 0."""
    from pathlib import Path

    from frozen_dt.training.trainer import load_checkpoint

    state = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")
    model, stats = state["algorithm"]["model"], state["obs_stats"]
    names = sorted({k.rsplit(".", 1)[0] for k in model}, key=lambda n: int(n.split(".")[1]))  # net.0, net.2, ...
    arrays = {}
    for i, name in enumerate(names):
        arrays[f"W{i}"] = model[f"{name}.weight"].numpy()
        arrays[f"b{i}"] = model[f"{name}.bias"].numpy()
    np.savez(path, mean=np.asarray(stats["mean"], np.float64), std=np.asarray(stats["std"], np.float64),
             eps=np.float64(0.0), **arrays)
    print(f"{run_dir} -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--task", default="hopper-medium-v2")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=10_000)
    parser.add_argument("--export", metavar="RUN_DIR", help="write this BC run's policy to --policy, roll out nothing")
    args = parser.parse_args()
    if args.export:
        export(args.export, args.policy)
        return

    from frozen_dt.baselines.bc import MLPPolicy
    from frozen_dt.baselines.common import ObservationPolicyAgent
    from frozen_dt.data.dataset import ObsStats
    from frozen_dt.envs.registry import get_task
    from frozen_dt.eval.rollout import rollout
    from frozen_dt.eval.scores import normalized_score

    saved = np.load(args.policy)
    layers = sorted(int(k[1:]) for k in saved.files if k.startswith("W"))
    weights = [torch.as_tensor(saved[f"W{i}"]) for i in layers]
    policy = MLPPolicy(weights[0].shape[1], weights[-1].shape[0], weights[0].shape[0], len(layers) - 1)
    linears = [m for m in policy.net if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, layer in zip(layers, linears):
            layer.weight.copy_(torch.as_tensor(saved[f"W{i}"]))
            layer.bias.copy_(torch.as_tensor(saved[f"b{i}"]))
    stats = ObsStats(saved["mean"].astype(np.float32), (saved["std"] + saved["eps"]).astype(np.float32))
    task = get_task(args.task)
    runs = rollout(task, ObservationPolicyAgent(policy.eval(), stats), args.episodes, seed=args.eval_seed,
                   num_envs=min(args.episodes, 10), env_version="v5", progress=False)
    returns = np.array([r["return"] for r in runs])
    print(json.dumps({"policy": args.policy, "harness": "frozen-dt", "episodes": args.episodes,
                      "normalized_mean": float(np.mean(normalized_score(task, returns))),
                      "returns": returns.tolist()}))


if __name__ == "__main__":
    main()
