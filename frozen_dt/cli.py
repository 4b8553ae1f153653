"""The frozen-dt command: train, eval, data, leaderboard, probe and heads.

User-fixable problems (:class:`~frozen_dt.errors.FrozenDTError`) print one message and exit with code 2.
``train`` takes the run's settings (:class:`~frozen_dt.config.RunConfig`) and the settings of the algorithm that
``--algo`` names (its spec's config), so ``frozen-dt train --algo iql --help`` lists IQL's flags only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from frozen_dt.algorithms import ALGORITHMS
from frozen_dt.config import (AblateArgs, CompareArgs, CopyProbeArgs, EvalArgs, LeaderboardArgs, ProbeArgs, RunConfig,
                              SweepArgs)
from frozen_dt.errors import FrozenDTError, os_error_message
from frozen_dt.settings import add_arguments, explicit_options, from_namespace

DESCRIPTION = ("frozen-dt: offline RL with Decision Transformers on a frozen slice of a text-pretrained LM, "
               "and baselines")


def cmd_data_list(ns) -> None:
    from frozen_dt.data.sources import locate
    from frozen_dt.envs.registry import TASKS

    rows = []
    for task in TASKS.values():
        found = locate(task)
        rows.append({
            "task": task.name,
            "env": task.env_id(),
            "score": task.score_type,
            "dataset": "absent" if found is None else f"present: {found.path}",
        })
    if ns.json:
        print(json.dumps(rows, indent=2))
        return
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("task", "env", "score")}
    print("  ".join(k.ljust(w) for k, w in widths.items()) + "  dataset")
    for r in rows:
        print("  ".join(r[k].ljust(w) for k, w in widths.items()) + "  " + r["dataset"])


def cmd_export(ns) -> None:
    from frozen_dt.export import export_run

    out, meta = export_run(ns.run_dir, fmt=ns.format, out=ns.out, checkpoint=ns.checkpoint)
    print(f"frozen-dt: {meta['algo']} policy of {meta['run_dir']} [{meta['checkpoint']}, step {meta['step']}] -> {out} "
          f"({ns.format}; inputs {', '.join(meta['inputs'])}; output action ({meta['act_dim']},) per row)")


def cmd_algorithms(ns) -> None:
    from frozen_dt.algorithms import algorithm_table, get_spec

    if ns.markdown:
        print(algorithm_table(), end="")
        return
    for name in ALGORITHMS:
        spec = get_spec(name)
        print(f"{name:10} {spec.summary} [{', '.join(spec.conditioning)}]; {spec.source}")


def cmd_data_info(ns) -> None:
    from frozen_dt.data.sources import load_any

    dataset, task = load_any(ns.name, task_name=ns.task, download=ns.download, download_source=ns.source)
    info = dataset.summary(task)
    if ns.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if key == "source":
            for k, v in value.items():
                print(f"source.{k}: {json.dumps(v) if isinstance(v, dict) else v}")
        elif isinstance(value, float):
            print(f"{key}: {value:.4f}")
        else:
            print(f"{key}: {value}")


def cmd_data_verify(ns) -> int:
    from frozen_dt.data.sources import load_any
    from frozen_dt.data.verify import compare, reference, report_lines
    from frozen_dt.envs.registry import get_task

    task = get_task(ns.task)
    reference(task)
    dataset, _ = load_any(ns.dataset or task.name, task_name=task.name)
    result = compare(dataset, task)
    print(json.dumps(result, indent=2) if ns.json else "\n".join(report_lines(result)))
    return 0 if result["within_tolerance"] else 1


def cmd_data_export(ns) -> None:
    from frozen_dt.data.minari_export import export_minari

    dataset_id, path = export_minari(ns.task, dataset_id=ns.name, dataset_path=ns.dataset, author=ns.author)
    print(f"frozen-dt: {ns.task} -> local Minari dataset {dataset_id} at {path} "
          f"(minari.load_dataset({dataset_id!r}); publishing: docs/data.md)")


def cmd_data_download(ns) -> None:
    from frozen_dt.data.sources import fetch, read_candidate
    from frozen_dt.envs.registry import get_task

    task = get_task(ns.task)
    found = fetch(task, ns.source, sha256=ns.sha256)
    dataset = read_candidate(found, task)
    print(f"{task.name}: {dataset.n_episodes} episodes, {dataset.n_transitions} transitions at {found.path}")


def policy_root_arg(ns) -> dict:
    return {"policy_root": Path(ns.policy_dir).expanduser()} if ns.policy_dir else {}


def cmd_data_train_behavior(ns) -> None:
    from frozen_dt.envs.behavior import train_behavior

    if ns.steps <= 0 or ns.save_every <= 0 or ns.eval_episodes <= 0:
        raise FrozenDTError("--steps, --save-every and --eval-episodes must be positive")
    manifest = train_behavior(ns.env, steps=ns.steps, seed=ns.seed, save_every=ns.save_every,
                              eval_episodes=ns.eval_episodes, learning_starts=ns.learning_starts, resume=ns.resume,
                              **policy_root_arg(ns))
    last = manifest["checkpoints"][-1]
    print(f"{ns.env}: {len(manifest['checkpoints'])} checkpoints; last at step {last['steps']} "
          f"(normalized return {last['normalized_return']:.1f})")


def cmd_data_evaluate_behavior(ns) -> None:
    from frozen_dt.envs.behavior import reevaluate_checkpoints

    if ns.episodes <= 0:
        raise FrozenDTError(f"--episodes must be positive, got {ns.episodes}")
    manifest = reevaluate_checkpoints(ns.env, episodes=ns.episodes, **policy_root_arg(ns))
    for c in manifest["checkpoints"]:
        print(f"{c['file']}: normalized return {c['normalized_return']:.1f} (return {c['return_mean']:.1f} "
              f"+- {c['return_std']:.1f}, {c['eval_episodes']} episodes)")
    print(f"{ns.env} levels: " + ", ".join(f"{k}={v if isinstance(v, str) else f'{len(v)} checkpoints'}"
                                           for k, v in manifest["levels"].items()))


def cmd_data_generate(ns) -> None:
    from frozen_dt.data.sources import generate_dataset
    from frozen_dt.envs.registry import get_task

    if ns.episodes is not None and ns.transitions is not None:
        raise FrozenDTError("give --episodes or --transitions, not both")
    for name in ("episodes", "transitions", "num_envs"):
        value = getattr(ns, name)
        if value is not None and value <= 0:
            raise FrozenDTError(f"--{name.replace('_', '-')} must be positive, got {value}")
    task = get_task(ns.task)
    start = time.time()
    path = generate_dataset(task, episodes=ns.episodes, transitions=ns.transitions, seed=ns.seed,
                            out=Path(ns.out).expanduser() if ns.out else None, num_envs=ns.num_envs,
                            **policy_root_arg(ns))
    print(f"{task.name}: wrote {path} in {time.time() - start:.1f} s")


def cmd_train(ns) -> None:
    from frozen_dt.algorithms import get_spec
    from frozen_dt.training.train import train

    fields = dataclasses.fields(RunConfig) + dataclasses.fields(get_spec(ns.algo).config)
    train({f.name: getattr(ns, f.name) for f in fields}, explicit_options(ns))


def cmd_eval(ns) -> None:
    from frozen_dt.eval.runs import run_eval

    run_eval(from_namespace(EvalArgs, ns))


def cmd_leaderboard(ns) -> int:
    from frozen_dt.eval.leaderboard import comparison_label, interval_label, row_label, write_leaderboard

    args = from_namespace(LeaderboardArgs, ns)
    rows, skipped = write_leaderboard(args.runs, Path(args.out).expanduser(), args.checkpoint, args.reference,
                                      args.env_version)
    for r in rows:
        versus = f"; vs {r['vs']}: {comparison_label(r)}" if r.get("vs") else ""
        print(f"{r['task']} target {r['target']}: {row_label(r)}: {r['score_mean']:.1f} {interval_label(r)}, "
              f"{r['n_seeds']} seed(s), {r['n_episodes']} episodes ({r['scale']}){versus}")
    print(f"wrote {args.out}, its Markdown copy and figures beside it")
    for line in skipped:
        print(f"frozen-dt: left out: {line}", file=sys.stderr)
    return 1 if skipped else 0


def cmd_sweep(ns) -> int:
    from frozen_dt.sweeps.command import run_sweep

    return run_sweep(from_namespace(SweepArgs, ns))


def cmd_probe(ns) -> None:
    from frozen_dt.probes.train import run_probe

    summary = run_probe(from_namespace(ProbeArgs, ns))
    print(f"{summary['task']} {summary['arm']}: final " + " ".join(f"{k}={v:.4f}" for k, v in summary["final"].items())
          + f" ({summary['trainable_params']:,} trainable parameters); run dir {summary['run_dir']}")


def cmd_heads_copy(ns) -> None:
    from frozen_dt.probes.heads import run_copy_probe

    run_copy_probe(from_namespace(CopyProbeArgs, ns))


def cmd_heads_ablate(ns) -> None:
    from frozen_dt.probes.heads import run_ablation

    run_ablation(from_namespace(AblateArgs, ns))


def cmd_heads_compare(ns) -> None:
    from frozen_dt.probes.heads import run_compare

    run_compare(from_namespace(CompareArgs, ns))


def cmd_backbone_export(ns) -> None:
    from frozen_dt.backbones.portable import export_slice

    out = export_slice(ns.name, ns.layers, Path(ns.out))
    print(f"frozen-dt: {ns.name} layers {ns.layers} (quantized, no token table): {out} "
          f"({out.stat().st_size / 2**20:.1f} MiB); on the other machine: frozen-dt backbone import {out.name}")


def cmd_backbone_import(ns) -> None:
    from frozen_dt.backbones.portable import import_slice

    target = import_slice(Path(ns.file), ns.cache_dir)
    print(f"frozen-dt: imported into the backbone cache: {target}")


def command(sub, name: str, help_text: str, args_class, func) -> argparse.ArgumentParser:
    """A subcommand whose options are the fields of ``args_class``, run by ``func``."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    add_arguments(parser, args_class)
    parser.set_defaults(func=func)
    return parser


def option_value(argv: list[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``; the last one wins), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def train_algorithm(argv: list[str]) -> str:
    """The algorithm a ``train`` command line is for: ``--algo``, else the resumed run's, else the default."""
    algo = option_value(argv, "--algo")
    resume = option_value(argv, "--resume")
    if algo is None and resume is not None:
        from frozen_dt.run_dir import read_json

        try:
            algo = read_json(Path(resume).expanduser() / "config.json")["args"]["algo"]
        except (FrozenDTError, KeyError, TypeError):
            pass  # the train command itself reports the unreadable run
    return algo if algo in ALGORITHMS else RunConfig.algo


def add_train_command(sub, argv: list[str]) -> None:
    """``train``: run flags, then the flags of the algorithm the command line names (only when it is a train
    command line: building them imports the algorithm's module)."""
    parser = sub.add_parser("train", help="train a policy on a task's offline dataset",
                            description="Train a policy on a task's offline dataset. The algorithm settings listed "
                                        "are those of --algo (default frozen-dt); 'frozen-dt train --algo NAME --help' "
                                        f"lists another's. Algorithms: {', '.join(ALGORITHMS)}.")
    add_arguments(parser.add_argument_group("run settings"), RunConfig)
    if argv[:1] == ["train"]:
        from frozen_dt.algorithms import get_spec

        spec = get_spec(train_algorithm(argv))
        add_arguments(parser.add_argument_group(f"{spec.name} settings ({spec.summary})"), spec.config)
        parser.set_defaults(algo=spec.name)  # a resumed run's algorithm when --algo is not given
    parser.set_defaults(func=cmd_train)


def foreign_settings_error(algo: str, extras: list[str]) -> str:
    """The message for flags ``train`` of ``algo`` does not take: which algorithms they belong to, if any."""
    from frozen_dt.algorithms import owners_of

    flags = [e.split("=")[0] for e in extras if e.startswith("--")]
    parts = []
    for flag in flags:
        owners = owners_of(flag[2:].replace("-", "_"))
        parts.append(f"{flag} is a setting of {', '.join(owners)}, not of {algo}" if owners else
                     f"{flag} is not a setting of {algo} runs")
    if not parts:
        parts.append(f"unrecognized arguments: {' '.join(extras)}")
    return "; ".join(parts) + f" ('frozen-dt train --algo {algo} --help' lists its settings)"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    argv = list(argv or [])
    parser = argparse.ArgumentParser(prog="frozen-dt", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    add_train_command(sub, argv)
    command(sub, "eval", "evaluate trained runs in their environment", EvalArgs, cmd_eval)
    command(sub, "leaderboard", "aggregate evaluated runs into a leaderboard CSV and figures", LeaderboardArgs,
            cmd_leaderboard)
    command(sub, "sweep", "run a grid of train (+ eval) jobs from a SPEC file, resumably, then its leaderboard",
            SweepArgs, cmd_sweep)
    command(sub, "probe", "train a probe (associative recall, bit memory, bit XOR) on one arm", ProbeArgs, cmd_probe)

    policy_export = sub.add_parser("export", help="write a trained policy that runs with torch (TorchScript) or onnxruntime "
                                           "alone, observation normalisation and weights inside")
    policy_export.add_argument("run_dir", metavar="RUN", help="a trained run directory")
    policy_export.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript", help="default: torchscript")
    policy_export.add_argument("--out", help="file to write (default: RUN/policy-<checkpoint>.pt or .onnx)")
    policy_export.add_argument("--checkpoint", choices=("last", "best"), default="last", help="default: last")
    policy_export.set_defaults(func=cmd_export)

    algorithms = sub.add_parser("algorithms", help="the registered algorithms: what each is, its source, conditioning")
    algorithms.add_argument("--markdown", action="store_true", help="print the README's markdown table")
    algorithms.set_defaults(func=cmd_algorithms)

    heads = sub.add_parser("heads", help="per-head measurements: text copy score, task ablation, their comparison")
    heads_sub = heads.add_subparsers(dest="heads_command", required=True)
    command(heads_sub, "copy-probe", "token-copying attention score of every head on English text", CopyProbeArgs,
            cmd_heads_copy)
    command(heads_sub, "ablate", "zero one head at a time in a trained probe run; change in error", AblateArgs,
            cmd_heads_ablate)
    command(heads_sub, "compare", "rank heads on both measurements: table, rank correlation, figure", CompareArgs,
            cmd_heads_compare)

    backbone = sub.add_parser("backbone", help="move a GGUF backbone's slice to a machine without its package")
    backbone_sub = backbone.add_subparsers(dest="backbone_command", required=True)
    export = backbone_sub.add_parser("export", help="write a slice's layers, still quantized, to a small GGUF file")
    export.add_argument("name", help="GGUF backbone (gemma3-270m, smollm2-135m)")
    export.add_argument("--layers", required=True, help="the slice, a:b")
    export.add_argument("--out", required=True, help="the file to write (.gguf)")
    export.set_defaults(func=cmd_backbone_export)
    importer = backbone_sub.add_parser("import", help="dequantize an exported slice into the backbone cache")
    importer.add_argument("file", help="a file written by 'frozen-dt backbone export'")
    importer.add_argument("--cache-dir", help="backbone cache (default: $FROZEN_DT_CACHE or ~/.cache/frozen-dt/backbones)")
    importer.set_defaults(func=cmd_backbone_import)

    data = sub.add_parser("data", help="list, inspect and download datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    listing = data_sub.add_parser("list", help="every task, its env, score type and where its dataset is")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_data_list)
    info = data_sub.add_parser("info", help="episodes, transitions, returns, dims and source of a dataset")
    info.add_argument("name", metavar="NAME_OR_PATH", help="task name, file path, or minari:<dataset id>")
    info.add_argument("--task", help="task a file belongs to (default: guessed from its name)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--download", action="store_true", help="download the dataset if it is not local")
    info.add_argument("--source", choices=("d4rl", "ogbench", "minari"), help="where to download from")
    info.set_defaults(func=cmd_data_info)
    verify = data_sub.add_parser("verify", help="a dataset's size and returns beside the published D4RL dataset's; "
                                                "exit 1 when outside tolerance")
    verify.add_argument("task", help="task name (a D4RL v2 locomotion dataset)")
    verify.add_argument("--dataset", help="dataset file (default: the task's local dataset)")
    verify.add_argument("--json", action="store_true", help="print the comparison as JSON")
    verify.set_defaults(func=cmd_data_verify)
    data_export = data_sub.add_parser("export", help="write a task's dataset as a local Minari dataset")
    data_export.add_argument("task", help="task name")
    data_export.add_argument("--format", choices=("minari",), default="minari", help="default: minari")
    data_export.add_argument("--name", help="Minari dataset id (default: frozen-dt/<env>/<level>-v0)")
    data_export.add_argument("--dataset", help="dataset file (default: the task's local dataset)")
    data_export.add_argument("--author", help="the author recorded in the Minari metadata")
    data_export.set_defaults(func=cmd_data_export)
    download = data_sub.add_parser("download", help="download a task's dataset into the data dir")
    download.add_argument("task", help="task name")
    download.add_argument("--source", choices=("d4rl", "ogbench", "minari"),
                          help="default: d4rl for locomotion, ogbench for OGBench tasks")
    download.add_argument("--sha256", help="expected sha256 of the file (checked before it is used)")
    download.set_defaults(func=cmd_data_download)
    generate = data_sub.add_parser("generate", help="make a task's dataset here (shipped policies / OGBench oracles)")
    generate.add_argument("task", help="task name")
    size = generate.add_mutually_exclusive_group()
    size.add_argument("--episodes", type=int, help="number of episodes")
    size.add_argument("--transitions", type=int, help="number of transitions (default: D4RL's size)")
    generate.add_argument("--seed", type=int, default=0, help="seed: episode i uses seed + i (default: 0)")
    generate.add_argument("--out", help="output file (default: the task's file in the data dir)")
    generate.add_argument("--num-envs", type=int, default=16, help="envs rolled out side by side (default: 16)")
    generate.add_argument("--policy-dir", help="behaviour policies to roll out (default: the ones shipped in the package)")
    generate.set_defaults(func=cmd_data_generate)
    behavior = data_sub.add_parser("train-behavior", help="train a SAC behaviour policy, saving actor checkpoints")
    behavior.add_argument("env", choices=("halfcheetah", "hopper", "walker2d", "ant"), help="locomotion env")
    behavior.add_argument("--steps", type=int, default=1_000_000, help="environment steps (default: 1000000)")
    behavior.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    behavior.add_argument("--save-every", type=int, default=10_000, help="checkpoint interval in steps (default: 10000)")
    behavior.add_argument("--eval-episodes", type=int, default=20,
                          help="episodes per checkpoint evaluation (default: 20)")
    behavior.add_argument("--learning-starts", type=int, default=10_000,
                          help="random-action steps before SAC updates begin (default: 10000, as rl-baselines3-zoo)")
    behavior.add_argument("--resume", action="store_true", help="continue the run saved in runs/behavior/ENV")
    behavior.add_argument("--policy-dir", help="where checkpoints and manifest go (default: the package's policies/)")
    behavior.set_defaults(func=cmd_data_train_behavior)
    reeval = data_sub.add_parser("evaluate-behavior",
                                 help="evaluate every behaviour checkpoint again and re-select the levels")
    reeval.add_argument("env", choices=("halfcheetah", "hopper", "walker2d", "ant"), help="locomotion env")
    reeval.add_argument("--episodes", type=int, default=20, help="episodes per checkpoint (default: 20)")
    reeval.add_argument("--policy-dir", help="checkpoints and manifest (default: the package's policies/)")
    reeval.set_defaults(func=cmd_data_evaluate_behavior)
    sub.metavar = "{" + ",".join(sub.choices) + "}"  # every command, in the order the help lists them
    return parser


def glue_negative_slices(argv: list[str]) -> list[str]:
    """``--layers -5:`` -> ``--layers=-5:``: argparse would take a value starting with '-' for an option."""
    out = []
    for arg in argv:
        if out and out[-1] == "--layers" and arg.startswith("-") and ":" in arg:
            out[-1] = f"--layers={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = glue_negative_slices(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(argv)
    ns, extras = parser.parse_known_args(argv)
    if extras:
        if ns.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        print(f"frozen-dt: error: {foreign_settings_error(ns.algo, extras)}", file=sys.stderr)
        return 2
    try:
        code = ns.func(ns)
    except FrozenDTError as e:
        print(f"frozen-dt: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, name too long, permission: the user's to fix, not a bug
        message = os_error_message(e)
        if message is None:
            raise
        print(f"frozen-dt: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frozen-dt: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
