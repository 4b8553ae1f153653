"""Seeds stacked in one process vs the same seeds run one after another: throughput and memory.

For each algorithm, N seeds (default 3) on walker2d-shaped synthetic data, in two arms measured in the same run, each
in its own fresh process:

* ``stacked``: the N seeds' trainers stepped together as ``frozen-dt train --seeds`` steps them
  (:class:`frozen_dt.training.stack.StackTrainer`: a pretrained frozen slice held once and the seeds' windows sent
  through it as one batch; per-seed random-init slices and IQL's networks as vmapped calls over stacked weights);
* ``sequential``: N single-seed runs, one after another (each its own model, and its own copy of the slice).

Reported: seed-updates per second of each arm and their ratio (stacked / sequential), each arm's peak resident
memory (``ru_maxrss`` of its process; N single-seed runs side by side would hold N times the sequential arm's), and
the bytes of frozen weights held (counted once per distinct tensor).

    python bench/bench_stacking.py [--algos dt frozen-dt iql] [--seeds 3] [--steps 10] [--backbone gemma3-270m]
                                   [--layers 0:2] [--init pretrained|random] [--device cpu|cuda]
                                   [--json results/bench/stacking_cpu.json]

The JSON is rewritten after every algorithm's row; an arm that fails is recorded with its error, the other arms and
algorithms still run, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from frozen_dt.algorithms import Problem, get_spec
from frozen_dt.config import RunConfig

from bench_training import ACT, OBS, commit, synthetic_dataset, write_json  # noqa: E402  (bench/ is run as a script directory)

DEFAULT_STEPS = {"dt": 20, "frozen-dt": 5}


def trainers_for(args, seeds: list[int], work: Path):
    """Trainers of ``seeds`` built as ``frozen-dt train`` builds a stack's members."""
    from frozen_dt.training.trainer import Trainer

    spec = get_spec(args.algo)
    values = {"backbone": args.backbone, "layers": args.layers, "init": args.init} if args.algo == "frozen-dt" else {}
    config = spec.make_config(values)
    dataset = synthetic_dataset()
    problem = Problem(OBS, ACT)
    run = RunConfig(task="walker2d-medium-v2", algo=args.algo, steps=10**9, device=args.device,
                    precision=spec.precision(args.precision, args.device))
    trainers = []
    for seed in seeds:
        backbone = spec.backbone(config, seed)
        torch.manual_seed(seed)
        model = spec.build_model(config, problem, backbone)
        algorithm = spec.build_algorithm(config, model, dataset, problem, run)
        trainer = Trainer(algorithm, work / f"seed{seed}", steps=10**9, seed=seed, log_every=10**9, eval_every=0,
                          save_every=10**9, progress=False)
        trainer.own_torch_rng = (torch.get_rng_state(), [])
        trainers.append(trainer)
    return trainers


def frozen_bytes(trainers) -> int:
    seen = {}
    for t in trainers:
        for p in t.algorithm.model.parameters():
            if not p.requires_grad:
                seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def worker(args) -> dict:
    """One arm, in this process; prints its JSON result."""
    from frozen_dt.training.stack import StackTrainer

    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        if args.arm == "stacked":
            trainers = trainers_for(args, seeds, Path(tmp))
            stack = StackTrainer(trainers, seeds, Path(tmp), progress=False)
            held = frozen_bytes(trainers)

            def step():
                stack.update([t.algorithm.sample_batch(t.rng) for t in trainers])

            for _ in range(args.warmup):
                step()
            sync(args.device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync(args.device)
            seconds = time.perf_counter() - start
        else:
            seconds, held = 0.0, 0
            for seed in seeds:  # one single-seed run after another, each building its own model (and slice)
                [trainer] = trainers_for(args, [seed], Path(tmp))
                held = max(held, frozen_bytes([trainer]))
                algorithm = trainer.algorithm
                for _ in range(args.warmup):
                    algorithm.update(algorithm.sample_batch(trainer.rng))
                sync(args.device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    algorithm.update(algorithm.sample_batch(trainer.rng))
                sync(args.device)
                seconds += time.perf_counter() - start
                del trainer, algorithm
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    return {"algo": args.algo, "arm": args.arm, "seeds": args.seeds, "steps": args.steps,
            "seed_updates_per_s": args.seeds * args.steps / seconds, "peak_mb": peak_mb, "frozen_mb": held / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="*", default=["dt", "frozen-dt", "iql"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, help="timed updates per seed (default: dt 20, frozen-dt 5, others 50)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backbone", default="gemma3-270m")
    parser.add_argument("--layers", default="0:2")
    parser.add_argument("--init", default="pretrained", choices=("pretrained", "random"),
                        help="frozen-dt's slice: pretrained (held once, shared) or random-init (one per seed)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--algo", help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=("stacked", "sequential"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        args.steps = args.steps or DEFAULT_STEPS.get(args.algo, 50)
        print(json.dumps(worker(args)))
        return

    from bench_sequence_sampling import cpu_name  # noqa: E402  (bench/ is run as a script directory)

    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"# {where}; {args.seeds} seeds, timed updates per seed: {args.steps or 'dt 20, frozen-dt 5, others 50'}; frozen-dt: {args.backbone} "
          f"{args.layers}; memory: peak RSS of each arm's process" + (" (cuda: peak allocated)" if args.device == "cuda" else ""))
    record = {"device": where, "seeds": args.seeds, "steps": args.steps, "backbone": args.backbone,
              "layers": args.layers, "init": args.init, "command": " ".join(["python", *sys.argv]),
              "commit": commit(), "results": []}
    for algo in args.algos:
        arms, failed = {}, {}
        for arm in ("sequential", "stacked"):
            command = [sys.executable, __file__, "--algo", algo, "--arm", arm, *sys.argv[1:]]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:  # recorded; the other arms and algorithms still run
                failed[arm] = out.stderr.strip().splitlines()[-1][:500] if out.stderr.strip() else f"exit {out.returncode}"
                print(f"{algo} {arm} failed: {failed[arm]}", flush=True)
                continue
            arms[arm] = json.loads(out.stdout.strip().splitlines()[-1])
        row = {"algo": algo, **{f"{arm}_{k}": v for arm, r in arms.items() for k, v in r.items()
                                if k in ("seed_updates_per_s", "peak_mb", "frozen_mb", "steps")}}
        if failed:
            row["failed"] = failed
        if len(arms) == 2:
            ratio = arms["stacked"]["seed_updates_per_s"] / arms["sequential"]["seed_updates_per_s"]
            row.update(steps=arms["stacked"]["steps"], speed_ratio=ratio)
            print(f"{algo:10s} stacked {arms['stacked']['seed_updates_per_s']:8.2f} seed-updates/s vs sequential "
                  f"{arms['sequential']['seed_updates_per_s']:8.2f}: {ratio:.2f}x; peak memory stacked "
                  f"{arms['stacked']['peak_mb']:.0f} MB vs one run {arms['sequential']['peak_mb']:.0f} MB "
                  f"({args.seeds} side by side: {args.seeds * arms['sequential']['peak_mb']:.0f} MB); frozen weights "
                  f"held {arms['stacked']['frozen_mb']:.1f} MB once vs {arms['sequential']['frozen_mb']:.1f} MB per run",
                  flush=True)
        record["results"].append(row)
        if args.json:  # after every row: a run cut short keeps what it measured
            write_json(args.json, record)
    if any("failed" in r for r in record["results"]):
        raise SystemExit(1)

if __name__ == "__main__":
    main()
