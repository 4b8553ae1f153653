"""``frozen-dt train``: resolve the settings, load data and model, run the shared trainer, report the score.

Everything algorithm-specific comes from the algorithm's spec (:mod:`frozen_dt.algorithms`). Order of work:
settings and recipes, then the backbone if the algorithm has one (so a model problem surfaces before a long dataset
generation), then the dataset, the model, the run directory's records, training with periodic evaluation, and a
final line with the evaluated score.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from frozen_dt.algorithms import Problem, run_precision
from frozen_dt.envs.registry import Task, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.locks import run_locks
from frozen_dt.run_dir import (RunSettings, checkpoint_path, default_run_dir, read_json, read_run_config,
                               write_json, write_run_metadata)
from frozen_dt.training.recipes import apply_recipes
from frozen_dt.training.sinks import WandbSink, import_wandb
from frozen_dt.training.trainer import Trainer

RESUME_MAY_CHANGE = ("task", "resume", "steps", "wandb", "download", "stop_after")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A finished ``train``: its run directory (with ``--seeds``, the stack's) and the final evaluation (the first
    seed's; every seed's is in its run dir; None without evaluation)."""

    run_dir: Path
    result: dict | None


def resumed_settings(given: dict, explicit: frozenset) -> tuple[RunSettings, dict]:
    """The saved settings of ``given["resume"]``, with the few a continuation may change."""
    run_dir = Path(given["resume"]).expanduser()
    if not checkpoint_path(run_dir).is_file():
        raise FrozenDTError(f"--resume {run_dir}: no checkpoint there (checkpoints/last.pt)")
    config, saved = read_run_config(run_dir)
    if given["task"] != saved.run.task:
        raise FrozenDTError(f"--resume {run_dir}: that run trains {saved.run.task}, not {given['task']}")
    changed = [k for k in sorted(explicit) if k not in RESUME_MAY_CHANGE and given[k] != saved.get(k)]
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in changed)
        raise FrozenDTError(f"--resume continues a run exactly; {flags} cannot change (only --steps, --wandb, "
                            "--download can)")
    run = dataclasses.replace(saved.run, resume=str(run_dir), run_dir=str(run_dir), download=given["download"],
                              wandb=given["wandb"], stop_after=given.get("stop_after"),
                              steps=given["steps"] if "steps" in explicit else saved.run.steps)
    run.validate()
    return RunSettings(run, saved.spec, saved.algo), config


def load_dataset(run, task: Task):
    """``--dataset FILE`` if given (any supported format, checked against the task's dims), else the task's own
    dataset from the first source that has it (generated when nothing else does)."""
    from frozen_dt.data.sources import load_any, load_task_dataset

    if run.dataset:
        if not Path(run.dataset).expanduser().is_file():
            raise FrozenDTError(f"--dataset {run.dataset}: no such file")
        return load_any(str(Path(run.dataset).expanduser()), task_name=task.name)[0]
    return load_task_dataset(task, download=run.download, generate=True)


def train(given: dict, explicit: frozenset = frozenset(), *, report: bool = True) -> Outcome:
    """Train as ``given`` says (flat run and algorithm settings; those in ``explicit`` were given on the command
    line); returns the run dir and its final evaluation (with ``--seeds``: the stack dir and the first seed's; every
    seed's is in its run dir). ``report``: end with the reference run, the data's level and the scale (not for a
    reference itself). The run directories it writes are locked (:mod:`frozen_dt.locks`) until it returns."""
    with ExitStack() as held:
        return _train(given, explicit, lambda dirs: held.enter_context(run_locks(dirs)), report=report)


def _train(given: dict, explicit: frozenset, lock, *, report: bool) -> Outcome:
    from frozen_dt.config import parse_seeds
    from frozen_dt.training.stack import is_stack, read_stack

    started = time.time()  # --stop-after counts from here
    resuming = bool(given.get("resume"))
    stack_dir, members = None, None
    if resuming and Path(given["resume"]).expanduser().is_dir():
        lock([given["resume"]])  # before anything of it is read
    if resuming and is_stack(given["resume"]):
        stack_dir = Path(given["resume"]).expanduser()
        seeds, member_dirs = read_stack(stack_dir)
        lock(member_dirs)
        members = [resumed_settings({**given, "resume": str(d)}, explicit) for d in member_dirs]
        settings = members[0][0]
    elif resuming:
        settings, config = resumed_settings(given, explicit)
        seeds, members = [settings.run.seed], [(settings, config)]
    else:
        settings, recipe_record = apply_recipes(given, explicit)
        if settings.run.seeds is not None and "seed" in explicit:
            raise FrozenDTError("give either --seed or --seeds, not both")
        seeds = parse_seeds(settings.run.seeds) if settings.run.seeds is not None else [settings.run.seed]
    spec, run = settings.spec, settings.run
    task = get_task(run.task)
    spec.condition_on(task)
    if run.device == "cuda" and not torch.cuda.is_available():
        raise FrozenDTError("--device cuda: no CUDA device is available")
    if run.wandb:
        import_wandb(run.wandb)  # fail before any loading
    stacked = stack_dir is not None or (not resuming and run.seeds is not None)
    if not resuming and not stacked:
        run = dataclasses.replace(run, run_dir=str(Path(run.run_dir or default_run_dir(task.name, spec.name))
                                                   .expanduser()))
        lock([run.run_dir])
    if stacked and stack_dir is None:
        stack_dir = Path(run.run_dir).expanduser() if run.run_dir else default_run_dir(task.name, spec.name)
        lock([stack_dir, *(stack_dir / f"seed{seed}" for seed in seeds)])
        if is_stack(stack_dir):
            raise FrozenDTError(f"{stack_dir} already holds a stack of seeds: continue it with --resume {stack_dir}, "
                                "or choose another --run-dir")

    backbones = [spec.backbone(settings.algo, seed) for seed in seeds]  # a shared frozen slice is loaded once
    dataset = load_dataset(run, task)
    env_version = run.env_version or dataset.source.get("env_version")
    targets = spec.eval_targets(task, dataset)
    problem = Problem.of(task, dataset.obs_dim, dataset.act_dim)

    trainers, runs = [], []
    for i, (seed, backbone) in enumerate(zip(seeds, backbones)):
        if resuming:
            member_settings, config = members[i]
            member = dataclasses.replace(member_settings.run)
        else:
            member_dir = None if stack_dir is None else stack_dir / f"seed{seed}"
            member = dataclasses.replace(run, seed=seed, seeds=None,
                                         run_dir=str(member_dir) if member_dir else run.run_dir)
            config = None
        runs.append(member)
        trainers.append(build_member(spec, settings.algo, member, task, dataset, problem, backbone, targets,
                                     env_version, config=config, recipe_record=None if resuming else recipe_record,
                                     stack=None if stack_dir is None else {"dir": str(stack_dir), "seeds": seeds},
                                     quiet=i > 0))
        trainers[-1].stop_at = started + run.stop_after if run.stop_after else None
    if stack_dir is None:
        from frozen_dt.training.report import Clock, data_level_line, scale_line

        with Clock() as clock:
            result = trainers[0].run(resume=resuming)
        if trainers[0].stopped:
            print(stopped_line(trainers[0].step, run.steps, trainers[0].run_dir), flush=True)
            return Outcome(Path(trainers[0].run_dir), None)
        reference = train_reference(run, trainers[0].run_dir) if run.reference and not resuming else None
        print(final_line(task, runs[0], trainers[0].run_dir, result), flush=True)
        if not report:
            return Outcome(Path(trainers[0].run_dir), result)
        if reference is not None:
            print(final_line(task, dataclasses.replace(run, algo=run.reference), reference.run_dir, reference.result)
                  .replace("frozen-dt: ", "frozen-dt: reference: ", 1), flush=True)
        for line in (data_level_line(task, dataset), scale_line(settings, clock.seconds)):
            if line:
                print(line, flush=True)
        return Outcome(Path(trainers[0].run_dir), result)

    from frozen_dt.training.stack import StackTrainer, write_stack

    if not resuming:
        write_stack(stack_dir, task=task.name, algo=spec.name, seeds=seeds)
    evaluate = policy_evaluation(spec, settings.algo, problem, task, targets, env_version, runs[0])
    results = StackTrainer(trainers, seeds, stack_dir, evaluate=evaluate).run(resume=resuming)
    if trainers[0].stopped:
        print(stopped_line(trainers[0].step, run.steps, stack_dir), flush=True)
        return Outcome(stack_dir, None)
    for member, trainer, result in zip(runs, trainers, results):
        print(final_line(task, member, trainer.run_dir, result), flush=True)
    return Outcome(stack_dir, results[0])


def train_reference(run, run_dir: Path):
    """Train ``run.reference`` with its recipe on the same data, steps, seed and evaluation as ``run``."""
    from frozen_dt.algorithms import get_spec
    from frozen_dt.config import RunConfig

    shared = ("task", "steps", "seed", "eval_episodes", "eval_max_steps", "eval_every", "log_every", "save_every",
              "device", "env_version", "dataset", "download")
    fields = dataclasses.fields(RunConfig) + dataclasses.fields(get_spec(run.reference).config)
    settings = {f.name: f.default for f in fields}
    settings.update({k: getattr(run, k) for k in shared}, algo=run.reference,
                    run_dir=str(Path(run_dir) / f"reference-{run.reference}"))
    return train(settings, frozenset(shared) | {"algo", "run_dir"}, report=False)


def build_member(spec, algo_config, run, task: Task, dataset, problem: Problem, backbone, targets, env_version, *,
                 config: dict | None, recipe_record: dict | None, stack: dict | None, quiet: bool = False) -> Trainer:
    """One seed's model, algorithm, run directory records and trainer (``config``: the saved ``config.json`` of a
    run being resumed, else None for a new run)."""
    from frozen_dt.parameters import check_frozen_fingerprint, frozen_fingerprint, param_counts

    random.seed(run.seed)
    torch.manual_seed(run.seed)
    model = spec.build_model(algo_config, problem, backbone)
    algorithm = spec.build_algorithm(algo_config, model, dataset, problem, run)
    torch_rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [])
    params = {**param_counts(model), "frozen_fingerprint": frozen_fingerprint(model)}
    if not quiet:
        print(f"frozen-dt: {task.name} {spec.name}: {params['trainable_params']:,} trainable parameters, "
              f"{params['frozen_params']:,} frozen", flush=True)

    if config is not None:
        run_dir = Path(run.run_dir)
        check_frozen_fingerprint(read_json(run_dir / "params.json"), model, run_dir)
        config["args"]["steps"] = run.steps
        config.setdefault("resumes", []).append({"at": datetime.datetime.now().isoformat(timespec="seconds"),
                                                 "steps": run.steps})
        write_json(run_dir / "config.json", config)
    else:
        run_dir = Path(run.run_dir).expanduser() if run.run_dir else default_run_dir(task.name, spec.name)
        if checkpoint_path(run_dir).exists():
            raise FrozenDTError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, or choose "
                                "another --run-dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        record = RunSettings(dataclasses.replace(run, run_dir=str(run_dir)), spec, algo_config).record()
        config = {"args": record, **recipe_record, "env_version": env_version, "eval_targets": list(targets),
                  "rtg_scale": problem.rtg_scale, "max_timestep": problem.max_timestep, "obs_dim": problem.obs_dim,
                  "act_dim": problem.act_dim, "created_at": datetime.datetime.now().isoformat(timespec="seconds")}
        if stack is not None:
            config["stack"] = stack  # trained beside these seeds, in one process (frozen_dt.training.stack)
        write_run_metadata(run_dir, config=config, dataset=dataset, params=params)

    evaluate_many = policy_evaluation(spec, algo_config, problem, task, targets, env_version, run)
    sinks = (WandbSink(run.wandb, run_dir, config),) if run.wandb else ()
    trainer = Trainer(algorithm, run_dir, steps=run.steps, seed=run.seed, log_every=run.log_every,
                      eval_every=run.eval_every, save_every=run.save_every,
                      evaluate=(lambda algo, step: evaluate_many([algo], step)[0]) if evaluate_many else None,
                      sinks=sinks)
    if stack is not None:
        trainer.own_torch_rng = torch_rng
    return trainer


def policy_evaluation(spec, algo_config, problem: Problem, task: Task, targets, env_version, run):
    """The periodic evaluation of ``run``'s settings: ``evaluate(algorithms, step) -> [results]`` runs every
    algorithm's policy x every return target in one vector env (:func:`frozen_dt.eval.rollout.evaluate_agents`;
    each policy's episodes are those it runs alone); None when ``run`` evaluates nothing (``--eval-episodes 0``)."""
    if run.eval_episodes <= 0:
        return None

    def evaluate(algorithms: list, step: int) -> list[dict]:
        from frozen_dt.eval.rollout import EVAL_NUM_ENVS, default_block, default_workers, evaluate_agents

        episodes = run.eval_episodes * len(algorithms) * len(targets)
        return evaluate_agents(task, [lambda target, algo=algo: spec.make_agent(algo_config, algo.model, algo.obs_stats,
                                                                                problem, target, run_precision(run))
                                      for algo in algorithms],
                               targets=targets, episodes=run.eval_episodes, num_envs=EVAL_NUM_ENVS,
                               workers=default_workers(EVAL_NUM_ENVS, episodes, run.device),
                               block=default_block(EVAL_NUM_ENVS, run.device),
                               env_version=env_version, max_steps=run.eval_max_steps, progress=False)

    return evaluate


def stopped_line(step: int, steps: int, run_dir: Path) -> str:
    return (f"frozen-dt: stopped at step {step} of {steps} (--stop-after); its checkpoints hold it: continue with "
            f"--resume {run_dir}")


def final_line(task: Task, run, run_dir: Path, result: dict | None) -> str:
    head = f"frozen-dt: {task.name} {run.algo}, {run.steps} steps, run dir {run_dir}"
    if result is None:
        return f"{head}: not evaluated (--eval-episodes 0)"
    kind = "success rate" if task.score_type == "success" else "normalized score"
    per_target = "; ".join(f"target {k[len('score@'):]}: {kind} {v:.1f}, return {result['return@' + k[6:]]:.1f}"
                           for k, v in result.items() if k.startswith("score@"))
    cut = f", episodes cut at {run.eval_max_steps} steps" if run.eval_max_steps else ""
    return (f"{head}: {kind} {result['score']:.1f} at step {result['step']} "
            f"({run.eval_episodes} episodes per target{cut}; {per_target})")
