"""Evaluation throughput: N episodes of a DT policy, vectorized (the harness: a vector of envs, one batched forward
per step) against sequential batch-1 rollouts (one env, one forward of the K-step window per step: the way the
Decision Transformer repo, CORL and d3rlpy evaluate), same policy, same episode seeds, same run.

    python bench/bench_eval.py --run-dir RUN_DIR [--episodes 100] [--num-envs 25] [--target 5000]

RUN_DIR is a trained ``dt`` or ``frozen-dt`` run (e.g. ``frozen-dt train walker2d-medium-v2 --algo dt --steps 500
--run-dir runs/bench-dt``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from frozen_dt.eval.rollout import EVAL_SEED, rollout
from frozen_dt.evaluate import load_run
from frozen_dt.sequence_algorithm import ReturnConditionedAgent

from bench_sequence_sampling import cpu_name  # noqa: E402  (bench/ is run as a script directory)


def sequential_episode(task, run, env, target: float, seed: int, env_version) -> tuple[float, int]:
    """DT's evaluate_episode_rtg: one env, the model's single-episode ``act`` on the growing history each step."""
    model, stats, scale = run.model, run.obs_stats, run.config["rtg_scale"]
    obs, _ = env.reset(seed=seed)
    observations, actions, rtg = [], [], [target / scale]
    total, t = 0.0, 0
    while True:
        observations.append(stats.normalize(obs.astype(np.float32)))
        k = model.context
        start = max(0, len(observations) - k)
        with torch.no_grad():
            action = model.act(torch.as_tensor(np.stack(observations[start:])),
                               torch.as_tensor(np.asarray(actions[start:], np.float32).reshape(-1, model.act_dim)),
                               torch.as_tensor(np.asarray(rtg[start:], np.float32)),
                               torch.arange(start, t + 1).clamp(max=run.config["max_timestep"] - 1)).numpy()
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(np.clip(action, -1, 1))
        total += reward
        t += 1
        rtg.append(rtg[-1] - reward / scale)
        if terminated or truncated:
            return total, t


def window_forward_seconds(run, batch: int, steps: int, reps: int = 20) -> float:
    model = run.model
    tensors = {"observations": torch.zeros(batch, steps, model.obs_dim), "actions": torch.zeros(batch, steps, model.act_dim),
               "returns_to_go": torch.zeros(batch, steps, 1), "timesteps": torch.zeros(batch, steps, dtype=torch.long),
               "mask": torch.ones(batch, steps, dtype=torch.bool)}
    with torch.no_grad():
        model(tensors)
        start = time.perf_counter()
        for _ in range(reps):
            model(tensors)
    return (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--num-envs", type=int, default=25)
    parser.add_argument("--target", type=float, help="return target (default: the run's first)")
    parser.add_argument("--sequential-episodes", type=int, help="episodes for the sequential reference (default: all)")
    args = parser.parse_args()
    run = load_run(args.run_dir)
    task, version = run.task, run.config.get("env_version")
    target = args.target if args.target is not None else run.config["eval_targets"][0]
    print(f"# {cpu_name()}, {torch.get_num_threads()} threads; {run.args.algo} from {args.run_dir} on "
          f"{task.env_id(version)}, target {target:g}")

    start = time.perf_counter()
    agent = ReturnConditionedAgent(run.model, run.obs_stats, run.config["rtg_scale"], target,
                                   max_timestep=run.config["max_timestep"], precision=run.args.precision)
    vec = rollout(task, agent, args.episodes, seed=EVAL_SEED, num_envs=args.num_envs, env_version=version,
                  progress=False)
    t_vec = time.perf_counter() - start
    steps_vec = sum(r["length"] for r in vec)

    n_seq = args.sequential_episodes or args.episodes
    env = task.make_env(version)
    start = time.perf_counter()
    seq = [sequential_episode(task, run, env, target, EVAL_SEED + i, version) for i in range(n_seq)]
    t_seq = time.perf_counter() - start
    steps_seq = sum(length for _, length in seq)
    # per-step cost is what compares: the sequential reference may run fewer episodes than the harness
    rate_vec, rate_seq = steps_vec / t_vec, steps_seq / t_seq
    print(f"vectorized ({args.num_envs} envs): {args.episodes} episodes, {steps_vec} steps in {t_vec:.1f} s "
          f"({rate_vec:.0f} steps/s); mean return {np.mean([r['return'] for r in vec]):.1f}")
    print(f"sequential batch-1: {n_seq} episodes, {steps_seq} steps in {t_seq:.1f} s ({rate_seq:.0f} steps/s); "
          f"mean return {np.mean([r for r, _ in seq]):.1f}")
    same = [abs(vec[i]["return"] - seq[i][0]) for i in range(n_seq)]
    # What a key/value cache could save at most: one step's 3 new tokens instead of the 3K-token window.
    window = window_forward_seconds(run, args.num_envs, run.model.context)
    one_step = window_forward_seconds(run, args.num_envs, 1)
    print(f"forward at batch {args.num_envs}: full {run.model.context}-step window {window * 1e3:.2f} ms, a 1-step "
          f"window (the compute a K/V cache would leave) {one_step * 1e3:.2f} ms; the window forwards take "
          f"{window * steps_vec / args.num_envs / t_vec:.0%} of the vectorized run's time")
    print(f"speed-up {rate_vec / rate_seq:.1f}x (steps/s); time for {args.episodes} episodes: "
          f"{t_vec:.1f} s vs {t_seq * steps_vec / max(steps_seq, 1):.1f} s (sequential, extrapolated when fewer "
          f"episodes ran); largest per-episode return difference {max(same):.3g}")


if __name__ == "__main__":
    main()
