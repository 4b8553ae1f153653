"""``frozen-dt data export TASK --format minari``: a task's dataset as a local Minari dataset.

The dataset is written under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) with
``minari.create_dataset_from_buffers``, so ``minari.load_dataset(ID)`` opens it: one Minari episode per episode
(observations with the episode's final next observation appended, actions, rewards, terminations and truncations
at the last step), the gymnasium env spec the data was rolled out in, D4RL's reference scores (so Minari's
normalized scores are D4RL's), and in its metadata under ``frozen_dt``: how the data was made (the generation
record: policy checkpoints, seeds, package versions, command) and, for D4RL locomotion tasks, ``frozen-dt data
verify``'s figures beside D4RL's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from frozen_dt.errors import FrozenDTError

DEFAULT_NAMESPACE = "frozen-dt"


def default_id(task) -> str:
    """``frozen-dt/walker2d/medium-v0`` for walker2d-medium-v2, as Minari names D4RL's (``mujoco/walker2d/medium-v0``)."""
    stem = task.name.rsplit("-v", 1)[0]
    env, _, level = stem.partition("-")
    return f"{DEFAULT_NAMESPACE}/{env}/{level or 'data'}-v0"


def episode_buffers(dataset) -> list:
    """Minari's per-episode buffers of ``dataset`` (which must store next observations for the final state)."""
    from minari.data_collector import EpisodeBuffer

    if dataset.next_observations is None:
        raise FrozenDTError("the dataset stores no next observations, so its episodes' final states are unknown; "
                            "Minari episodes need them")
    if dataset.rewards is None:
        raise FrozenDTError(f"the dataset lacks rewards ({', '.join(dataset.missing_keys)}); Minari episodes need them")
    buffers = []
    for e in range(dataset.n_episodes):
        start, length = int(dataset.episode_starts[e]), int(dataset.episode_lengths[e])
        steps = slice(start, start + length)
        terminations = np.zeros(length, bool)
        truncations = np.zeros(length, bool)
        (terminations if dataset.episode_terminated[e] else truncations)[-1] = True
        observations = np.concatenate([dataset.observations[steps], dataset.next_observations[start + length - 1][None]])
        buffers.append(EpisodeBuffer(id=e, observations=observations, actions=dataset.actions[steps],
                                     rewards=list(dataset.rewards[steps].astype(np.float64)),
                                     terminations=list(terminations), truncations=list(truncations)))
    return buffers


def provenance(dataset, task) -> dict:
    """The ``frozen_dt`` metadata entry: the data's source record and, where D4RL published statistics, ours beside
    theirs."""
    from frozen_dt import __version__

    record = {"frozen_dt_version": __version__, "task": task.name, "source": dataset.source}
    if task.d4rl is not None:
        from frozen_dt.data.verify import compare

        record["verify"] = compare(dataset, task)
    return json.loads(json.dumps(record, default=str))


def export_minari(task_name: str, *, dataset_id: str | None = None, dataset_path: str | None = None,
                  author: str | None = None) -> tuple[str, Path]:
    """Write the task's dataset (or the file ``dataset_path``) as the local Minari dataset ``dataset_id``."""
    import gymnasium as gym
    import minari

    from frozen_dt.data.sources import load_any
    from frozen_dt.envs.registry import get_task

    task = get_task(task_name)
    dataset = load_any(dataset_path or task.name, task_name=task.name)[0]
    dataset_id = dataset_id or default_id(task)
    if dataset_id in minari.list_local_datasets():
        raise FrozenDTError(f"a local Minari dataset {dataset_id!r} exists already (minari.delete_dataset removes it; "
                            "or give another --name)")
    env_version = dataset.source.get("env_version") or "v5"
    env_spec = gym.spec(task.env_id(env_version))
    description = (f"{task.name} as made by frozen-dt ({dataset.source.get('kind', 'file')} data; see the frozen_dt "
                   "metadata entry for how, and its statistics beside the published dataset's)")
    try:
        created = minari.create_dataset_from_buffers(
            dataset_id, episode_buffers(dataset), env=env_spec, algorithm_name="frozen-dt data generate",
            author=author, ref_min_score=task.ref_min,
            ref_max_score=task.ref_max, description=description, data_format="hdf5")
    except ValueError as error:  # minari's own checks (ids, spaces)
        raise FrozenDTError(f"Minari refused {dataset_id!r}: {error}") from None
    created.storage.update_metadata({"frozen_dt": provenance(dataset, task)})
    return dataset_id, Path(created.spec.data_path).parent
