"""``frozen-dt probe TASK``: train one arm on one probe task and record its learning curves.

A run directory holds ``config.json`` (the arguments and the model's parameter counts), ``metrics.csv`` /
``metrics.jsonl`` (``train_loss`` every ``log_every`` steps; test per-bit error per length ``err_L<L>`` (recall) or
``err`` (bit tasks) every ``eval_every`` steps and at the end) and ``checkpoints/last.pt`` (trainable parameters
only, read with ``torch.load(weights_only=True)``). A summary (final and best-over-evaluations test error) is written
to ``<summary_dir>/<task>-<backbone>-<layers>-<arm>-seed<S>.json``. All files are written atomically.
"""

from __future__ import annotations

import re
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from frozen_dt.errors import FrozenDTError
from frozen_dt.parameters import param_counts
from frozen_dt.probes.models import ProbeModel, build_probe_model
from frozen_dt.probes.tasks import Batch, TaskSpec, parse_lengths, test_rng, train_rng
from frozen_dt.run_dir import read_json, write_json
from frozen_dt.training.sinks import MetricsLog
from frozen_dt.training.trainer import load_checkpoint, save_checkpoint

CHECKPOINT = Path("checkpoints") / "last.pt"


def task_spec(args) -> TaskSpec:
    return TaskSpec(args.task, bits=args.bits, fmt=args.format, min_len=args.min_len, max_len=args.max_len,
                    bit_length=args.bit_length, patch=args.patch, n_strings=args.n_strings)


def test_sets(spec: TaskSpec, lengths: list[int], n_test: int) -> dict[str, Batch]:
    """Fixed test sets: recall one per length (``L5``...), the bit tasks one (``all``); same for every arm/seed."""
    if spec.name == "recall":
        return {f"L{n}": spec.sample(test_rng(n), n_test, n) for n in lengths}
    return {"all": spec.sample(test_rng(0), n_test)}


def autocast(precision: str, device: torch.device = torch.device("cpu")):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def loss_and_error(model: ProbeModel, batch: Batch, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per-bit BCE over the counted positions, and the per-bit error there (a 0-dim tensor: reading it waits
    for the device), on the device of the model's parameters. Both are masked sums over the count of counted bits,
    not means of boolean-indexed rows (whose size only the device knows): no host synchronisation."""
    from frozen_dt.sequence_models import masked_mean

    device = next(model.parameters()).device
    x = torch.from_numpy(batch.inputs).to(device)
    mask = torch.from_numpy(batch.target_mask).to(device)
    y = torch.from_numpy(batch.targets).to(device)
    with autocast(precision, device):
        logits = model(x)
    logits = logits.float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    loss = masked_mean(bce, mask)
    error = masked_mean(((logits > 0).float() != y).float(), mask)
    return loss, error


@torch.no_grad()
def evaluate(model: ProbeModel, sets: dict[str, Batch], precision: str = "fp32", chunk: int = 128) -> dict[str, float]:
    """Per-bit test error of each test set, keyed ``err_<name>``."""
    was_training = model.training
    model.eval()
    out = {}
    try:
        for name, batch in sets.items():
            errors, counts = [], []
            for i in range(0, len(batch), chunk):
                part = Batch(batch.inputs[i:i + chunk], batch.targets[i:i + chunk], batch.target_mask[i:i + chunk])
                errors.append(float(loss_and_error(model, part, precision)[1]))
                counts.append(len(part))
            out[f"err_{name}"] = float(np.average(errors, weights=counts))
    finally:
        model.train(was_training)
    return out


def summary_name(config: dict) -> str:
    raw = f"{config['task']}-{config['backbone']}-{config['layers']}-{config['arm']}-seed{config['seed']}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw.replace(":", "-")) + ".json"


def model_from_config(config: dict) -> tuple[ProbeModel, TaskSpec]:
    spec = TaskSpec(config["task"], bits=config["bits"], fmt=config["format"], min_len=config["min_len"],
                    max_len=config["max_len"], bit_length=config["bit_length"], patch=config["patch"],
                    n_strings=config["n_strings"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = build_probe_model(config["arm"], backbone=config["backbone"], layers=config["layers"],
                                  seed=config["seed"], in_features=spec.in_features, out_bits=spec.out_bits)
    return model, spec


def load_run(run_dir: str | Path) -> tuple[ProbeModel, TaskSpec, dict]:
    """The trained probe model of a run directory (its config.json and checkpoints/last.pt)."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise FrozenDTError(f"no such run directory: {run_dir}")
    config = read_json(run_dir / "config.json")
    if config.get("kind") != "probe":
        raise FrozenDTError(f"{run_dir} is not a probe run (its config.json has no kind 'probe')")
    model, spec = model_from_config(config)
    state = load_checkpoint(run_dir / CHECKPOINT)
    model.load_trainable_state_dict(state["model"])
    model.eval()
    return model, spec, config


def run_probe(args) -> dict:
    """Train ``args`` (a :class:`frozen_dt.config.ProbeArgs`); returns the summary."""
    spec = task_spec(args)
    lengths = parse_lengths(args.lengths) if args.task == "recall" else []
    if lengths and max(lengths) > 2 ** args.bits:
        raise FrozenDTError(f"--lengths up to {max(lengths)} need more than the 2^{args.bits} distinct keys")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise FrozenDTError("--device cuda: no CUDA device is available")
    torch.manual_seed(args.seed)
    model = build_probe_model(args.arm, backbone=args.backbone, layers=args.layers, seed=args.seed,
                              in_features=spec.in_features, out_bits=spec.out_bits)
    counts = param_counts(model)
    model.to(args.device)
    trainable = counts["trainable_params"]
    print(f"probe {args.task}: arm {args.arm}, body {args.backbone} layers {args.layers}; "
          f"trainable parameters: {trainable:,} (frozen: {counts['frozen_params']:,})", flush=True)
    run_dir = Path(args.run_dir or f"runs/probes/{args.task}/{args.arm}/{time.strftime('%Y%m%d-%H%M%S')}").expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"kind": "probe", **{k: v for k, v in vars(args).items()}, "format": args.format,
              "trainable_params": trainable, "frozen_params": counts["frozen_params"],
              "hardware": f"{torch.get_num_threads()} torch thread(s), CPU" if args.device == "cpu"
              else torch.cuda.get_device_name(0)}
    write_json(run_dir / "config.json", config)
    sets = test_sets(spec, lengths, args.n_test)
    rng = train_rng(args.seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    log = MetricsLog(run_dir)
    log.start(0)
    best: dict[str, float] = {}
    pending, started, last = [], time.time(), {}
    model.train()
    for step in range(1, args.steps + 1):
        loss, _ = loss_and_error(model, spec.sample(rng, args.batch_size), args.precision)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.grad_clip)
        optimizer.step()
        pending.append(loss.detach())  # read at log rows only (no wait for the device each step)
        row = {}
        if step % args.log_every == 0 or step == args.steps:
            row.update(train_loss=float(torch.stack(pending).mean()), steps_per_s=step / (time.time() - started))
            pending = []
        if (args.eval_every and step % args.eval_every == 0) or step == args.steps:
            last = evaluate(model, sets, args.precision)
            row.update(last)
            for key, value in last.items():
                best[key] = min(best.get(key, 1.0), value)
            print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in last.items()), flush=True)
        if row:
            log.write({"step": step, **row})
    save_checkpoint(run_dir / CHECKPOINT, {"model": model.trainable_state_dict(), "step": args.steps,
                                           "config": {k: v for k, v in config.items() if v is not None}})
    summary = {"task": args.task, "arm": args.arm, "backbone": args.backbone, "layers": args.layers,
               "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
               "precision": args.precision, "trainable_params": trainable, "run_dir": str(run_dir),
               "final": last, "best": best, "wall_s": round(time.time() - started, 1),
               "scale": f"reduced ({args.device})", "hardware": config["hardware"]}
    write_json(run_dir / "summary.json", summary)
    if args.summary_dir:
        write_json(Path(args.summary_dir).expanduser() / summary_name(config), summary)
    return summary
