"""Held-out action error for locomotion: a split of a dataset's episodes, and a trained run's action error on the
episodes it never saw.

Returns need many seeds to resolve a 20-point gap; the mean squared action error on held-out episodes is a far
less noisy measure of what a sequence model learned from the data. ``split`` draws a seeded fraction of the
episodes (at least one) as held out and writes both parts as Decision-Transformer pickles (``train.pkl``,
``heldout.pkl``: a list of per-episode dicts, which ``frozen-dt train --dataset`` reads), with ``split.json``
naming the source, the seed and the held-out episode indices. ``error`` loads a trained run (``frozen-dt train
--dataset .../train.pkl``) and measures the MSE of its predicted actions over the real (unpadded) steps of
``--windows`` context windows of the held-out episodes, drawn with a fixed seed (the same windows for every run of
the same context), normalised with the run's own observation statistics, at the run's return-to-go scale.

    python -m frozen_dt.science.heldout split walker2d-medium-v2 runs/data/walker2d-medium-split --fraction 0.1
    python -m frozen_dt.science.heldout error RUN_DIR... --heldout runs/data/walker2d-medium-split/heldout.pkl
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import torch

from frozen_dt.data.dataset import OfflineDataset
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_path
from frozen_dt.run_dir import write_json
from frozen_dt.science import exit_code

WINDOW_SEED = 0x4E1D


def heldout_episodes(n_episodes: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out episodes: round(fraction * n), at least 1 and at most n - 1."""
    if n_episodes < 2:
        raise FrozenDTError(f"a held-out split needs at least 2 episodes, the dataset has {n_episodes}")
    if not 0 < fraction < 1:
        raise FrozenDTError(f"--fraction must be in (0, 1), got {fraction}")
    k = min(max(1, round(fraction * n_episodes)), n_episodes - 1)
    return np.sort(np.random.default_rng(seed).choice(n_episodes, size=k, replace=False))


def episodes_as_paths(dataset: OfflineDataset, episodes) -> list[dict]:
    """The episodes as Decision-Transformer path dicts (the last step's terminal flag: terminated or not)."""
    paths = []
    for e in episodes:
        s, n = int(dataset.episode_starts[e]), int(dataset.episode_lengths[e])
        path = {"observations": dataset.observations[s:s + n], "actions": dataset.actions[s:s + n]}
        if dataset.rewards is not None:
            path["rewards"] = dataset.rewards[s:s + n]
            terminals = np.zeros(n, bool)
            terminals[-1] = bool(dataset.episode_terminated[e])
            path["terminals"] = terminals
        if dataset.next_observations is not None:
            path["next_observations"] = dataset.next_observations[s:s + n]
        paths.append(path)
    return paths


def write_paths(path: Path, paths: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(paths, handle, protocol=4)


def split(dataset: OfflineDataset, out_dir: Path, fraction: float, seed: int) -> dict:
    held = heldout_episodes(dataset.n_episodes, fraction, seed)
    train = np.setdiff1d(np.arange(dataset.n_episodes), held)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_paths(out_dir / "train.pkl", episodes_as_paths(dataset, train))
    write_paths(out_dir / "heldout.pkl", episodes_as_paths(dataset, held))
    record = {"source": dataset.source, "fraction": fraction, "seed": seed, "n_episodes": int(dataset.n_episodes),
              "heldout_episodes": held.tolist(),
              "train_steps": int(dataset.episode_lengths[train].sum()),
              "heldout_steps": int(dataset.episode_lengths[held].sum())}
    write_json(out_dir / "split.json", record)
    return record


@torch.no_grad()
def action_error(model: torch.nn.Module, view, n_windows: int, seed: int = WINDOW_SEED, chunk: int = 256) -> float:
    """MSE of ``model``'s predicted actions over the real steps of ``n_windows`` seeded windows of ``view``."""
    from frozen_dt.sequence_models import masked_mean

    starts = np.random.default_rng(seed).integers(0, len(view), size=n_windows)
    device = next(model.parameters()).device
    total, count = 0.0, 0.0
    for i in range(0, n_windows, chunk):
        batch = view.batch_at(starts[i:i + chunk])
        tensors = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
        predicted = model(tensors).float()
        real = float(tensors["mask"].sum())
        total += float(masked_mean((predicted - tensors["actions"]) ** 2, tensors["mask"])) * real
        count += real
    return total / count


def run_error(run_dir: Path, heldout: Path, n_windows: int) -> dict:
    from frozen_dt.data.readers import read_file
    from frozen_dt.data.views import SequenceView
    from frozen_dt.eval.runs import load_run

    loaded = load_run(run_dir)
    context = getattr(loaded.settings.algo, "context", None)
    if context is None:
        raise FrozenDTError(f"{run_dir}: held-out action error needs a sequence model (dt, frozen-dt)")
    dataset = read_file(heldout)
    view = SequenceView(dataset, context, rtg_scale=loaded.problem.rtg_scale,
                        max_timestep=loaded.problem.max_timestep, obs_stats=loaded.obs_stats)
    error = action_error(loaded.model, view, n_windows)
    return {"run_dir": str(run_dir), "algo": loaded.settings.run.algo, "seed": loaded.settings.run.seed,
            "step": loaded.step, "heldout": str(heldout), "windows": n_windows, "action_mse": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frozen_dt.science.heldout", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("split")
    s.add_argument("dataset", help="a task name or a dataset file")
    s.add_argument("out_dir")
    s.add_argument("--fraction", type=float, default=0.1)
    s.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("error")
    e.add_argument("run_dirs", nargs="+")
    e.add_argument("--heldout", required=True)
    e.add_argument("--windows", type=int, default=2048)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return exit_code(lambda: _command(args))


def _command(args) -> None:
    if args.action == "split":
        from frozen_dt.data.sources import load_any

        record = split(load_any(args.dataset)[0], Path(args.out_dir), args.fraction, args.seed)
        print(f"{len(record['heldout_episodes'])} of {record['n_episodes']} episodes held out "
              f"({record['heldout_steps']} steps; {record['train_steps']} train steps); wrote {args.out_dir}")
    else:
        if args.windows <= 0:
            raise FrozenDTError(f"--windows must be positive, got {args.windows}")
        for run_dir in args.run_dirs:
            r = run_error(Path(run_dir), Path(args.heldout), args.windows)
            print(f"{r['run_dir']} ({r['algo']}, seed {r['seed']}, step {r['step']}): held-out action MSE "
                  f"{r['action_mse']:.5f} over {r['windows']} windows", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
