"""Training throughput: steps/s of one full update (sample, forward, backward, AdamW) for the DT baseline and for
frozen-LM DT slices of 1, 2 and 5 layers of each backbone, at batch 64 and K=20 (60 tokens), on walker2d-shaped
synthetic data. Achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode on one update) is set against a plain
square matmul measured in the same run, in fp32 and, with ``--bf16``, under bf16 autocast too.

    python bench/bench_training.py [--backbones gemma3-270m smollm2-135m minilm-l6] [--layers 1 2 5] [--steps 5]
                                   [--bf16] [--device cpu|cuda]

On CUDA it reports MFU: achieved FLOP/s against the bf16 matmul peak measured in the same run (an 8192^3 bf16
matmul). ``--stack N`` also measures each frozen-dt slice with N seeds stacked (``frozen-dt train --seeds``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from frozen_dt.algorithms import Problem, get_spec
from frozen_dt.backbones.catalog import BACKBONES
from frozen_dt.backbones.slice import load_backbone
from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.data.views import SequenceView
from frozen_dt.parameters import param_counts
from frozen_dt.sequence_models import SequenceConfig, SequenceModelAlgorithm

from bench_sequence_sampling import cpu_name  # noqa: E402  (bench/ is run as a script directory)

OBS, ACT = 17, 6  # walker2d


def synthetic_dataset():
    """20 episodes of 1,000 random walker2d-shaped steps (throughput benches: only the shapes matter)."""
    rng = np.random.default_rng(0)
    n = 20_000
    return from_flat_arrays(
        rng.normal(size=(n, OBS)).astype(np.float32), rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        rng.normal(size=n).astype(np.float32), np.arange(n) % 1000 == 999, np.zeros(n, bool),
        where="synthetic", source={"kind": "synthetic"})


def synthetic_view(context: int) -> SequenceView:
    return SequenceView(synthetic_dataset(), context, rtg_scale=1000.0, max_timestep=1000)


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def update_flops(algo: SequenceModelAlgorithm, batch: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        algo.update(batch)
    return float(counter.get_total_flops())


def measure(name: str, model: torch.nn.Module, view: SequenceView, args, device: torch.device, bf16: bool) -> dict:
    algo = SequenceModelAlgorithm(model, view, SequenceConfig(batch_size=args.batch_size, warmup_steps=0),
                                  device=device, precision="bf16" if bf16 else "fp32")
    rng = np.random.default_rng(0)
    batch = algo.sample_batch(rng)
    flops = update_flops(algo, batch)
    for _ in range(args.warmup):
        algo.update(algo.sample_batch(rng))
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        algo.update(algo.sample_batch(rng))
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    counts = param_counts(model)
    return {"model": name, "precision": "bf16" if bf16 else "fp32", "steps_per_s": 1 / seconds,
            "s_per_step": seconds, "gflop_per_step": flops / 1e9, "gflops": flops / seconds / 1e9,
            "trainable_params": counts["trainable_params"], "frozen_params": counts["frozen_params"]}


def measure_stack(name: str, build, view: SequenceView, args, device: torch.device, bf16: bool, seeds: int,
                  flops_one: float) -> dict:
    """``seeds`` instances stepped together as ``--seeds`` steps them (one shared frozen body per batch)."""
    from contextlib import nullcontext

    algos = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        algos.append(SequenceModelAlgorithm(build(), view, SequenceConfig(batch_size=args.batch_size, warmup_steps=0),
                                            device=device, precision="bf16" if bf16 else "fp32"))
    rngs = [np.random.default_rng(seed) for seed in range(seeds)]
    contexts = [nullcontext] * seeds

    def step():
        SequenceModelAlgorithm.update_stack(algos, [a.sample_batch(r) for a, r in zip(algos, rngs)], contexts)

    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    return {"model": f"{name}, {seeds} seeds stacked", "precision": "bf16" if bf16 else "fp32",
            "steps_per_s": 1 / seconds, "s_per_step": seconds, "gflop_per_step": seeds * flops_one / 1e9,
            "gflops": seeds * flops_one / seconds / 1e9, "trainable_params": None, "frozen_params": None}


_SLICES: dict = {}


def shared_slice(backbone: str, n: int):
    """One slice object per (backbone, depth): the stacked measurement's models share it, as ``--seeds`` does."""
    if (backbone, n) not in _SLICES:
        _SLICES[(backbone, n)] = load_backbone(backbone, f"0:{n}")
    return _SLICES[(backbone, n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="*", default=["gemma3-270m", "smollm2-135m", "minilm-l6"])
    parser.add_argument("--layers", nargs="*", type=int, default=[1, 2, 5])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also measure under bf16 autocast")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--stack", type=int, default=3, help="also measure frozen-dt slices with this many seeds "
                                                             "stacked (0: not)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    view = synthetic_view(args.context)

    size = 8192 if device.type == "cuda" else 2048
    peak = {"fp32": matmul_gflops(device, torch.float32, n=size)}
    if args.bf16 or device.type == "cuda":
        peak["bf16"] = matmul_gflops(device, torch.bfloat16, n=size)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"# {where}; batch {args.batch_size}, K={args.context}; plain 2048^3 matmul: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    precisions = [False] + ([True] if args.bf16 else [])
    problem = Problem(OBS, ACT)
    dt, frozen = get_spec("dt"), get_spec("frozen-dt")
    configs = [("dt (128 wide, 3 layers)",
                lambda: dt.build_model(dt.make_config({"context": args.context}), problem, None))]
    for backbone in args.backbones:
        for n in args.layers:
            if n > BACKBONES[backbone].n_layers:
                continue
            configs.append((f"frozen-dt {backbone} layers 0:{n}",
                            lambda b=backbone, n=n: frozen.build_model(
                                frozen.make_config({"context": args.context, "backbone": b, "layers": f"0:{n}"}),
                                problem, shared_slice(b, n))))
    results = []
    for name, build in configs:
        torch.manual_seed(0)
        model = build()
        for bf16 in precisions:
            r = measure(name, model, view, args, device, bf16)
            rows = [r]
            if args.stack > 1:  # frozen-dt: one shared slice; dt: its seeds as one vmapped call
                rows.append(measure_stack(name, build, view, args, device, bf16, args.stack,
                                          r["gflop_per_step"] * 1e9))
            for r in rows:
                r["fraction_of_matmul"] = r["gflops"] / peak[r["precision"]]
                if device.type == "cuda":
                    r["mfu"] = r["gflops"] / peak["bf16"]  # against the measured bf16 matmul peak
                results.append(r)
                mfu = f", MFU {r['mfu']:.1%}" if "mfu" in r else ""
                trainable = f"; trainable {r['trainable_params']:,}" if r["trainable_params"] else ""
                print(f"{r['model']:50s} {r['precision']}: {r['steps_per_s']:7.2f} steps/s "
                      f"({r['s_per_step'] * 1000:8.1f} ms), {r['gflop_per_step']:7.1f} GFLOP/step, "
                      f"{r['gflops']:6.1f} GFLOP/s = {r['fraction_of_matmul']:.2f}x plain matmul{mfu}{trainable}",
                      flush=True)
        del model
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": where, "matmul_gflops": peak, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
