"""The task registry: every task frozen-dt knows, with its env, dataset sources, score references and DT targets.

A *task* is a dataset name as users type it (``walker2d-medium-v2``, ``scene-play-singletask-task1-v0``).
Locomotion tasks follow D4RL's names and map onto gymnasium's MuJoCo envs (v5 by default, v4 selectable);
OGBench tasks use the env ids that the ``ogbench`` package registers with gymnasium.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field

from frozen_dt.errors import FrozenDTError

ENV_VERSIONS = ("v5", "v4")
DEFAULT_ENV_VERSION = "v5"

LOCOMOTION_ENVS = ("halfcheetah", "hopper", "walker2d", "ant")
LOCOMOTION_LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")
OGBENCH_DATASETS = ("scene-play-v0", "cube-double-play-v0")
OGBENCH_TASK_IDS = (1, 2, 3, 4, 5)

# D4RL reference returns (d4rl/infos.py; the v2 datasets reuse the random-v0 references).
D4RL_REF_SCORES = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}

@dataclass(frozen=True)
class DatasetStats:
    """Size and episode-return statistics of a published dataset (returns undiscounted, std over episodes)."""

    transitions: int  # steps inside completed episodes (a file's unterminated tail is not counted)
    episodes: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float

    @property
    def file_transitions(self) -> int:
        """The rows of the published file: D4RL's hold whole thousands (1M, 402k, 2M); the count above leaves out
        the unfinished tail of the last episode."""
        return -(-self.transitions // 1000) * 1000


# The D4RL v2 datasets' statistics, for comparing generated stand-ins with them (frozen-dt data verify).
# transitions and returns: parse logs of the official hdf5 files, YuweiYin/UBC_CPSC_533V@9f2592a660f980272228f4b79a6
# 29caa7e6b6ec4 Project/log/get_offline_data/<env>-<level>.log ("The number of collected samples", "Trajectory
# rewards: mean, std, max, min"; episodes split at terminals or timeouts, as kzl/decision-transformer's loader), the
# medium / medium-replay / expert rows confirmed digit for digit by SiliHuang-ai/IDT@96e81ac5 gym/data/download_d4rl_
# datasets.py (its console log); episodes: the TFDS catalog (tensorflow/datasets@57fd9380 docs/catalog/d4rl_mujoco_
# <env>.md, "v2-<level>" splits; TFDS counts a trailing unfinished episode too).
D4RL_STATS_SOURCE = ("D4RL v2 hdf5 files as parsed in YuweiYin/UBC_CPSC_533V@9f2592a (transitions, returns; "
                     "medium/medium-replay/expert confirmed by SiliHuang-ai/IDT@96e81ac5) and the TFDS catalog "
                     "(episodes, tensorflow/datasets@57fd9380)")
D4RL_DATASET_STATS = {  # name: (transitions, episodes, return mean, std, min, max)
    "hopper-random-v2": (999_996, 45_240, 18.39890480041504, 17.451160430908203, 2.9301533699035645,
                         292.55419921875),
    "hopper-medium-v2": (999_906, 2_187, 1422.05615234375, 378.9537048339844, 315.8680114746094, 3222.360595703125),
    "hopper-medium-replay-v2": (402_000, 2_041, 467.3020324707031, 511.0256042480469, -1.4400691986083984,
                                3192.925048828125),
    "hopper-expert-v2": (999_494, 1_028, 3511.357666015625, 328.5859680175781, 1645.2764892578125,
                         3759.083740234375),
    "hopper-medium-expert-v2": (1_999_400, 3_214, 2089.87841796875, 1039.9569091796875, 315.8680114746094,
                                3759.083740234375),
    "walker2d-random-v2": (999_997, 48_908, 1.8713510036468506, 5.81272554397583, -17.00582504272461,
                           75.0345687866211),
    "walker2d-medium-v2": (999_995, 1_191, 2852.08837890625, 1095.443359375, -6.6056718826293945, 4226.93994140625),
    "walker2d-medium-replay-v2": (302_000, 1_093, 682.7012939453125, 895.95556640625, -50.196834564208984,
                                  4132.00048828125),
    "walker2d-expert-v2": (999_214, 1_001, 4920.5068359375, 136.3949432373047, 763.4161376953125, 5011.693359375),
    "walker2d-medium-expert-v2": (1_999_209, 2_191, 3796.57177734375, 1312.2825927734375, -6.6056718826293945,
                                  5011.693359375),
    "halfcheetah-random-v2": (1_000_000, 1_000, -288.797119140625, 80.43067932128906, -525.959716796875,
                              -85.35821533203125),
    "halfcheetah-medium-v2": (1_000_000, 1_000, 4770.3349609375, 355.7503967285156, -310.23419189453125,
                              5309.37939453125),
    "halfcheetah-medium-replay-v2": (202_000, 202, 3093.28564453125, 1680.6939697265625, -638.4852905273438,
                                     4985.1416015625),
    "halfcheetah-expert-v2": (1_000_000, 1_000, 10656.42578125, 441.6827087402344, 2045.8277587890625,
                              11252.03515625),
    "halfcheetah-medium-expert-v2": (2_000_000, 2_000, 7713.38037109375, 2970.242431640625, -310.23419189453125,
                                     11252.03515625),
}

# Decision Transformer evaluation targets (kzl/decision-transformer gym/experiment.py). Ant is not in the DT
# paper; its targets here are our choice (about 1.4x and 0.85x the D4RL expert reference), not a published recipe.
DT_TARGETS = {
    "halfcheetah": (12000.0, 6000.0),
    "hopper": (3600.0, 1800.0),
    "walker2d": (5000.0, 2500.0),
    "ant": (6000.0, 3600.0),
}
DT_RTG_SCALE = 1000.0

_GYM_NAMES = {"halfcheetah": "HalfCheetah", "hopper": "Hopper", "walker2d": "Walker2d", "ant": "Ant"}
# Observation sizes per env version. D4RL's Ant (gym v3) includes contact forces: Ant-v4 reproduces that with
# use_contact_forces=True (111); Ant-v5 drops the world body's forces (105).
_OBS_DIMS = {
    "halfcheetah": {"v4": 17, "v5": 17},
    "hopper": {"v4": 11, "v5": 11},
    "walker2d": {"v4": 17, "v5": 17},
    "ant": {"v4": 111, "v5": 105},
}
_ACT_DIMS = {"halfcheetah": 6, "hopper": 3, "walker2d": 6, "ant": 8}
_MINARI_LEVELS = {"medium": "medium-v0", "expert": "expert-v0"}  # Minari's mujoco namespace has no other D4RL level

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{file}"
OGBENCH_URL = "https://rail.eecs.berkeley.edu/datasets/ogbench/{file}"

# OGBench env facts (ogbench/manipspace/__init__.py registrations).
_OGBENCH_ENVS = {
    "scene-play-v0": {"env": "scene", "obs_dim": 40, "act_dim": 5, "max_steps": 750},
    "cube-double-play-v0": {"env": "cube-double", "obs_dim": 37, "act_dim": 5, "max_steps": 500},
}


@dataclass(frozen=True)
class Task:
    """One task: what to train on, which env evaluates it, and how its score is reported."""

    name: str
    family: str  # "locomotion" or "ogbench"
    score_type: str  # "normalized" (D4RL, x100) or "success" (OGBench success rate)
    act_dim: int
    max_episode_steps: int
    obs_dims: dict = field(repr=False)  # env version -> observation size
    gym_name: str = ""  # locomotion: gymnasium base name ("Walker2d"); ogbench: full env id
    ref_min: float | None = None
    ref_max: float | None = None
    rtg_targets: tuple = ()  # DT return-to-go targets; empty: taken from the data (OGBench single-task)
    rtg_scale: float = DT_RTG_SCALE
    minari_id: str | None = None
    dataset_files: tuple = ()  # file names looked for in the data dir, canonical (download target) first
    download_url: str | None = None
    goal_conditioned: bool = False
    eval_task_ids: tuple = ()  # OGBench evaluation goals (reset option task_id)
    ogbench_dataset: str | None = None  # OGBench file stem shared by a dataset's goal-conditioned/single-task tasks
    d4rl: DatasetStats | None = None  # the published D4RL dataset's statistics (D4RL_DATASET_STATS)

    def env_id(self, version: str | None = None) -> str:
        """The gymnasium id that evaluates this task (``Walker2d-v5``, ``scene-singletask-task1-v0``)."""
        if self.family == "ogbench":
            return self.gym_name
        return f"{self.gym_name}-{check_env_version(version)}"

    def obs_dim(self, version: str | None = None) -> int:
        if self.family == "ogbench":
            return self.obs_dims["v0"]
        return self.obs_dims[check_env_version(version)]

    def make_env(self, version: str | None = None, **kwargs):
        """Instantiate the evaluation env (imports gymnasium and, for OGBench, ogbench lazily)."""
        import gymnasium as gym

        if self.family == "ogbench":
            import_ogbench()  # registers the env ids
        elif self.gym_name == "Ant" and check_env_version(version) == "v4":
            kwargs.setdefault("use_contact_forces", True)  # D4RL's 111-dim Ant observation
        return gym.make(self.env_id(version), max_episode_steps=self.max_episode_steps, **kwargs)


def import_ogbench():
    """Import ogbench without the display warnings its rendering dependencies print on headless machines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ogbench
        import ogbench.relabel_utils  # noqa: F401
    return ogbench


def check_env_version(version: str | None) -> str:
    version = version or DEFAULT_ENV_VERSION
    if version not in ENV_VERSIONS:
        raise FrozenDTError(f"unknown MuJoCo env version {version!r}; choose one of {', '.join(ENV_VERSIONS)}")
    return version


def _locomotion_task(env: str, level: str) -> Task:
    name = f"{env}-{level}-v2"
    d4rl_file = f"{env}_{level.replace('-', '_')}-v2.hdf5"  # the file name D4RL serves and caches
    ref_min, ref_max = D4RL_REF_SCORES[env]
    minari_level = _MINARI_LEVELS.get(level)
    return Task(
        name=name,
        family="locomotion",
        score_type="normalized",
        act_dim=_ACT_DIMS[env],
        max_episode_steps=1000,
        obs_dims=_OBS_DIMS[env],
        gym_name=_GYM_NAMES[env],
        ref_min=ref_min,
        ref_max=ref_max,
        rtg_targets=DT_TARGETS[env],
        minari_id=f"mujoco/{env}/{minari_level}" if minari_level else None,
        dataset_files=(f"{name}.hdf5", d4rl_file, f"{name}.pkl"),
        download_url=D4RL_URL.format(file=d4rl_file),
        d4rl=DatasetStats(*D4RL_DATASET_STATS[name]) if name in D4RL_DATASET_STATS else None,
    )


def _ogbench_task(dataset: str, task_id: int | None) -> Task:
    facts = _OGBENCH_ENVS[dataset]
    stem = dataset[: -len("-v0")]  # "scene-play"
    if task_id is None:
        name, env_id, eval_ids = dataset, f"{facts['env']}-v0", OGBENCH_TASK_IDS
    else:
        name = f"{stem}-singletask-task{task_id}-v0"
        env_id, eval_ids = f"{facts['env']}-singletask-task{task_id}-v0", (task_id,)
    return Task(
        name=name,
        family="ogbench",
        score_type="success",
        act_dim=facts["act_dim"],
        max_episode_steps=facts["max_steps"],
        obs_dims={"v0": facts["obs_dim"]},
        gym_name=env_id,
        rtg_targets=(),
        rtg_scale=DT_RTG_SCALE,  # single-task returns run to about -4000 over an episode
        dataset_files=(f"{dataset}.npz",),
        download_url=OGBENCH_URL.format(file=f"{dataset}.npz"),
        goal_conditioned=task_id is None,
        eval_task_ids=eval_ids,
        ogbench_dataset=dataset,
    )


def _build_registry() -> dict[str, Task]:
    tasks = [_locomotion_task(env, level) for env in LOCOMOTION_ENVS for level in LOCOMOTION_LEVELS]
    for dataset in OGBENCH_DATASETS:
        tasks.append(_ogbench_task(dataset, None))
        tasks.extend(_ogbench_task(dataset, i) for i in OGBENCH_TASK_IDS)
    return {task.name: task for task in tasks}


TASKS: dict[str, Task] = _build_registry()


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name raises FrozenDTError suggesting the closest ones."""
    try:
        return TASKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, TASKS, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise FrozenDTError(f"unknown task {name!r}.{hint} (`frozen-dt data list` shows all tasks)") from None
