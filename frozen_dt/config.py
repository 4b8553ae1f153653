"""The commands' settings as dataclasses (fields made with :func:`frozen_dt.settings.arg`: help text, range check).

One dataclass per command (and one per algorithm, in the algorithm's own module) keeps the settings, their
defaults and their validation in one place; the CLI builds its parsers from them.
:class:`RunConfig` holds what every training run has whatever its algorithm (task, seed, steps, device, logging,
evaluation, where the run lives); each algorithm's config holds its hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from frozen_dt.algorithms import ALGORITHMS, get_spec
from frozen_dt.backbones.catalog import check_backbone_and_layers
from frozen_dt.envs.registry import ENV_VERSIONS, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.settings import arg, validate_fields


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; one clear error for anything else (empty, not integers, repeated)."""
    try:
        seeds = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise FrozenDTError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise FrozenDTError(f"--seeds {text!r}: no seed given")
    if len(set(seeds)) != len(seeds):
        raise FrozenDTError(f"--seeds {text!r}: a seed is repeated")
    return seeds


@dataclass
class RunConfig:
    """What every training run has, whatever its algorithm; the algorithm's hyperparameters are its own config's."""

    task: str = arg(None, "task name, e.g. walker2d-medium-v2 ('frozen-dt data list' shows all)", positional=True)
    algo: str = arg("frozen-dt", "algorithm ('frozen-dt train --algo NAME --help' lists its settings)",
                    choices=ALGORITHMS)
    steps: int = arg(100_000, "gradient steps", check="positive")
    seed: int = arg(0, "training seed")
    seeds: str = arg(None, "train several seeds together in one process, e.g. 0,1,2: one run dir per seed "
                           "(<run dir>/seed<k>), a pretrained frozen slice held once and the seeds' batches sent "
                           "through it together")
    log_every: int = arg(1000, "steps per metrics row (metrics.csv / metrics.jsonl)", check="positive")
    eval_every: int = arg(10_000, "steps between evaluations (0: only at the end)", check="non_negative")
    eval_episodes: int = arg(10, "evaluation episodes per return target (0: no evaluation)", check="non_negative")
    eval_max_steps: int = arg(None, "cut evaluation episodes after this many steps (smoke tests; scores then "
                                    "differ from full-episode ones)", check="positive")
    save_every: int = arg(5000, "steps between checkpoints (checkpoints/last.pt)", check="positive")
    stop_after: float = arg(None, "stop at the first checkpoint written once this many seconds have passed since "
                                  "the command started (a job's time limit); the run continues with --resume",
                            check="positive")
    device: str = arg("cpu", "device", choices=("cpu", "cuda"))
    precision: str = arg("auto", "matmul precision of the sequence models: fp32, bf16 autocast (faster on GPUs and on "
                                 "CPUs with bf16 matrix instructions), or auto: the algorithm's choice on the device "
                                 "(frozen-dt: bf16 on cuda; dt: fp32, as the references; fp32 on cpu)",
                         choices=("auto", "fp32", "bf16"))
    compile: bool = arg(False, "torch.compile the sequence models' forward pass (on cuda in mode reduce-overhead: "
                               "CUDA graphs); the first steps pay the compilation")
    cuda_graph: bool = arg(False, "sequence models: capture the whole training step (device sampling, forward, "
                                  "backward, clipping, fused AdamW) once as a CUDA graph and replay it (on cuda; "
                                  "elsewhere the same step runs eagerly)")
    device_sampling: str = arg("auto", "draw batches on the training device from arrays copied there once (no host "
                                       "work per step; another random stream than host sampling): auto (on cuda), "
                                       "on, off. Sequence models, IQL, CQL, TD3+BC", choices=("auto", "on", "off"))
    env_version: str = arg(None, "MuJoCo env version for locomotion tasks (default: the dataset's)",
                           choices=ENV_VERSIONS)
    config: str = arg(None, "recipe file (JSON) applied over the shipped recipes of the algorithm and task; flags "
                            "given on the command line override both")
    run_dir: str = arg(None, "run directory (default: runs/<task>/<algo>/<timestamp>)")
    resume: str = arg(None, "continue the run in this directory (its config.json; --steps may extend it)")
    download: bool = arg(False, "download the dataset if it is not local")
    dataset: str = arg(None, "train on this file (any supported format, checked against the task's dims) instead "
                             "of the task's dataset")
    wandb: str = arg(None, "also log to Weights & Biases", choices=("offline", "online"))
    reference: str = arg(None, "after training, train this algorithm (its recipe) on the same data with the same "
                               "steps, seed and evaluation episodes, in <run dir>/reference-<algo>, and print its score "
                               "beside this run's (e.g. bc)", choices=ALGORITHMS)

    def validate(self) -> None:
        get_task(self.task)
        get_spec(self.algo)
        validate_fields(self)
        if self.reference is not None and self.seeds is not None:
            raise FrozenDTError("--reference trains beside a single run, not beside --seeds")
        if self.seeds is not None:
            parse_seeds(self.seeds)


@dataclass
class EvalArgs:
    run_dirs: list = arg(None, "run directories (default: the most recent run)", positional=True, nargs="*")
    episodes: int = arg(100, "evaluation episodes per run")
    num_envs: int = arg(32, "environments stepped side by side, shared by every run x return target evaluated "
                            "together (the seeds of a stack)")
    workers: int = arg(None, "rollout threads, each stepping its share of the envs with one torch thread (default: "
                             "one per CPU core while each keeps a 16-env block; 1 on cuda)")
    block: int = arg(None, "rows of each policy inference call (default: 16 on cpu, --num-envs on cuda); a row's "
                           "action never depends on the rows beside it", check="positive")
    checkpoint: str = arg("last", "which checkpoint", choices=("last", "best"))
    target_return: float = arg(None, "return-to-go target (default: the task's targets, each reported)")
    eval_seed: int = arg(10_000, "seed of evaluation episode 0 (episode i uses eval_seed + i; independent of the "
                                 "training seed)")
    task: str = arg(None, "evaluate on this task's env instead of the training task's (same dims required)")
    env_version: str = arg(None, "MuJoCo env version (default: the run's)", choices=ENV_VERSIONS)
    device: str = arg("cpu", "device for policy inference", choices=("cpu", "cuda"))
    max_steps: int = arg(None, "cut episodes after this many steps (smoke tests; the record says so, and scores then "
                               "differ from full-episode ones)", check="positive")
    env_processes: str = arg("auto", "step each env in its own worker process (gymnasium AsyncVectorEnv; for many "
                                     "cores beside a GPU): auto (on cuda), on, off; results are the same",
                             choices=("auto", "on", "off"))
    precision: str = arg(None, "inference precision: fp32 or bf16 autocast (default: the run's training precision)",
                         choices=("fp32", "bf16"))

    def validate(self) -> None:
        if self.task is not None:
            get_task(self.task)
        if self.episodes <= 0:
            raise FrozenDTError(f"--episodes must be positive, got {self.episodes}")
        if self.num_envs <= 0:
            raise FrozenDTError(f"--num-envs must be positive, got {self.num_envs}")
        if self.workers is not None and self.workers <= 0:
            raise FrozenDTError(f"--workers must be positive, got {self.workers}")


@dataclass
class LeaderboardArgs:
    runs: list = arg(None, "run directories or globs (default: runs/**)", positional=True, nargs="*")
    out: str = arg("results/leaderboard.csv", "leaderboard CSV (a Markdown copy and figures are written beside it)")
    checkpoint: str = arg("last", "which checkpoint's evaluation (eval-<checkpoint>.json)", choices=("last", "best"))
    reference: str = arg(None, "a row to compare every other row of its task, target, data and step with, by its "
                               "label (dt, or 'frozen-dt gemma3-270m 0:5 random'): Welch's t-interval on the "
                               "difference of seed means and its p")
    env_version: str = arg(None, "the runs' evaluations in this MuJoCo version (frozen-dt eval --env-version: "
                                 "eval-<checkpoint>-v5.json for a run trained with another), default each run's own",
                           choices=ENV_VERSIONS)

    def validate(self) -> None:
        pass


@dataclass
class SweepArgs:
    spec: str = arg(None, "sweep file (YAML or JSON): base, grid, seeds, overrides, eval, resources, out",
                    positional=True)
    backend: str = arg("local", "where jobs run: a pool of processes here, or Ray tasks", choices=("local", "ray"))
    jobs: int = arg(None, "local backend: jobs at a time (default: CPU cores / the SPEC's cpus per job)",
                    check="positive")
    ray_address: str = arg(None, "ray backend: the cluster to join (auto, or HOST:PORT; default: a new local Ray)")
    retries: int = arg(1, "attempts after a job's first failure (each resumes from its checkpoint)",
                       check="non_negative")
    dry_run: bool = arg(False, "print the expanded runs, their state, commands and resources; run nothing")
    max_runs: int = arg(1000, "refuse a SPEC that expands to more runs than this", check="positive")
    profile: str = arg(None, "one of the SPEC's profiles (e.g. gpu): its base, eval and resources merged over the "
                             "SPEC's own, its out and stack_seeds in place of the SPEC's")

    def validate(self) -> None:
        validate_fields(self)


PROBE_TASKS = ("recall", "bit-memory", "bit-xor")
PROBE_ARMS = ("pretrained", "random-init", "random-transformer", "scratch", "shuffled", "lstm")


@dataclass
class ProbeArgs:
    task: str = arg(None, "probe task", positional=True, choices=PROBE_TASKS)
    arm: str = arg("pretrained", "body: frozen pretrained slice, frozen random-init slice, frozen random standard "
                                 "transformer (1/sqrt(d_k)), standard transformer trained from scratch, frozen pretrained slice "
                                 "with each weight matrix's entries permuted (shuffled), or frozen random LSTM (lstm)",
                   choices=PROBE_ARMS)
    backbone: str = arg("gemma3-270m", "backbone whose slice is the body (and whose shape the standard transformer "
                                       "matches)")
    layers: str = arg("0:2", "slice of the backbone's layers, Python slice syntax a:b")
    steps: int = arg(1000, "gradient steps")
    batch_size: int = arg(32, "batch size")
    lr: float = arg(1e-3, "Adam learning rate")
    grad_clip: float = arg(1.0, "gradient-norm clipping threshold")
    seed: int = arg(0, "training seed (model init of random arms and training batches; the test set is fixed)")
    device: str = arg("cpu", "device", choices=("cpu", "cuda"))
    lengths: str = arg("5,10,20,30", "recall: comma-separated numbers of items L evaluated")
    min_len: int = arg(2, "recall: smallest L in training batches")
    max_len: int = arg(30, "recall: largest L in training batches")
    bits: int = arg(8, "recall: bits per key and per value")
    format: str = arg("interleaved", "recall: tokens k1,v1,...,kL,vL,query (interleaved) or one key||value token "
                                     "per item (pair)", choices=("interleaved", "pair"))
    bit_length: int = arg(None, "bit-memory/bit-xor: bits per string (default: bit-memory 100, bit-xor 5; FPT's "
                                "bit memory uses 1000)")
    patch: int = arg(None, "bit-memory/bit-xor: bits per token (default: bit-memory 10, bit-xor 1; FPT's bit "
                           "memory uses 50)")
    n_strings: int = arg(5, "bit-memory: strings to memorise")
    n_test: int = arg(256, "test sequences (per L for recall)")
    log_every: int = arg(50, "steps per train-loss row")
    eval_every: int = arg(200, "steps between test evaluations (0: only at the end)")
    precision: str = arg("fp32", "fp32, or bf16 autocast (faster on CPUs with bf16 matrix instructions)",
                         choices=("fp32", "bf16"))
    run_dir: str = arg(None, "run directory (default: runs/probes/<task>/<arm>/<timestamp>)")
    summary_dir: str = arg("results/probes", "where the summary JSON goes ('' for none)")

    def validate(self) -> None:
        check_backbone_and_layers(self.backbone, self.layers)
        if self.bit_length is None:
            self.bit_length = 5 if self.task == "bit-xor" else 100
        if self.patch is None:
            self.patch = 1 if self.task == "bit-xor" else 10
        for name in ("steps", "batch_size", "min_len", "max_len", "bits", "bit_length", "patch", "n_strings",
                     "n_test", "log_every"):
            if getattr(self, name) <= 0:
                raise FrozenDTError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise FrozenDTError(f"--eval-every must not be negative, got {self.eval_every}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise FrozenDTError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.min_len > self.max_len:
            raise FrozenDTError(f"--min-len {self.min_len} exceeds --max-len {self.max_len}")
        if self.bits > 16:
            raise FrozenDTError(f"--bits must be at most 16, got {self.bits}")
        if self.max_len > 2 ** self.bits:
            raise FrozenDTError(f"--max-len {self.max_len} needs more than the 2^{self.bits} distinct keys")
        if self.bit_length % self.patch:
            raise FrozenDTError(f"--bit-length {self.bit_length} must be a multiple of --patch {self.patch}")
        from frozen_dt.probes.tasks import parse_lengths

        if self.task == "recall" and max(parse_lengths(self.lengths)) > 2 ** self.bits:
            raise FrozenDTError(f"--lengths up to {self.lengths} need more than the 2^{self.bits} distinct keys")


@dataclass
class CopyProbeArgs:
    backbone: str = arg("gemma3-270m", "backbone (its full pretrained model and tokenizer are loaded)")
    layers: str = arg(":", "layers whose heads are scored, Python slice syntax a:b")
    sentences: str = arg(None, "JSON list of sentences (default: the 100 shipped with frozen-dt)")
    out: str = arg("results/probes/copy_probe.csv", "output CSV (one row per head)")

    def validate(self) -> None:
        check_backbone_and_layers(self.backbone, self.layers)


@dataclass
class AblateArgs:
    run_dir: str = arg(None, "a trained probe run (frozen slice arm: pretrained or random-init)", positional=True)
    n_test: int = arg(None, "test sequences per L (default: the run's)")
    out: str = arg("results/probes/ablation.csv", "output CSV (one row per head)")

    def validate(self) -> None:
        if self.n_test is not None and self.n_test <= 0:
            raise FrozenDTError(f"--n-test must be positive, got {self.n_test}")


@dataclass
class CompareArgs:
    copy: str = arg("results/probes/copy_probe.csv", "copy-probe CSV (frozen-dt heads copy-probe)")
    ablation: str = arg("results/probes/ablation.csv", "ablation CSV (frozen-dt heads ablate)")
    metric: str = arg(None, "ablation column ranked (default: the error at the largest L, delta_err_L<max>)")
    out: str = arg("results/probes/heads_compare", "output prefix: <out>.md, <out>.csv and <out>.png")

    def validate(self) -> None:
        pass
