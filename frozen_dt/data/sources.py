"""Where a task's dataset comes from. Sources are tried in a fixed order and the one used is recorded:

1. a file in the data dir (``$FROZEN_DT_DATA``) in any supported format, under the names the registry lists
   (``walker2d-medium-v2.hdf5``, D4RL's ``walker2d_medium-v2.hdf5``, ``walker2d-medium-v2.pkl``;
   ``scene-play-v0.npz``);
2. a local Minari dataset (``$MINARI_DATASETS_PATH``, default ``~/.minari/datasets``);
3. a download (D4RL URL, OGBench URL, or Minari with ``--source minari``) - only when the user
   passes ``--download``;
4. generation from the behaviour policies shipped in the repo (D4RL-style) or OGBench's oracles - when the
   caller allows it (``train``/``eval`` do; ``data info`` does not), announced with a progress bar;
5. otherwise a clear error saying where it looked and which commands would obtain the data.

``dataset.source`` says which: ``kind`` is ``file`` (a file someone put there), ``downloaded`` (fetched by
frozen-dt, with URL and sha256), ``generated`` (made by ``frozen-dt data generate``) or ``minari``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from frozen_dt.data.dataset import OfflineDataset, check_task_dims
from frozen_dt.data.download import download_minari, download_task_files, read_source_record
from frozen_dt.data.readers import read_file, read_minari
from frozen_dt.envs.registry import TASKS, Task, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import data_dir, data_file

DOWNLOAD_SOURCES = ("d4rl", "ogbench", "minari")


def minari_local_path(dataset_id: str) -> Path:
    root = os.environ.get("MINARI_DATASETS_PATH") or "~/.minari/datasets"
    return Path(root).expanduser() / dataset_id


@dataclass(frozen=True)
class Candidate:
    kind: str  # "file" or "minari"
    path: Path
    minari_id: str | None = None

    @property
    def exists(self) -> bool:
        return (self.path / "data").is_dir() if self.kind == "minari" else self.path.is_file()


def candidates(task: Task) -> list[Candidate]:
    """Every place the dataset of ``task`` may already be, in the order they are tried."""
    found = [Candidate("file", data_file(name)) for name in task.dataset_files]
    if task.minari_id:
        found.append(Candidate("minari", minari_local_path(task.minari_id), task.minari_id))
    return found


def locate(task: Task) -> Candidate | None:
    return next((c for c in candidates(task) if c.exists), None)


def load_task_dataset(task: Task | str, *, download: bool = False, download_source: str | None = None,
                      sha256: str | None = None, generate: bool = False) -> OfflineDataset:
    """The dataset of ``task`` from the first source that has it (see the module doc)."""
    task = get_task(task) if isinstance(task, str) else task
    found = locate(task)
    if found is None:
        if download:
            found = fetch(task, download_source, sha256=sha256)
        elif generate:
            found = Candidate("file", generate_dataset(task, announce=True))
        else:
            raise FrozenDTError(missing_message(task))
    dataset = read_candidate(found, task)
    dataset.source["env_version"] = check_task_dims(dataset, task)
    dataset.source["task"] = task.name
    return dataset


def read_candidate(found: Candidate, task: Task) -> OfflineDataset:
    if found.kind == "minari":
        return read_minari(found.minari_id)
    dataset = read_file(found.path, task)
    record = read_source_record(found.path)
    if record is not None and dataset.source.get("kind") == "file":
        dataset.source.update(kind="downloaded", download=record)
    return dataset


def fetch(task: Task, download_source: str | None = None, *, sha256: str | None = None) -> Candidate:
    """Download the dataset of ``task`` (default: D4RL for locomotion, OGBench for OGBench tasks)."""
    source = download_source or ("ogbench" if task.family == "ogbench" else "d4rl")
    if source not in DOWNLOAD_SOURCES:
        raise FrozenDTError(f"unknown download source {source!r}; choose one of {', '.join(DOWNLOAD_SOURCES)}")
    if source == "minari":
        if not task.minari_id:
            raise FrozenDTError(f"task {task.name} has no Minari dataset (Minari's mujoco namespace has medium/expert only)")
        download_minari(task.minari_id)
        return Candidate("minari", minari_local_path(task.minari_id), task.minari_id)
    if (source == "ogbench") != (task.family == "ogbench"):
        raise FrozenDTError(f"task {task.name} cannot be downloaded from {source}")
    return Candidate("file", download_task_files(task, sha256=sha256))


def generate_dataset(task: Task, *, episodes: int | None = None, transitions: int | None = None, seed: int = 0,
                     out: Path | None = None, num_envs: int = 16, announce: bool = False, **policy_root) -> Path:
    """Generate ``task``'s dataset here: shipped SAC policies (locomotion) or OGBench's plan oracles."""
    if announce:
        size = f"{episodes} episodes" if episodes else f"{transitions} transitions" if transitions else "full size"
        print(f"frozen-dt: no local dataset for {task.name}; generating it ({size}) into "
              f"{out or data_dir()} - pass --download to fetch the published one instead", flush=True)
    if task.family == "ogbench":
        from frozen_dt.envs.ogbench_gen import generate_ogbench

        if transitions is not None:
            raise FrozenDTError("OGBench datasets are generated by --episodes (1001 steps each), not --transitions")
        return generate_ogbench(task, episodes=episodes or 1000, seed=seed, out=out)
    from frozen_dt.envs.generate import generate_locomotion

    return generate_locomotion(task, episodes=episodes, transitions=transitions, seed=seed, out=out,
                               num_envs=num_envs, **policy_root)


def data_label(source: dict) -> str:
    """Where a dataset came from, as every score states it: ``generated`` (made here by ``frozen-dt data generate``:
    a stand-in, not D4RL's data), ``d4rl`` or ``ogbench`` (their published files, downloaded), ``minari``, or
    ``file`` (a file someone put there: its origin is theirs to say)."""
    kind = source.get("kind", "unknown")
    if kind != "downloaded":
        return kind
    url = (source.get("download") or {}).get("url", "")
    return "ogbench" if "ogbench" in url else "d4rl" if "offline_rl" in url else "downloaded"


def missing_message(task: Task) -> str:
    looked = "\n".join(f"  - {c.path}" + (" (Minari)" if c.kind == "minari" else "") for c in candidates(task))
    how = [f"  frozen-dt data download {task.name}        # from {task.download_url.split('/')[2]} (needs network)"]
    if task.minari_id:
        how.append(f"  frozen-dt data download {task.name} --source minari   # Minari {task.minari_id}")
    how.append(f"  frozen-dt data generate {task.name}        # made here from the shipped behaviour policies / oracles")
    how.append(f"  or copy a file in a supported format to {data_dir() / task.dataset_files[0]}")
    return f"no dataset for {task.name}. Looked in:\n{looked}\nTo obtain it:\n" + "\n".join(how)


def guess_task(path: Path) -> Task | None:
    """The task a file belongs to, from its name (``hopper-expert-v2_25.pkl`` -> hopper-expert-v2)."""
    stem = path.name.replace("_", "-")
    matches = [t for name, t in TASKS.items() if stem.startswith(name)]
    # An OGBench file is shared by its goal-conditioned task and all single-task variants: a match by the task's
    # own name (scene-play-v0.npz -> scene-play-v0) wins over one by file name (which would pick a single task).
    matches = matches or [t for t in TASKS.values() if path.name in t.dataset_files]
    return max(matches, key=lambda t: len(t.name), default=None)


def load_any(name_or_path: str, *, task_name: str | None = None, download: bool = False,
             download_source: str | None = None) -> tuple[OfflineDataset, Task | None]:
    """A task name, ``minari:<id>``, or a file path -> (dataset, task it belongs to if known)."""
    task = get_task(task_name) if task_name else None
    if name_or_path.startswith("minari:"):
        return read_minari(name_or_path.split(":", 1)[1]), task
    path = Path(name_or_path).expanduser()
    if name_or_path in TASKS or (not path.exists() and "/" not in name_or_path and not path.suffix):
        task = get_task(name_or_path)  # unknown names fail here, with suggestions
        return load_task_dataset(task, download=download, download_source=download_source), task
    task = task or guess_task(path)
    dataset = read_file(path, task)
    if task is not None:
        dataset.source["env_version"] = check_task_dims(dataset, task)
        dataset.source["task"] = task.name
    return dataset, task
