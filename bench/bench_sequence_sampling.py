"""Sequence-batch sampling (batch 64, K=20): SequenceView against a naive per-sample Python loop, same run.

The reference is the Decision Transformer repository's ``get_batch``: per sample, pick a trajectory with
probability proportional to its length, slice K steps, compute the return-to-go by a discounted cumsum over the
rest of the trajectory, left-pad and normalize, then concatenate. Both sample from the same synthetic
walker2d-medium-sized dataset (1000 episodes x 1000 steps, obs 17, act 6).

    python bench/bench_sequence_sampling.py [--episodes 1000] [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.data.views import SequenceView


def synthetic_dataset(episodes: int, length: int, obs_dim: int = 17, act_dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = episodes * length
    timeouts = np.zeros(n, bool)
    timeouts[length - 1 :: length] = True
    return from_flat_arrays(
        rng.normal(size=(n, obs_dim)).astype(np.float32),
        rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        np.zeros(n, bool),
        timeouts,
        where="synthetic",
    )


def naive_get_batch(trajectories, p_sample, mean, std, batch_size, k, rng, rtg_scale=1000.0, max_len=1000):
    """The DT repository's per-sample loop (gym/experiment.py get_batch), on numpy."""
    obs_dim = trajectories[0]["observations"].shape[1]
    act_dim = trajectories[0]["actions"].shape[1]
    batch_inds = rng.choice(len(trajectories), size=batch_size, replace=True, p=p_sample)
    s, a, r, rtg, timesteps, mask = [], [], [], [], [], []
    for i in batch_inds:
        traj = trajectories[i]
        si = rng.integers(0, traj["rewards"].shape[0])
        s.append(traj["observations"][si : si + k].reshape(1, -1, obs_dim))
        a.append(traj["actions"][si : si + k].reshape(1, -1, act_dim))
        r.append(traj["rewards"][si : si + k].reshape(1, -1, 1))
        t = np.arange(si, si + s[-1].shape[1]).reshape(1, -1)
        t[t >= max_len] = max_len - 1
        timesteps.append(t)
        cumsum = np.zeros_like(traj["rewards"][si:])
        cumsum[-1] = traj["rewards"][si:][-1]
        for j in reversed(range(cumsum.shape[0] - 1)):
            cumsum[j] = traj["rewards"][si:][j] + cumsum[j + 1]
        rtg.append(cumsum[: s[-1].shape[1]].reshape(1, -1, 1))
        tlen = s[-1].shape[1]
        s[-1] = (np.concatenate([np.zeros((1, k - tlen, obs_dim)), s[-1]], axis=1) - mean) / std
        a[-1] = np.concatenate([np.zeros((1, k - tlen, act_dim)), a[-1]], axis=1)
        r[-1] = np.concatenate([np.zeros((1, k - tlen, 1)), r[-1]], axis=1)
        rtg[-1] = np.concatenate([np.zeros((1, k - tlen, 1)), rtg[-1]], axis=1) / rtg_scale
        timesteps[-1] = np.concatenate([np.zeros((1, k - tlen)), timesteps[-1]], axis=1)
        mask.append(np.concatenate([np.zeros((1, k - tlen)), np.ones((1, tlen))], axis=1))
    return [np.concatenate(x, axis=0) for x in (s, a, r, rtg, timesteps, mask)]


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_per_call(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    dataset = synthetic_dataset(args.episodes, args.length)
    view = SequenceView(dataset, context=args.context)
    trajectories = [dataset.episode(e) for e in range(dataset.n_episodes)]
    p_sample = dataset.episode_lengths / dataset.episode_lengths.sum()
    stats = dataset.obs_stats
    rng_view, rng_naive = np.random.default_rng(0), np.random.default_rng(0)

    t_view = time_per_call(lambda: view.sample(args.batch_size, rng_view), args.repeats)
    t_naive = time_per_call(
        lambda: naive_get_batch(trajectories, p_sample, stats.mean, stats.std, args.batch_size, args.context, rng_naive),
        args.repeats,
    )
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}")
    print(f"dataset: {dataset.n_episodes} episodes, {dataset.n_transitions} transitions (synthetic)")
    print(f"batch {args.batch_size} x K={args.context}, {args.repeats} batches each")
    print(f"naive per-sample loop (DT get_batch): {t_naive * 1e3:8.3f} ms/batch")
    print(f"SequenceView.sample (vectorized):     {t_view * 1e3:8.3f} ms/batch")
    print(f"speed-up: {t_naive / t_view:.1f}x")


if __name__ == "__main__":
    main()
