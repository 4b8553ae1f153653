"""Dataset-generation throughput (transitions/s): a vector of envs with batched policy inference against one env
at a time with batch-1 inference, same policy, same episodes, same run.

    python bench/bench_generation.py [--env hopper] [--level medium] [--episodes 32] [--num-envs 16]
"""

from __future__ import annotations

import argparse
import os
import time

from frozen_dt.envs.actors import ActorPolicy
from frozen_dt.envs.behavior import POLICY_DIR, read_manifest
from frozen_dt.envs.generate import level_checkpoints, rollout
from frozen_dt.envs.registry import get_task

from bench_sequence_sampling import cpu_name  # noqa: E402  (bench/ is run as a script directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--level", default="medium", help="shipped level to roll out (falls back to the last checkpoint)")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--num-envs", type=int, default=16)
    args = parser.parse_args()

    task = get_task(f"{args.env}-{args.level}-v2")
    try:
        checkpoint = level_checkpoints(args.env, args.level)[0]
    except Exception:
        checkpoint = read_manifest(args.env)["checkpoints"][-1]
    policy = ActorPolicy.load(POLICY_DIR / args.env / checkpoint["file"])
    episodes = list(range(args.episodes))

    results = {}
    for width in (1, args.num_envs):
        start = time.perf_counter()
        data = rollout(task, policy, episodes, seed=0, num_envs=width, progress=False)
        seconds = time.perf_counter() - start
        n = sum(len(e["rewards"]) for e in data)
        results[width] = (n, seconds, data)
    same = all((a["rewards"] == b["rewards"]).all() for a, b in zip(results[1][2], results[args.num_envs][2]))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores")
    print(f"policy: {checkpoint['file']} ({task.env_id()}), {args.episodes} episodes, "
          f"{results[1][0]} transitions; identical data at both widths: {same}")
    for width, (n, seconds, _) in results.items():
        print(f"num_envs={width:3d}: {n / seconds:9.0f} transitions/s ({seconds:.2f} s)")
    print(f"speed-up: {results[1][1] / results[args.num_envs][1]:.2f}x")


if __name__ == "__main__":
    main()
