"""D4RL-style dataset generation: roll shipped behaviour policies out in a vector of envs and write a D4RL-layout
hdf5 whose ``frozen_dt_metadata`` attribute records how it was made (so every later run records its dataset
source as *generated*).

Episode ``i`` is always seeded ``seed + i`` and draws its action noise from its own generator, so the data does not
depend on how many envs run side by side; policy inference runs batched over the envs in fixed-shape blocks
(:func:`frozen_dt.eval.rollout.in_blocks`), so a batched step gives bit-identical actions to a single-env step.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

from frozen_dt.envs.actors import ActorAgent, ActorPolicy
from frozen_dt.envs.behavior import POLICY_DIR, level_files, read_manifest, select_levels
from frozen_dt.envs.registry import Task, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.eval.rollout import RECORD_KEYS
from frozen_dt.eval.rollout import rollout as vector_rollout
from frozen_dt.paths import atomic_path
from frozen_dt.provenance import package_versions

D4RL_SIZE = 1_000_000
def rollout(task: Task, policy: ActorPolicy, episodes: list[int], *, seed: int, num_envs: int = 16,
            deterministic: bool = False, env_version: str = "v5", progress: bool = True) -> list[dict]:
    """Roll ``policy`` out for the given episode ids, recording D4RL arrays; episode ``i`` uses env seed
    ``seed + i`` and noise stream ``i``. One dict of arrays per episode, in the order of ``episodes``."""
    agent = ActorAgent.for_task(task, policy, seed=seed, env_version=env_version, deterministic=deterministic)
    runs = vector_rollout(task, agent, episodes, seed=seed, num_envs=num_envs, env_version=env_version, record=True,
                          progress=progress, desc=f"{task.name} rollouts")
    return [{k: r[k] for k in RECORD_KEYS} for r in runs]


def level_checkpoints(env: str, level: str, root: Path = POLICY_DIR) -> list[dict]:
    """The manifest checkpoints a level is generated from (medium-replay: every checkpoint up to medium)."""
    manifest = read_manifest(env, root)
    levels = select_levels(manifest.get("checkpoints", []), env)
    by_file = {c["file"]: c for c in manifest.get("checkpoints", [])}
    files = levels.get(level)
    if not files:
        shipped = ", ".join(sorted(levels)) or "none"
        raise FrozenDTError(f"no shipped behaviour policy for {env}-{level} (shipped levels: {shipped}); "
                            f"train one with `frozen-dt data train-behavior {env}`")
    return [by_file[f] for f in level_files(files)]


def concat_episodes(parts: list[dict], limit: int | None = None) -> dict:
    """Concatenate episode dicts into flat D4RL arrays, cut at ``limit`` transitions (the cut tail keeps no flag)."""
    flat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if limit is not None:
        flat = {k: v[:limit] for k, v in flat.items()}
    return flat


def write_d4rl_hdf5(path: Path, arrays: dict, metadata: dict) -> None:
    """Write D4RL-layout arrays and the metadata attribute atomically (temp file, then rename)."""
    import h5py

    from frozen_dt.data.readers import METADATA_ATTR

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            dtype = bool if key in ("terminals", "timeouts") else np.float32
            f.create_dataset(key, data=np.asarray(value, dtype=dtype), compression="gzip", compression_opts=1)
        f.attrs[METADATA_ATTR] = json.dumps(metadata)


def generate_locomotion(task: Task, *, episodes: int | None = None, transitions: int | None = None, seed: int = 0,
                        out: Path | None = None, num_envs: int = 16, env_version: str = "v5",
                        policy_root: Path = POLICY_DIR, progress: bool = True) -> Path:
    """Generate ``task``'s dataset from the shipped policies and write it (default: into the data dir)."""
    from frozen_dt.paths import data_file

    env, level = task.name.split("-", 1)
    level = level[: -len("-v2")]
    out = Path(out) if out else data_file(task.dataset_files[0])
    started = time.time()
    if episodes is None and transitions is None:  # the published dataset's size
        transitions = task.d4rl.file_transitions if task.d4rl else D4RL_SIZE
    if level == "medium-expert":  # D4RL: medium and expert data mixed 50/50
        sizes = _split(episodes, transitions, 2)
        parts = [_generate_level(get_task(f"{env}-{lvl}-v2"), lvl, sizes[i], seed + i * 1_000_000, num_envs,
                                 env_version, policy_root, progress) for i, lvl in enumerate(("medium", "expert"))]
        arrays = concat_episodes([p[0] for p in parts])
        policies = [c for p in parts for c in p[1]]
    else:
        arrays, policies = _generate_level(task, level, (episodes, transitions), seed, num_envs, env_version,
                                           policy_root, progress)
    metadata = {
        "generator": "frozen-dt data generate",
        "task": task.name,
        "env_id": task.env_id(env_version),
        "env_version": env_version,
        "level": level,
        "policies": policies,
        "seed": seed,
        "n_transitions": int(len(arrays["rewards"])),
        "seconds": round(time.time() - started, 1),
        "versions": package_versions(),
        "command": " ".join(sys.argv),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_d4rl_hdf5(out, arrays, metadata)
    return out


def _split(episodes, transitions, parts: int) -> list[tuple]:
    if episodes is not None:
        return [(episodes // parts + (i < episodes % parts), None) for i in range(parts)]
    return [(None, transitions // parts + (i < transitions % parts)) for i in range(parts)]


def _generate_level(task, level, size, seed, num_envs, env_version, policy_root, progress):
    env = task.name.split("-", 1)[0]
    episodes, transitions = size
    checkpoints = level_checkpoints(env, level, policy_root)
    if level != "medium-replay":
        return _rollout_size(task, checkpoints[0], policy_root, env, episodes, transitions, seed, num_envs,
                             env_version, progress), checkpoints
    # The replay buffer of the run up to medium held, from each checkpoint's policy, the steps until the next
    # checkpoint: roll each one out for its share (an approximation of D4RL's replay data).
    medium_steps = level_checkpoints(env, "medium", policy_root)[0]["steps"]
    spans = np.diff([c["steps"] for c in checkpoints] + [medium_steps]).tolist()
    by_transitions = episodes is None
    shares = _proportional(transitions if by_transitions else episodes, spans)
    parts = [
        _rollout_size(task, ckpt, policy_root, env, None if by_transitions else share,
                      share if by_transitions else None, seed + i * 1_000_000, num_envs, env_version, progress)
        for i, (ckpt, share) in enumerate(zip(checkpoints, shares)) if share
    ]
    return concat_episodes(parts), checkpoints


def _proportional(total: int, weights: list) -> list[int]:
    raw = np.asarray(weights, dtype=np.float64) / np.sum(weights) * total
    out = np.floor(raw).astype(int)
    out[np.argsort(raw - out)[::-1][: total - out.sum()]] += 1
    return out.tolist()


def _rollout_size(task, checkpoint, policy_root, env, episodes, transitions, seed, num_envs, env_version, progress):
    policy = ActorPolicy.load(policy_root / env / checkpoint["file"])
    if episodes is not None:
        return concat_episodes(rollout(task, policy, list(range(episodes)), seed=seed, num_envs=num_envs,
                                       env_version=env_version, progress=progress))
    collected, parts, next_id = 0, [], 0
    while collected < transitions:
        # Enough episodes for the remainder at the worst case of full-length episodes, at least one vector's worth.
        batch = max(num_envs, -(-(transitions - collected) // task.max_episode_steps))
        ids = list(range(next_id, next_id + batch))
        next_id += batch
        for ep in rollout(task, policy, ids, seed=seed, num_envs=num_envs, env_version=env_version, progress=progress):
            if collected >= transitions:
                break
            parts.append(ep)
            collected += len(ep["rewards"])
    return concat_episodes(parts, limit=transitions)
