"""Command-line arguments as dataclasses: each field's ``help`` metadata is its ``--flag`` help text.

One dataclass per command keeps the argument set, its defaults and its validation in one place; the CLI builds
its parsers from them with :func:`add_arguments`.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from frozen_dt.backbones import check_backbone_name, parse_layers
from frozen_dt.envs.registry import ENV_VERSIONS, get_task
from frozen_dt.errors import FrozenDTError

ALGORITHMS = ("frozen-dt", "dt", "iql", "cql", "gciql")


def arg(default, help: str, **kwargs):
    """A dataclass field that becomes a command-line option."""
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainArgs:
    task: str = arg(None, "task name, e.g. walker2d-medium-v2 (`frozen-dt data list` shows all)", positional=True)
    algo: str = arg("frozen-dt", "algorithm", choices=ALGORITHMS)
    backbone: str = arg("gemma3-270m", "frozen LM backbone: gemma3-270m, smollm2-135m, minilm-l6 or hf:<id or path>")
    layers: str = arg("0:5", "slice of the backbone's layers, Python slice syntax a:b")
    init: str = arg("pretrained", "backbone weights: pretrained, or the same architecture freshly initialized",
                    choices=("pretrained", "random"))
    freeze: str = arg("all", "what stays frozen: all, all but layer norms (ln, FPT-style), or nothing",
                      choices=("all", "ln", "none"))
    steps: int = arg(100_000, "gradient steps")
    batch_size: int = arg(64, "batch size")
    context: int = arg(20, "context length K (DT-style models)")
    lr: float = arg(1e-4, "learning rate")
    seed: int = arg(0, "training seed")
    device: str = arg("cpu", "device (cuda uses bf16 autocast)", choices=("cpu", "cuda"))
    env_version: str = arg(None, "MuJoCo env version for locomotion tasks (default: the dataset's)",
                           choices=ENV_VERSIONS)
    config: str = arg(None, "recipe file overriding the per-(algorithm, task family) defaults")
    run_dir: str = arg(None, "run directory (default: runs/<task>/<algo>/<timestamp>)")
    resume: str = arg(None, "continue the run in this directory")
    download: bool = arg(False, "download the dataset if it is not local")
    wandb: str = arg(None, "also log to Weights & Biases", choices=("offline", "online"))

    def validate(self) -> None:
        get_task(self.task)
        check_backbone_name(self.backbone)
        from frozen_dt.backbones import BACKBONES

        spec = BACKBONES.get(self.backbone)
        parse_layers(self.layers, spec.n_layers if spec else None)
        for name in ("steps", "batch_size", "context"):
            if getattr(self, name) <= 0:
                raise FrozenDTError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise FrozenDTError(f"--lr must be positive, got {self.lr}")


@dataclass
class EvalArgs:
    run_dirs: list = arg(None, "run directories (default: the most recent run)", positional=True, nargs="*")
    episodes: int = arg(100, "evaluation episodes per run")
    num_envs: int = arg(10, "environments stepped in parallel")
    checkpoint: str = arg("last", "which checkpoint", choices=("last", "best"))
    target_return: float = arg(None, "return-to-go target (default: the task's targets, each reported)")
    eval_seed: int = arg(10_000, "seed of evaluation episode 0 (episode i uses eval_seed + i)")

    def validate(self) -> None:
        if self.episodes <= 0:
            raise FrozenDTError(f"--episodes must be positive, got {self.episodes}")
        if self.num_envs <= 0:
            raise FrozenDTError(f"--num-envs must be positive, got {self.num_envs}")


@dataclass
class LeaderboardArgs:
    runs: list = arg(None, "run directories or globs (default: runs/**)", positional=True, nargs="*")
    out: str = arg("results/leaderboard.csv", "leaderboard CSV (a Markdown copy is written beside it)")

    def validate(self) -> None:
        pass


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one option (or positional) per field of dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        positional = meta.pop("positional", False)
        kwargs = {"help": help_text, **meta}
        if f.type in ("bool", bool):
            kwargs["action"] = "store_true"
        elif "nargs" not in kwargs:
            kwargs["type"] = {"int": int, "float": float}.get(str(f.type), str)
        if positional:
            parser.add_argument(f.name, **kwargs)
        else:
            if f.default is not None and not kwargs.get("action"):
                kwargs["help"] += f" (default: {f.default})"
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default, **kwargs)


def from_namespace(cls, namespace: argparse.Namespace):
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)}
    args = cls(**values)
    args.validate()
    return args
