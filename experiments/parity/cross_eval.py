"""Diagnostic for a BC gap: roll out d3rlpy's trained BC policy (``d3rlpy_side.py --save-policy FILE``) in
frozen-dt's harness, on the same episodes as both sides' own evaluations. If it scores what d3rlpy's own
evaluation gave, the two evaluations agree and the gap is in training; if it scores what our BC scores, the gap is
in d3rlpy's evaluation loop.

    python experiments/parity/cross_eval.py --policy d3rlpy-bc.npz --task hopper-medium-v2 --episodes 20
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--task", default="hopper-medium-v2")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=10_000)
    args = parser.parse_args()

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
