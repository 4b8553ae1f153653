"""``frozen-dt train``: resolve the recipe, load data and model, run the shared trainer, report the score.

Order of work: arguments and recipes, then the backbone (so a model problem surfaces before a long dataset
generation), then the dataset, the model, the run directory's records, training with periodic evaluation, and a
final line with the evaluated score.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
from pathlib import Path

import numpy as np
import torch

from frozen_dt.config import TrainArgs
from frozen_dt.envs.registry import Task, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.recipes import apply_recipes
from frozen_dt.run_files import WandbSink, import_wandb, read_json, write_json, write_run_metadata
from frozen_dt.trainer import Trainer, checkpoint_path

SEQUENCE_ALGORITHMS = ("dt", "frozen-dt")
GOAL_ONLY_ALGORITHMS = ("gciql",)  # train on goal-conditioned tasks only
GOAL_CONDITIONED_ALGORITHMS = GOAL_ONLY_ALGORITHMS + SEQUENCE_ALGORITHMS  # can take a goal (a goal token for DTs)
RAW_OBSERVATION_ALGORITHMS = ("gciql",)  # trained on unnormalized observations (their checkpoints carry no stats)
RESUME_MAY_CHANGE = ("task", "resume", "steps", "wandb", "download")
VALUE_NETS = ("discount", "tau", "hidden_dim", "hidden_layers")
ALGO_FIELDS = {  # settings that only some algorithms read; recorded as unused for the others
    "dt": ("embed_dim", "dt_layers", "dt_heads"),
    "frozen-dt": ("backbone", "layers", "init", "freeze", "timestep_features"),
    "bc": (),
    "iql": VALUE_NETS + ("expectile", "beta", "normalize_reward", "deterministic_actor"),
    "cql": VALUE_NETS + ("normalize_reward", "actor_lr", "cql_alpha", "cql_n_actions"),
    "gciql": VALUE_NETS + ("expectile", "alpha"),
}
SEQUENCE_FIELDS = ("context", "warmup_steps", "grad_clip", "dropout")  # read by dt and frozen-dt only


def default_run_dir(task: str, algo: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / task / algo / stamp
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{stamp}-{n}")
    return path


def resumed_args(args: TrainArgs, explicit: frozenset) -> tuple[TrainArgs, dict]:
    """The saved configuration of ``args.resume``, with the few settings a continuation may change."""
    run_dir = Path(args.resume).expanduser()
    if not checkpoint_path(run_dir).is_file():
        raise FrozenDTError(f"--resume {run_dir}: no checkpoint there (checkpoints/last.pt)")
    config = read_json(run_dir / "config.json")
    saved = TrainArgs(**config["args"])
    if args.task != saved.task:
        raise FrozenDTError(f"--resume {run_dir}: that run trains {saved.task}, not {args.task}")
    changed = [k for k in sorted(explicit) if k not in RESUME_MAY_CHANGE and getattr(args, k) != getattr(saved, k)]
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in changed)
        raise FrozenDTError(f"--resume continues a run exactly; {flags} cannot change (only --steps, --wandb, "
                            "--download can)")
    resolved = dataclasses.replace(saved, resume=str(run_dir), run_dir=str(run_dir), download=args.download,
                                   wandb=args.wandb, steps=args.steps if "steps" in explicit else saved.steps)
    resolved.validate()
    return resolved, config


def unused_fields(algo: str) -> list[str]:
    """Settings the run's algorithm does not read (recorded in config.json)."""
    own = set(ALGO_FIELDS[algo]) | (set(SEQUENCE_FIELDS) if algo in SEQUENCE_ALGORITHMS else set())
    others = {k for keys in ALGO_FIELDS.values() for k in keys} | set(SEQUENCE_FIELDS)
    return sorted(others - own)


def value_net_sizes(args: TrainArgs) -> dict:
    """``hidden``/``n_hidden`` overrides of the value-based baselines' networks (none: each algorithm's own)."""
    sizes = {"hidden": args.hidden_dim, "n_hidden": args.hidden_layers}
    return {k: v for k, v in sizes.items() if v is not None}


def build_model(args: TrainArgs, obs_dim: int, act_dim: int, task: Task, backbone=None):
    if args.algo == "bc":
        from frozen_dt.baselines.bc import MLPPolicy

        return MLPPolicy(obs_dim, act_dim)
    if args.algo == "iql":
        from frozen_dt.baselines.iql import IQLNetworks

        return IQLNetworks(obs_dim, act_dim, **value_net_sizes(args))
    if args.algo == "cql":
        from frozen_dt.baselines.cql import CQLNetworks

        return CQLNetworks(obs_dim, act_dim, **value_net_sizes(args))
    if args.algo == "gciql":
        from frozen_dt.baselines.gciql import GoalConditionedNetworks

        return GoalConditionedNetworks(obs_dim, act_dim, **value_net_sizes(args))
    goal_dim = obs_dim if task.goal_conditioned else None  # OGBench goals are full observations
    if args.algo == "dt":
        from frozen_dt.baselines.dt import DecisionTransformer

        return DecisionTransformer(obs_dim, act_dim, context=args.context, width=args.embed_dim,
                                   n_layer=args.dt_layers, n_head=args.dt_heads, dropout=args.dropout,
                                   max_ep_len=task.max_episode_steps, goal_dim=goal_dim)
    from frozen_dt.models import FrozenLMDecisionTransformer

    if backbone.max_positions is not None and 3 * args.context > backbone.max_positions:
        raise FrozenDTError(f"--context {args.context} makes {3 * args.context} tokens, more than the "
                            f"{backbone.max_positions} learned positions of {args.backbone}")
    return FrozenLMDecisionTransformer(backbone, obs_dim, act_dim, context=args.context,
                                       timestep_features=args.timestep_features, dropout=args.dropout,
                                       goal_dim=goal_dim)


def check_conditioning(algo: str, task: Task) -> None:
    """Goal-conditioned tasks take algorithms that can be given a goal; GCIQL takes nothing else."""
    if task.goal_conditioned and algo not in GOAL_CONDITIONED_ALGORITHMS:
        raise FrozenDTError(f"{task.name} is goal-conditioned; --algo {algo} is not (use a single-task variant such as "
                            f"{task.name.replace('-v0', '-singletask-task1-v0')}, or --algo gciql)")
    if algo in GOAL_ONLY_ALGORITHMS and not task.goal_conditioned:
        raise FrozenDTError(f"--algo {algo} is goal-conditioned; {task.name} is not (use a goal-conditioned OGBench "
                            "task such as scene-play-v0)")


def check_frozen_fingerprint(run_dir: Path, model) -> None:
    """The frozen weights a run's model was built with now must be the ones it trained with."""
    from frozen_dt.models import frozen_fingerprint

    saved = read_json(Path(run_dir) / "params.json").get("frozen_fingerprint", [])
    if not np.allclose(saved, frozen_fingerprint(model), rtol=1e-9, atol=0):
        raise FrozenDTError(f"{run_dir}: the frozen backbone weights differ from the ones the run was trained with "
                            "(another package version or cache?)")


def eval_targets(args: TrainArgs, task: Task, dataset) -> tuple:
    """The task's DT targets; tasks without published ones (OGBench single-task) use the data's best return.
    Policies that are not return-conditioned have one target, None."""
    if args.algo not in SEQUENCE_ALGORITHMS or task.goal_conditioned:
        return (None,)
    return tuple(task.rtg_targets) or (float(dataset.episode_returns().max()),)


def build_algorithm(args: TrainArgs, task: Task, model, dataset):
    """The training algorithm around ``model`` on ``dataset`` (with its data view); ``.obs_stats`` for the agent."""
    if args.algo == "bc":
        from frozen_dt.baselines.bc import BehaviorCloning

        algorithm = BehaviorCloning(model, dataset, batch_size=args.batch_size, lr=args.lr,
                                    weight_decay=args.weight_decay, device=args.device)
        return algorithm, algorithm.obs_stats
    if args.algo == "iql":
        from frozen_dt.baselines.common import reward_scale
        from frozen_dt.baselines.iql import IQL
        from frozen_dt.views import TransitionView

        view = TransitionView(dataset)
        algorithm = IQL(model, view, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        discount=args.discount, tau=args.tau, expectile=args.expectile, beta=args.beta,
                        reward_scale=reward_scale(dataset) if args.normalize_reward else 1.0,
                        deterministic=args.deterministic_actor, device=args.device)
        return algorithm, view.obs_stats
    if args.algo == "cql":
        from frozen_dt.baselines.common import reward_scale
        from frozen_dt.baselines.cql import CQL
        from frozen_dt.views import TransitionView

        view = TransitionView(dataset)
        algorithm = CQL(model, view, batch_size=args.batch_size, actor_lr=args.actor_lr or args.lr, critic_lr=args.lr,
                        discount=args.discount, tau=args.tau, cql_alpha=args.cql_alpha,
                        cql_n_actions=args.cql_n_actions,
                        reward_scale=reward_scale(dataset) if args.normalize_reward else 1.0, device=args.device)
        return algorithm, view.obs_stats
    if args.algo == "gciql":
        from frozen_dt.baselines.gciql import GCIQL
        from frozen_dt.views import GoalView

        algorithm = GCIQL(model, GoalView(dataset, discount=args.discount), batch_size=args.batch_size, lr=args.lr,
                          discount=args.discount, tau=args.tau, expectile=args.expectile, alpha=args.alpha,
                          device=args.device)
        return algorithm, None
    from frozen_dt.sequence_algorithm import SequenceModelAlgorithm
    from frozen_dt.views import SequenceView

    view = SequenceView(dataset, args.context, rtg_scale=task.rtg_scale, max_timestep=task.max_episode_steps,
                        goal_conditioned=task.goal_conditioned)
    algorithm = SequenceModelAlgorithm(model, view, batch_size=args.batch_size, lr=args.lr,
                                       weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                                       grad_clip=args.grad_clip, rtg_scale=task.rtg_scale,
                                       max_timestep=task.max_episode_steps, device=args.device,
                                       precision=args.precision)
    return algorithm, view.obs_stats


def make_agent(args: TrainArgs, config: dict, model, obs_stats, target, precision: str | None = None):
    """The rollout agent of a trained model (:class:`frozen_dt.eval.rollout.Agent`) for one return target."""
    if args.algo not in SEQUENCE_ALGORITHMS:
        from frozen_dt.baselines.bc import ObservationPolicyAgent

        return ObservationPolicyAgent(model, obs_stats)
    from frozen_dt.sequence_algorithm import ReturnConditionedAgent

    return ReturnConditionedAgent(model, obs_stats, config["rtg_scale"], target, max_timestep=config["max_timestep"],
                                  precision=precision or args.precision)


def load_dataset(args: TrainArgs, task: Task):
    """``--dataset FILE`` if given (any supported format, checked against the task's dims), else the task's own
    dataset from the first source that has it (generated when nothing else does)."""
    from frozen_dt.sources import load_any, load_task_dataset

    if args.dataset:
        if not Path(args.dataset).expanduser().is_file():
            raise FrozenDTError(f"--dataset {args.dataset}: no such file")
        return load_any(str(Path(args.dataset).expanduser()), task_name=task.name)[0]
    return load_task_dataset(task, download=args.download, generate=True)


def train(args: TrainArgs, explicit: frozenset = frozenset()) -> dict | None:
    """Train as ``args`` says (flags in ``explicit`` were given on the command line); returns the final evaluation."""
    resuming = bool(args.resume)
    if resuming:
        args, config = resumed_args(args, explicit)
    else:
        args, recipe_record = apply_recipes(args, explicit)
    task = get_task(args.task)
    check_conditioning(args.algo, task)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise FrozenDTError("--device cuda: no CUDA device is available")
    if args.wandb:
        import_wandb(args.wandb)  # fail before any loading

    backbone = None
    if args.algo == "frozen-dt":
        from frozen_dt.backbones import load_backbone

        backbone = load_backbone(args.backbone, args.layers, args.init, args.freeze, seed=args.seed)
    dataset = load_dataset(args, task)
    env_version = args.env_version or dataset.source.get("env_version")
    targets = eval_targets(args, task, dataset)

    from frozen_dt.models import frozen_fingerprint, param_counts

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = build_model(args, dataset.obs_dim, dataset.act_dim, task, backbone)
    algorithm, obs_stats = build_algorithm(args, task, model, dataset)
    params = {**param_counts(model), "frozen_fingerprint": frozen_fingerprint(model)}
    print(f"frozen-dt: {task.name} {args.algo}: {params['trainable_params']:,} trainable parameters, "
          f"{params['frozen_params']:,} frozen", flush=True)

    if resuming:
        run_dir = Path(args.run_dir)
        check_frozen_fingerprint(run_dir, model)
        config["args"]["steps"] = args.steps
        config.setdefault("resumes", []).append({"at": datetime.datetime.now().isoformat(timespec="seconds"),
                                                 "steps": args.steps})
        write_json(run_dir / "config.json", config)
    else:
        run_dir = Path(args.run_dir).expanduser() if args.run_dir else default_run_dir(task.name, args.algo)
        if checkpoint_path(run_dir).exists():
            raise FrozenDTError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, or choose "
                                "another --run-dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {"args": dataclasses.asdict(dataclasses.replace(args, run_dir=str(run_dir))), **recipe_record,
                  "unused": unused_fields(args.algo),
                  "env_version": env_version, "eval_targets": list(targets), "rtg_scale": task.rtg_scale,
                  "max_timestep": task.max_episode_steps, "obs_dim": dataset.obs_dim, "act_dim": dataset.act_dim,
                  "created_at": datetime.datetime.now().isoformat(timespec="seconds")}
        write_run_metadata(run_dir, config=config, dataset=dataset, params=params)

    def evaluate(algo, step: int) -> dict:
        from frozen_dt.eval.rollout import EVAL_NUM_ENVS, default_workers, evaluate_agent

        return evaluate_agent(task, lambda target: make_agent(args, config, algo.model, obs_stats, target),
                              targets=targets, episodes=args.eval_episodes, num_envs=EVAL_NUM_ENVS,
                              workers=default_workers(EVAL_NUM_ENVS, args.eval_episodes, args.device),
                              env_version=env_version, max_steps=args.eval_max_steps, progress=False)

    sinks = (WandbSink(args.wandb, run_dir, config),) if args.wandb else ()
    trainer = Trainer(algorithm, run_dir, steps=args.steps, seed=args.seed, obs_stats=obs_stats,
                      log_every=args.log_every, eval_every=args.eval_every, save_every=args.save_every,
                      evaluate=evaluate if args.eval_episodes > 0 else None, sinks=sinks)
    result = trainer.run(resume=resuming)
    print(final_line(task, args, run_dir, result), flush=True)
    return result


def final_line(task: Task, args: TrainArgs, run_dir: Path, result: dict | None) -> str:
    head = f"frozen-dt: {task.name} {args.algo}, {args.steps} steps, run dir {run_dir}"
    if result is None:
        return f"{head}: not evaluated (--eval-episodes 0)"
    kind = "success rate" if task.score_type == "success" else "normalized score"
    per_target = "; ".join(f"target {k[len('score@'):]}: {kind} {v:.1f}, return {result['return@' + k[6:]]:.1f}"
                           for k, v in result.items() if k.startswith("score@"))
    cut = f", episodes cut at {args.eval_max_steps} steps" if args.eval_max_steps else ""
    return (f"{head}: {kind} {result['score']:.1f} at step {result['step']} "
            f"({args.eval_episodes} episodes per target{cut}; {per_target})")
