"""``frozen-dt eval``: load trained runs, roll them out through the vectorized harness, write and aggregate scores.

Runs evaluated on the same conditions (eval task, return targets, env version, precision: the seeds of a stack) run
together, every run x target in one vector env; each run's episodes are the ones it runs alone.

Each run directory gets ``eval-<checkpoint>.json`` (written atomically, only once the evaluation is complete):
every episode's return, length and score per return target, the checkpoint's step, the eval seed, the env version
and the hardware. Runs of the same configuration (they differ only in their seed) aggregate into one line: mean,
IQM and a 95 % interval over seeds (:mod:`frozen_dt.eval.stats`: a Student-t interval with the per-seed means
beside it for 2-4 seeds, the stratified bootstrap from 5); a single run's interval is over its episodes, and says so.
"""

from __future__ import annotations

import datetime
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from frozen_dt.algorithms import Problem, run_precision
from frozen_dt.config import EvalArgs
from frozen_dt.data.dataset import ObsStats
from frozen_dt.envs.registry import Task, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.locks import run_locks
from frozen_dt.schema import integer, list_of, mapping_of, nullable, number, record, text
from frozen_dt.run_dir import (RunSettings, checkpoint_path, eval_path, eval_suffix, latest_run, read_json,
                               read_run_config, write_json)
from frozen_dt.training.trainer import load_checkpoint

EVAL_RECORD = record({"task": text(200), "checkpoint_step": integer(0), "primary_target": text(200),
                      "targets": mapping_of(record({"episodes": list_of(record({"score": number()}), 10**7)}))},
                     {"device": text(500), "created_at": text(100), "max_steps": nullable(integer(1)),
                      "episodes": integer(1), "env_version": nullable(text(20))})


def read_eval_record(path: Path) -> dict:
    """``eval-<checkpoint>.json``, validated (:data:`EVAL_RECORD`: finite scores, every target with episodes, the
    primary target among them)."""
    found = read_json(path, EVAL_RECORD)
    if found["primary_target"] not in found["targets"]:
        raise FrozenDTError(f"{path}: primary_target {found['primary_target']!r:.60} is not among its targets")
    empty = [label for label, target in found["targets"].items() if not target["episodes"]]
    if empty:
        raise FrozenDTError(f"{path}: targets.{empty[0]:.60}.episodes is empty")
    return found


# Settings that do not change what a run learns: runs differing only in these (and the seed) are seeds of one config.
# ``compile`` and ``device_sampling`` change how fast a step runs (and which random batches a seed draws), not the
# method.
NOT_CONFIG = ("seed", "run_dir", "resume", "wandb", "download", "log_every", "save_every", "eval_every",
              "eval_episodes", "eval_max_steps", "config", "reference", "stop_after", "compile", "device_sampling")


@dataclass
class LoadedRun:
    run_dir: Path
    config: dict
    settings: RunSettings
    task: Task
    problem: Problem
    model: torch.nn.Module
    obs_stats: ObsStats | None
    step: int
    checkpoint: str

    def agent(self, target, precision: str):
        """The run's rollout agent for one return target."""
        return self.settings.spec.make_agent(self.settings.algo, self.model, self.obs_stats, self.problem, target,
                                             precision)


def load_run(run_dir: Path, which: str = "last", device: str = "cpu") -> LoadedRun:
    """A trained run's model with its checkpoint's weights, checked against the run's records."""
    from frozen_dt.parameters import check_frozen_fingerprint, load_trainable_state_dict

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FrozenDTError(f"{run_dir} is not a directory")
    path = checkpoint_path(run_dir, which)
    if not path.is_file():
        hint = " (best.pt exists only once a periodic evaluation ran)" if which == "best" else ""
        raise FrozenDTError(f"{run_dir} has no checkpoint {path.relative_to(run_dir)}{hint}")
    config, settings = read_run_config(run_dir)
    spec, run = settings.spec, settings.run
    task = get_task(run.task)
    state = load_checkpoint(path)
    problem = Problem.of_run(config, task)
    backbone = spec.backbone(settings.algo, run.seed)
    torch.manual_seed(run.seed)
    model = spec.build_model(settings.algo, problem, backbone)
    check_frozen_fingerprint(read_json(run_dir / "params.json"), model, run_dir)
    try:
        load_trainable_state_dict(model, state["algorithm"]["model"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise FrozenDTError(f"{path} does not fit the model its config.json describes ({error})") from None
    if state.get("obs_stats") is None and not spec.raw_observations:
        raise FrozenDTError(f"{path} carries no observation statistics")
    obs_stats = None if state.get("obs_stats") is None else ObsStats.from_dict(state["obs_stats"])
    return LoadedRun(run_dir, config, settings, task, problem, model.to(device).eval(), obs_stats,
                     int(state["step"]), which)


def eval_task_for(run: LoadedRun, name: str | None, env_version: str | None = None) -> Task:
    """The task to evaluate on (default: the training task); its env must have the model's dims."""
    task = get_task(name) if name else run.task
    version = env_version or run.config.get("env_version")
    dims = (task.obs_dim(version), task.act_dim)
    if dims != (run.config["obs_dim"], run.config["act_dim"]):
        raise FrozenDTError(f"{run.run_dir} was trained on {run.task.name} (obs {run.config['obs_dim']}, action "
                            f"{run.config['act_dim']}); {task.env_id(version)} has obs {dims[0]}, action {dims[1]}")
    run.settings.spec.condition_on(task)
    if task.goal_conditioned != run.task.goal_conditioned:
        kind = {True: "goal-conditioned", False: "not goal-conditioned"}
        raise FrozenDTError(f"{run.run_dir} was trained on {run.task.name}, which is "
                            f"{kind[run.task.goal_conditioned]}; {task.name} is {kind[task.goal_conditioned]}")
    return task


def eval_conditions(run: LoadedRun, args: EvalArgs) -> tuple:
    """What an evaluation of ``run`` runs on: the eval task, the return targets, the env version and the inference
    precision. Runs that agree on all four share one vector env (:func:`evaluate_together`)."""
    task = eval_task_for(run, args.task, args.env_version)
    targets = tuple(run.config["eval_targets"])
    if args.target_return is not None and run.settings.spec.return_conditioned:
        targets = (args.target_return,)
    env_version = args.env_version or run.config.get("env_version")
    return task, targets, env_version, args.precision or run_precision(run.settings.run)


def evaluate_together(runs: list[LoadedRun], args: EvalArgs, progress: bool = True) -> list[dict]:
    """Evaluate ``runs`` (the seeds of a stack, or any runs with the same :func:`eval_conditions`) in one vector env
    created once for every run x target (:func:`frozen_dt.eval.rollout.evaluate_agents`): each run's episodes are
    the ones it runs alone, on the same episode seeds, bit for bit. Writes each run's ``eval-<checkpoint>.json``;
    returns their contents in order."""
    from frozen_dt.eval.rollout import default_block, default_workers, evaluate_agents, target_label

    conditions = [eval_conditions(run, args) for run in runs]
    if len({(task.name, *rest) for task, *rest in conditions}) != 1:
        raise ValueError("runs evaluated together share their eval task, targets, env version and precision")
    task, targets, env_version, precision = conditions[0]
    total = args.episodes * len(runs) * (len(task.eval_task_ids) if task.goal_conditioned else len(targets))
    workers = args.workers or default_workers(args.num_envs, total, args.device)
    processes = args.env_processes == "on" or (args.env_processes == "auto" and args.device == "cuda")
    block = args.block or default_block(args.num_envs, args.device)

    started = time.time()
    evaluated = evaluate_agents(task, [lambda t, run=run: run.agent(t, precision) for run in runs], targets=targets,
                                episodes=args.episodes, num_envs=args.num_envs, workers=workers,
                                env_version=env_version, seed=args.eval_seed, progress=progress, keep_episodes=True,
                                env_processes=processes, max_steps=args.max_steps, block=block)
    seconds = round(time.time() - started, 1)
    records = []
    for run, results in zip(runs, evaluated):
        labels = [k[len("score@"):] for k in results if k.startswith("score@")]  # targets, or OGBench goals
        returns = dict.fromkeys(labels) if task.goal_conditioned else {target_label(t): t for t in targets}
        per_target = {label: {"target_return": returns[label], "score": results[f"score@{label}"],
                              "return": results[f"return@{label}"], "length": results[f"length@{label}"],
                              "episodes": results[f"episodes@{label}"]} for label in labels}
        if task.goal_conditioned:  # OGBench's overall success: every evaluation goal's episodes together
            episodes = [{**e, "goal": label} for label in labels for e in per_target[label]["episodes"]]
            per_target = {"all": {"target_return": None, "score": results["score"],
                                  "return": float(np.mean([e["return"] for e in episodes])),
                                  "length": float(np.mean([e["length"] for e in episodes])), "episodes": episodes},
                          **per_target}
        record = {
            "run_dir": str(run.run_dir), "checkpoint": run.checkpoint, "checkpoint_step": run.step,
            "train_task": run.settings.run.task, "task": task.name, "data": run_data_label(run.run_dir),
            "score_type": task.score_type,
            "env_id": task.env_id(env_version), "env_version": env_version, "episodes": args.episodes,
            "num_envs": args.num_envs, "workers": workers, "env_processes": processes, "block": block,
            "evaluated_with": len(runs), "eval_seed": args.eval_seed, "max_steps": args.max_steps,
            "precision": precision,
            "primary_target": next(iter(per_target)), "score": results["score"], "targets": per_target,
            "seconds": seconds, "device": device_name(args.device),
            "created_at": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        write_json(eval_file(run, task.name, env_version), record)
        records.append(record)
    return records


def run_data_label(run_dir: Path) -> str:
    """The training data's origin (:func:`frozen_dt.data.sources.data_label`): generated, d4rl, ogbench, ..."""
    from frozen_dt.data.sources import data_label

    path = Path(run_dir) / "dataset.json"
    return data_label(read_json(path).get("source", {})) if path.is_file() else "unknown"


def eval_file(run: LoadedRun, task: str, env_version: str | None) -> Path:
    """``eval-<checkpoint>.json``; evaluations on another task or env version than the run's own get their own
    file (``eval-last-hopper-expert-v2.json``, ``eval-last-v5.json``), so they never replace the main one."""
    return eval_path(run.run_dir, run.checkpoint,
                     eval_suffix(run.settings.run.task, run.config.get("env_version"), task, env_version))


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def config_key(settings: RunSettings, eval_task: str) -> tuple:
    """What makes runs seeds of one configuration: every setting that changes what a run learns (settings a version
    added later count at their defaults; ``--precision auto`` as what it resolved to on the run's device)."""
    args = {k: v for k, v in settings.record().items() if k not in NOT_CONFIG}
    args["precision"] = run_precision(settings.run)  # --precision auto is the precision it resolved to
    return (eval_task, tuple(sorted((k, str(v)) for k, v in args.items())))


def settings_that_differ(configs: list[dict]) -> list[str]:
    """For configurations that look alike (one algorithm and backbone on one task), each one's settings that differ
    among them, ``"lr=0.001; batch_size=64"`` (empty when there is only one)."""
    names = sorted({k for c in configs for k in c})
    differ = [k for k in names if len({c.get(k) for c in configs}) > 1]
    return ["; ".join(f"{k}={c.get(k, '-')}" for k in differ) for c in configs]


def aggregate(records: list[dict], target: str | None = None) -> dict:
    """Mean, IQM and 95 % interval of runs of one configuration at one target (default: each run's primary target);
    :func:`frozen_dt.eval.stats.seed_summary` says which interval (``ci_over``)."""
    from frozen_dt.eval.stats import seed_summary

    return seed_summary([[e["score"] for e in r["targets"][target or r["primary_target"]]["episodes"]]
                         for r in records])


BACKBONE_FIELDS = ("backbone", "layers", "init", "freeze")  # what a backbone-based algorithm's config names


def backbone_columns(settings: RunSettings) -> dict:
    """The run's backbone settings, "-" each for algorithms without a backbone."""
    has = settings.spec.load_backbone is not None
    return {k: getattr(settings.algo, k) if has else "-" for k in BACKBONE_FIELDS}


def describe(settings: RunSettings) -> str:
    """The algorithm, and its backbone settings when it has any."""
    if settings.spec.load_backbone is None:
        return settings.run.algo
    b = backbone_columns(settings)
    return f"{settings.run.algo} ({b['backbone']} layers {b['layers']}, init {b['init']}, freeze {b['freeze']})"


def run_eval(args: EvalArgs) -> list[dict]:
    from frozen_dt.training.stack import is_stack, runs_in

    if args.run_dirs:
        run_dirs = [run for d in args.run_dirs for run in runs_in(Path(d))]  # a stack dir: its seeds' runs
    else:  # the latest run; when it trained in a stack of seeds, the whole stack
        latest = latest_run()
        run_dirs = runs_in(latest.parent) if is_stack(latest.parent) else [latest]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise FrozenDTError("--device cuda: no CUDA device is available")
    with run_locks(d for d in run_dirs if Path(d).expanduser().is_dir()):  # no training or other eval writes them
        return evaluate_runs(run_dirs, args)


def evaluate_runs(run_dirs: list[Path], args: EvalArgs) -> list[dict]:
    """Evaluate ``run_dirs`` (each checked before any rollout), print each and each configuration's aggregate."""
    loaded = [load_run(d, args.checkpoint, args.device) for d in run_dirs]
    together: dict[tuple, list[LoadedRun]] = {}  # runs on the same conditions: one vector env (a stack's seeds)
    for run in loaded:  # every run's eval task checked (eval_task_for) before any rollout
        task, *rest = eval_conditions(run, args)
        together.setdefault((task.name, *rest), []).append(run)
    evaluated = {id(run): record for group in together.values()
                 for run, record in zip(group, evaluate_together(group, args))}
    records = []
    for run in loaded:
        record = evaluated[id(run)]
        records.append((run, record))
        kind = "success rate" if record["score_type"] == "success" else "normalized score"
        targets = "; ".join(f"target {k}: {kind} {v['score']:.1f} (return {v['return']:.1f})"
                            for k, v in record["targets"].items())
        cut = f", cut at {args.max_steps} steps" if args.max_steps else ""
        print(f"{run.run_dir} [{run.checkpoint}, step {run.step}] {record['task']} ({record['data']} data): {targets} "
              f"({record['episodes']} episodes{cut}; {record['seconds']:.0f} s for the {record['evaluated_with']} "
              "run(s) evaluated together)", flush=True)
    groups: dict[tuple, list] = {}
    for run, record in records:
        groups.setdefault(config_key(run.settings, record["task"]), []).append((run, record))
    alike: dict[tuple, list[tuple]] = {}  # configurations the description alone cannot tell apart
    for key, group in groups.items():
        alike.setdefault((key[0], describe(group[0][0].settings)), []).append(key)
    differs = {key: label for keys in alike.values()
               for key, label in zip(keys, settings_that_differ([dict(k[1]) for k in keys]))}
    for key, group in groups.items():
        name = describe(group[0][0].settings) + (f" {differs[key]}" if differs[key] else "")
        for label in group[0][1]["targets"]:
            s = aggregate([record for _, record in group], label)
            print(f"{key[0]} ({group[0][1]['data']} data) {name} target {label}: "
                  f"{s['mean']:.1f} [95 % interval {s['ci_low']:.1f}, {s['ci_high']:.1f}, {s['ci_over']}"
                  + (f"; seeds {', '.join(f'{v:.1f}' for v in s['per_seed'])}" if 2 <= s['n_seeds'] < 5 else "")
                  + "], "
                  f"IQM {s['iqm']:.1f}, {s['n_seeds']} seed(s), {s['n_episodes']} episodes", flush=True)
    return [r for _, r in records]
