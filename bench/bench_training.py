"""Training throughput: steps/s of the training step ``frozen-dt train`` takes (the device sampler's batch, forward,
backward, clipping, AdamW, through the trainer's own update call) for the DT baseline and for frozen-LM DT slices of
1, 2 and 5 layers of each backbone, at batch 64 and K=20 (60 tokens), on walker2d-shaped synthetic data. Achieved
GFLOP/s (FLOPs counted by torch's FlopCounterMode on one step) is set against a plain square matmul measured in the
same run, in fp32 and, with ``--bf16``, under bf16 autocast too.

    python bench/bench_training.py [--backbones gemma3-270m smollm2-135m minilm-l6] [--layers 1 2 5] [--steps 5]
                                   [--bf16 | --only-bf16] [--hold both|fp32|bf16] [--inits pretrained random]
                                   [--sampling device|host] [--stack 3] [--no-dt] [--cuda-graph] [--device cpu|cuda]
                                   [--json FILE]

Under bf16 a frozen slice is measured twice in the same run (``--hold both``): held in fp32 and recast by autocast
on every call (the reference), and running its bf16 copy (:meth:`FrozenSlice.held_weights`); the row of the latter
carries the ratio. On CUDA it reports MFU: achieved FLOP/s against the bf16 matmul peak measured in the same run (an
8192^3 bf16 matmul). ``--stack N`` also measures each configuration with N seeds stacked (``frozen-dt train
--seeds``). Each row also counts one step's dispatched operations and host synchronisations (on cuda: kernels and
``set_sync_debug_mode``'s count). The JSON (hardware, torch, commit, command) is rewritten after every row; a row that fails is recorded
with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from frozen_dt.algorithms import Problem, get_spec
from frozen_dt.backbones.catalog import BACKBONES
from frozen_dt.backbones.slice import HOLD_BF16_ON, load_backbone
from frozen_dt.data.dataset import from_flat_arrays
from frozen_dt.data.views import SequenceView
from frozen_dt.parameters import param_counts

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


def update_flops(step) -> float:
    """FLOPs of one training step (``step()``), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def training_step(name: str, build, args, device: torch.device, precision: str, seeds: int, work: Path,
                  graph: bool = False):
    """The step ``frozen-dt train`` takes: ``seeds`` members built as its trainers build them (the spec's
    ``build_algorithm``: the device sampler with ``--sampling device``), updated by the trainer's own call (one seed:
    ``update(sample_batch(rng))``; several: :class:`~frozen_dt.training.stack.StackTrainer`'s update)."""
    from frozen_dt.config import RunConfig
    from frozen_dt.training.stack import StackTrainer
    from frozen_dt.training.trainer import Trainer

    algo = "dt" if name.startswith("dt") else "frozen-dt"
    spec = get_spec(algo)
    config = spec.make_config({"context": args.context, "batch_size": args.batch_size, "warmup_steps": 0})
    trainers = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        run = RunConfig(task="walker2d-medium-v2", algo=algo, steps=10**9, seed=seed, device=device.type,
                        precision=precision, device_sampling="on" if args.sampling == "device" else "off",
                        cuda_graph=graph)
        algorithm = spec.build_algorithm(config, build(seed), dataset(), Problem(OBS, ACT), run)
        trainer = Trainer(algorithm, work / f"seed{seed}", steps=10**9, seed=seed, log_every=10**9, eval_every=0,
                          save_every=10**9, progress=False)
        if seeds > 1:
            trainer.own_torch_rng = (torch.get_rng_state(), [])
        trainers.append(trainer)
    if seeds == 1:
        [trainer] = trainers
        return lambda: trainer.algorithm.update(trainer.algorithm.sample_batch(trainer.rng)), trainers
    stack = StackTrainer(trainers, list(range(seeds)), work, progress=False)
    return lambda: stack.update([t.algorithm.sample_batch(t.rng) for t in trainers]), trainers


def measure(name: str, build, args, device: torch.device, precision: str, seeds: int = 1, graph: bool = False) -> dict:
    """Seconds per training step of ``seeds`` members (stacked when more than one), FLOPs counted on one step (with
    ``graph``: on an eager warm-up step; the capture and a replay are not timed)."""
    from frozen_dt.training.graphed import WARMUP_STEPS

    with tempfile.TemporaryDirectory() as tmp:
        step, trainers = training_step(name, build, args, device, precision, seeds, Path(tmp), graph)
        flops = update_flops(step)
        for _ in range(max(args.warmup, WARMUP_STEPS + 1) if graph else args.warmup):
            step()
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync(device)
        seconds = (time.perf_counter() - start) / args.steps
        counts = param_counts(trainers[0].algorithm.model)
        dispatched = step_counts(step, trainers, device)
    return {"model": name if seeds == 1 else f"{name}, {seeds} seeds stacked", "seeds": seeds, "precision": precision,
            "sampling": args.sampling, "cuda_graph": graph, "steps_per_s": 1 / seconds, "s_per_step": seconds,
            "gflop_per_step": flops / 1e9, "gflops": flops / seconds / 1e9,
            "trainable_params": counts["trainable_params"] * seeds, "frozen_params": counts["frozen_params"],
            **dispatched}


def step_counts(step, trainers, device: torch.device) -> dict:
    """One more step, counted: aten operations dispatched from the host and those among them that would
    synchronise (:class:`~frozen_dt.training.sync_check.DispatchCounter`; a replayed CUDA graph dispatches none of
    its own); on cuda also the synchronisations ``torch.cuda.set_sync_debug_mode`` reports and the kernels the
    profiler sees."""
    import warnings

    from frozen_dt.training.sync_check import DispatchCounter, optimizer_step_counters

    optimizers = [t.algorithm.optimizer for t in trainers]
    with DispatchCounter(optimizer_step_counters(optimizers)) as counter:
        step()
    out = {"ops_per_step": counter.ops, "host_syncs_per_step_dispatched": counter.syncs}
    if device.type == "cuda":
        sync(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
                sync_count = sum("synchroniz" in str(w.message).lower() for w in caught)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        sync(device)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            sync(device)
        kernels = sum(1 for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
        out.update(host_syncs_per_step_cuda=sync_count, kernels_per_step=kernels)
    return out


_SLICES: dict = {}


def shared_slice(backbone: str, n: int):
    """One slice object per (backbone, depth): the stacked measurement's models share it, as ``--seeds`` does."""
    if (backbone, n) not in _SLICES:
        _SLICES[(backbone, n)] = load_backbone(backbone, f"0:{n}")
    return _SLICES[(backbone, n)]


def slice_for(backbone: str, n: int, init: str, seed: int):
    return shared_slice(backbone, n) if init == "pretrained" else load_backbone(backbone, f"0:{n}", init="random",
                                                                                seed=seed)


_DATASET = []


def dataset():
    if not _DATASET:
        _DATASET.append(synthetic_dataset())
    return _DATASET[0]


def write_json(path: str, record: dict) -> None:
    """Written after every row (atomically), so that a run cut short keeps what it measured."""
    from frozen_dt.paths import atomic_write_text

    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path).expanduser(), json.dumps(record, indent=2))


def hold_settings(args, device: torch.device, precision: str, algo_is_frozen: bool) -> list[tuple[str | None, tuple]]:
    """(label, device types the slice runs a bf16 copy on) for each measured variant of a row: under bf16 a frozen
    slice is measured held in bf16 and, as the reference, held in fp32 and recast by autocast on every call."""
    if not algo_is_frozen or precision != "bf16":
        return [(None, HOLD_BF16_ON)]
    variants = {"fp32": [("fp32", ())], "bf16": [("bf16", (device.type,))],
                "both": [("fp32", ()), ("bf16", (device.type,))]}
    return variants[args.hold]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="*", default=["gemma3-270m", "smollm2-135m", "minilm-l6"])
    parser.add_argument("--layers", nargs="*", type=int, default=[1, 2, 5])
    parser.add_argument("--inits", nargs="*", default=["pretrained"], choices=("pretrained", "random"),
                        help="slice weights measured (random: each seed its own slice)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also measure under bf16 autocast")
    parser.add_argument("--only-bf16", action="store_true", help="measure under bf16 autocast only")
    parser.add_argument("--hold", default="both", choices=("both", "fp32", "bf16"),
                        help="under bf16: the frozen slice held in fp32 (recast every call), in bf16, or both")
    parser.add_argument("--sampling", default="device", choices=("device", "host"),
                        help="batches from the device sampler (the training path) or sampled on the host")
    parser.add_argument("--no-dt", action="store_true", help="skip the DT baseline's rows")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="also measure each row with the graph-ready step (--cuda-graph; captured on cuda)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--stack", type=int, default=3, help="also measure frozen-dt slices with this many seeds "
                                                             "stacked (0: not)")
    parser.add_argument("--json", help="also write the results here (after every row)")
    args = parser.parse_args()
    device = torch.device(args.device)

    size = 8192 if device.type == "cuda" else 2048
    peak = {"fp32": matmul_gflops(device, torch.float32, n=size)}
    if args.bf16 or args.only_bf16 or device.type == "cuda":
        peak["bf16"] = matmul_gflops(device, torch.bfloat16, n=size)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"# {where}; batch {args.batch_size}, K={args.context}; sampling: {args.sampling}; plain {size}^3 matmul: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()), flush=True)
    precisions = ["bf16"] if args.only_bf16 else ["fp32"] + (["bf16"] if args.bf16 else [])
    problem = Problem(OBS, ACT)
    dt, frozen = get_spec("dt"), get_spec("frozen-dt")
    configs = [] if args.no_dt else [("dt (128 wide, 3 layers)",
                                      lambda seed: dt.build_model(dt.make_config({"context": args.context}), problem,
                                                                  None))]
    for backbone in args.backbones:
        for n in args.layers:
            if n > BACKBONES[backbone].n_layers:
                continue
            for init in args.inits:
                configs.append((f"frozen-dt {backbone} layers 0:{n}" + (" random-init" if init == "random" else ""),
                                lambda seed, b=backbone, n=n, init=init: frozen.build_model(
                                    frozen.make_config({"context": args.context, "backbone": b, "layers": f"0:{n}"}),
                                    problem, slice_for(b, n, init, seed))))
    record = {"device": where, "torch": torch.__version__, "commit": commit(), "batch_size": args.batch_size,
              "context": args.context, "steps": args.steps, "warmup": args.warmup, "sampling": args.sampling,
              "command": " ".join(["python", *sys.argv]), "matmul_gflops": peak, "results": []}
    results = record["results"]
    for name, build in configs:
        frozen_row = name.startswith("frozen-dt")
        for precision in precisions:
            for seeds, graph in [(n, g) for n in [1] + ([args.stack] if args.stack > 1 else [])
                                 for g in [False] + ([True] if args.cuda_graph else [])]:
                reference = None
                for held, on in hold_settings(args, device, precision, frozen_row):
                    for s in _SLICES.values():
                        s.hold_bf16_on = on
                    global_hold(on)
                    try:
                        r = measure(name, build, args, device, precision, seeds, graph)
                    except Exception as error:  # noqa: BLE001 - a failed row is recorded; the others still run
                        r = {"model": name, "seeds": seeds, "precision": precision, "error": f"{type(error).__name__}: "
                             f"{str(error).splitlines()[0][:300] if str(error) else ''}"}
                        print(f"{name} {precision} {seeds} seed(s): FAILED {r['error']}", flush=True)
                        results.append(r)
                        write_json(args.json, record) if args.json else None
                        continue
                    r["slice_held"] = held
                    r["fraction_of_matmul"] = r["gflops"] / peak[precision]
                    if device.type == "cuda":
                        r["mfu"] = r["gflops"] / peak["bf16"]  # against the measured bf16 matmul peak
                    if held == "fp32":
                        reference = r
                    elif held == "bf16" and reference is not None:
                        r["speedup_vs_fp32_held"] = r["steps_per_s"] / reference["steps_per_s"]
                    results.append(r)
                    if args.json:
                        write_json(args.json, record)
                    mfu = f", MFU {r['mfu']:.1%}" if "mfu" in r else ""
                    label = f"{precision}" + (f", slice held {held}" if held else "") + (", graph" if graph else "")
                    ratio = f"; {r['speedup_vs_fp32_held']:.2f}x the fp32-held slice" if "speedup_vs_fp32_held" in r \
                        else ""
                    print(f"{r['model']:60s} {label:24s}: {r['steps_per_s']:7.2f} steps/s "
                          f"({r['s_per_step'] * 1000:8.1f} ms), {r['gflop_per_step']:7.1f} GFLOP/step, "
                          f"{r['gflops']:6.1f} GFLOP/s = {r['fraction_of_matmul']:.2f}x plain matmul{mfu}{ratio}; "
                          f"{r['ops_per_step']} ops/step, {r['host_syncs_per_step_dispatched']} syncing"
                          + (f", {r['kernels_per_step']} kernels, {r['host_syncs_per_step_cuda']} cuda syncs"
                             if "kernels_per_step" in r else ""),
                          flush=True)
    global_hold(HOLD_BF16_ON)


def global_hold(on: tuple) -> None:
    """Slices built from now on (random inits, one per seed) run their bf16 copy on ``on``."""
    import frozen_dt.backbones.slice as backbone_slice

    backbone_slice.HOLD_BF16_ON = on


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        return None


if __name__ == "__main__":
    main()
