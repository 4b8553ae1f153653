"""Evaluation throughput: the batched evaluation path (``frozen-dt eval``: every seed x return target of a run in one
vector env, one batched forward per policy and env step) against sequential batch-1 rollouts (one env, one forward of
the K-step window per step: the way the Decision Transformer repo, CORL and d3rlpy evaluate), same policy, same
episode seeds, same run.

    python bench/bench_eval.py --run-dir RUN_OR_STACK_DIR [--episodes 100] [--num-envs 32] [--workers N]
                               [--targets first|all] [--sequential-episodes N] [--block ROWS] [--out FILE]

RUN_OR_STACK_DIR is a trained ``dt`` or ``frozen-dt`` run or stack of seeds (e.g. ``frozen-dt train
walker2d-medium-v2 --algo dt --steps 500 --seeds 0,1,2 --run-dir runs/bench-dt``). ``--episodes`` is the batched
path's total, split evenly over the seeds x targets (at least one each); the sequential reference runs the first
seed's first target (``--sequential-episodes``, default as many; fewer are extrapolated by steps/s). Like
``frozen-dt eval``, the batched path writes each run's ``eval-last.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from frozen_dt.algorithms import run_precision
from frozen_dt.config import EvalArgs
from frozen_dt.eval.rollout import BLOCK, EVAL_NUM_ENVS, EVAL_SEED
from frozen_dt.eval.runs import evaluate_together, load_run
from frozen_dt.training.stack import runs_in
from frozen_dt.paths import atomic_write_text
from frozen_dt.sequence_models import autocast

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
                               torch.arange(start, t + 1).clamp(max=run.config["max_timestep"] - 1)).cpu().numpy()
        actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(np.clip(action, -1, 1))
        total += reward
        t += 1
        rtg.append(rtg[-1] - reward / scale)
        if terminated or truncated:
            return total, t


def forward_ms(run, rows: int, steps: int, *, last_step: bool, precision: str, threads: int, reps: int = 100) -> float:
    """Milliseconds per forward of ``rows`` windows of ``steps`` steps at ``threads`` torch threads."""
    model, previous = run.model, torch.get_num_threads()
    device = next(model.parameters()).device
    tensors = {"observations": torch.zeros(rows, steps, model.obs_dim), "actions": torch.zeros(rows, steps, model.act_dim),
               "returns_to_go": torch.zeros(rows, steps, 1), "timesteps": torch.zeros(rows, steps, dtype=torch.long),
               "mask": torch.ones(rows, steps, dtype=torch.bool)}
    tensors = {k: v.to(device) for k, v in tensors.items()}
    torch.set_num_threads(threads)
    try:
        with torch.no_grad(), autocast(device, precision):
            model(tensors, last_step=last_step)
            sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                model(tensors, last_step=last_step)
            sync(device)
    finally:
        torch.set_num_threads(previous)
    return (time.perf_counter() - start) / reps * 1e3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def env_step_ms(task, version, steps: int = 2000) -> float:
    """Milliseconds per step of one env with zero actions (reset when it ends)."""
    env = task.make_env(version)
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    seconds = time.perf_counter() - start
    env.close()
    return seconds / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a run, or a stack of seeds (all its seeds are evaluated)")
    parser.add_argument("--episodes", type=int, default=100, help="the batched path's episodes in all")
    parser.add_argument("--num-envs", type=int, default=EVAL_NUM_ENVS)
    parser.add_argument("--workers", type=int, help="rollout worker threads (default: as frozen-dt eval chooses)")
    parser.add_argument("--targets", choices=("first", "all"), default="all",
                        help="the batched path's return targets: the run's first, or all (as frozen-dt eval)")
    parser.add_argument("--sequential-episodes", type=int, help="episodes for the sequential reference (default: "
                                                                "--episodes)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="policy inference device (both sides)")
    parser.add_argument("--env-processes", choices=("auto", "on", "off"), default="auto",
                        help="harness envs in worker processes (auto: on cuda)")
    parser.add_argument("--block", type=int, help=f"harness inference rows per forward (default {BLOCK} on cpu, "
                                                  "--num-envs on cuda)")
    parser.add_argument("--label", default="", help="recorded with the measurement (e.g. 'CPU, reduced scale')")
    parser.add_argument("--out", help="also write the measurements to this JSON file")
    args = parser.parse_args()
    runs = [load_run(d, device=args.device) for d in runs_in(Path(args.run_dir))]
    run = runs[0]
    task, version = run.task, run.config.get("env_version")
    targets = run.config["eval_targets"][:1] if args.targets == "first" else run.config["eval_targets"]
    per_policy = max(1, round(args.episodes / (len(runs) * len(targets))))
    threads = torch.get_num_threads()
    print(f"# {cpu_name()}, {threads} threads; {run.settings.run.algo} from {args.run_dir} ({len(runs)} seed(s)) on "
          f"{task.env_id(version)}, targets {', '.join(f'{t:g}' for t in targets)}, inference in "
          f"{run_precision(run.settings.run)}{'; ' + args.label if args.label else ''}")

    eval_args = EvalArgs(run_dirs=[], episodes=per_policy, num_envs=args.num_envs, workers=args.workers,
                         device=args.device, env_processes=args.env_processes, block=args.block,
                         target_return=targets[0] if len(targets) == 1 else None)
    start = time.perf_counter()
    records = evaluate_together(runs, eval_args, progress=False)  # writes each run's eval-last.json, as eval does
    t_vec = time.perf_counter() - start
    vec = [e for r in records for t in r["targets"].values() for e in t["episodes"]]
    first = records[0]["targets"][f"{targets[0]:g}"]["episodes"]
    steps_vec = sum(e["length"] for e in vec)
    workers, processes, rows = records[0]["workers"], records[0]["env_processes"], records[0]["block"]
    target = targets[0]

    n_seq = args.sequential_episodes or len(vec)
    env = task.make_env(version)
    start = time.perf_counter()
    seq = [sequential_episode(task, run, env, target, EVAL_SEED + i, version) for i in range(n_seq)]
    t_seq = time.perf_counter() - start
    steps_seq = sum(length for _, length in seq)
    # per-step cost is what compares: the sequential reference may run fewer episodes than the harness
    rate_vec, rate_seq = steps_vec / t_vec, steps_seq / t_seq
    where = f"{len(runs)} seed(s) x {len(targets)} target(s) in one vector env of {args.num_envs} envs" \
        f"{' in worker processes' if processes else ''}, {workers} worker threads, {rows}-row blocks, {args.device}"
    print(f"batched ({where}): {len(vec)} episodes, {steps_vec} steps "
          f"in {t_vec:.1f} s ({rate_vec:.0f} steps/s); mean return {np.mean([r['return'] for r in vec]):.1f}")
    print(f"sequential batch-1 (fp32, {threads} threads): {n_seq} episodes, {steps_seq} steps in {t_seq:.1f} s "
          f"({rate_seq:.0f} steps/s); mean return {np.mean([r for r, _ in seq]):.1f}")
    # Where the time goes: inference per env step in the harness (a worker's 16-row block, one thread, last step
    # only) against the reference's one forward of a full window at batch 1 (fp32, all threads), and what a K/V
    # cache would leave (a 1-step window).
    k, precision = run.model.context, run_precision(run.settings.run)
    block = forward_ms(run, BLOCK, k, last_step=True, precision=precision, threads=1)
    block_full = forward_ms(run, BLOCK, k, last_step=False, precision=precision, threads=1)
    one_step = forward_ms(run, BLOCK, 1, last_step=False, precision=precision, threads=1)
    single = forward_ms(run, 1, k, last_step=False, precision="fp32", threads=threads)
    env_ms = env_step_ms(task, version)
    print(f"inference per env step: harness {block / BLOCK:.3f} core-ms ({BLOCK}-row block of {k}-step windows, "
          f"last step only, 1 thread; {block_full / BLOCK:.3f} computing every step's action), reference "
          f"{single:.3f} ms (batch 1, fp32, {threads} threads); a 1-step window, all a K/V cache would leave: "
          f"{one_step / BLOCK:.3f} core-ms; an env step {env_ms:.3f} core-ms")
    same = max(abs(first[i]["return"] - seq[i][0]) for i in range(min(n_seq, len(first))))
    speedup = rate_vec / rate_seq
    print(f"speed-up {speedup:.2f}x (steps/s); time for {len(vec)} episodes: {t_vec:.1f} s vs "
          f"{t_seq * steps_vec / max(steps_seq, 1):.1f} s (sequential, extrapolated when fewer episodes ran); "
          f"largest per-episode return difference {same:.3g} (bf16 vs fp32 inference diverge in MuJoCo)")
    if args.out:
        record = {"label": args.label, "cpu": cpu_name(), "threads": threads, "device": args.device,
                  "env_processes": processes, "torch": torch.__version__, "run_dir": args.run_dir,
                  "algo": run.settings.run.algo, "env_id": task.env_id(version), "precision": precision,
                  "seeds": len(runs), "targets": targets, "checkpoint_step": records[0]["checkpoint_step"],
                  "batched": {"episodes": len(vec), "per_seed_and_target": per_policy, "num_envs": args.num_envs,
                              "workers": workers, "block": rows,
                              "steps": steps_vec, "seconds": round(t_vec, 2), "steps_per_s": round(rate_vec, 1)},
                  "sequential": {"episodes": n_seq, "steps": steps_seq, "seconds": round(t_seq, 2),
                                 "steps_per_s": round(rate_seq, 1)},
                  "speedup": round(speedup, 2),
                  "inference_ms_per_env_step": {"harness_block_last_step": round(block / BLOCK, 4),
                                                "harness_block_every_step": round(block_full / BLOCK, 4),
                                                "one_step_window": round(one_step / BLOCK, 4),
                                                "reference_batch1_fp32": round(single, 4)},
                  "env_step_ms": round(env_ms, 4)}
        atomic_write_text(Path(args.out), json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
