"""One run of the recall study: an arm of :mod:`frozen_dt.probes.models` trained on multi-query recall.

A run is ``(arm, lr, seed)`` with the study's sizes (:class:`RunSpec`). It evaluates every ``eval_every`` steps
on the fixed test sets (``n_test`` sequences at each of ``eval_lengths``), and at each evaluation writes

* ``<run_dir>/checkpoint.pt`` (written after the result file): step, trainable parameters, Adam state and the run's
  spec (``torch.load(weights_only=True)``), from which an interrupted run resumes (batches are a function of
  (seed, step), so the resumed run equals an uninterrupted one; a checkpoint of another spec, or one whose result
  file lacks an evaluation it has passed, is refused: :func:`resumable_curve`); when it is absent, a committed
  snapshot ``<result_file stem>.pt`` beside the result file (:func:`snapshot`, for runs whose trainable state is
  small) is resumed from instead;
* ``<result_file>`` (JSON): the spec, the evaluations so far (``curve``), the no-recall baseline of each test
  set, ``status`` ``running`` or ``complete``, the hardware and wall time. A complete result file is never rerun.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from frozen_dt.errors import FrozenDTError
from frozen_dt.parameters import param_counts
from frozen_dt.probes.models import build_probe_model
from frozen_dt.probes.train import autocast, evaluate
from frozen_dt.run_dir import read_json, write_json
from frozen_dt.science.mq_recall import majority_error, test_set, train_batch
from frozen_dt.training.trainer import load_checkpoint, save_checkpoint


@dataclass
class RunSpec:
    arm: str
    lr: float
    seed: int
    backbone: str = "gemma3-270m"
    layers: str = "0:2"
    steps: int = 2000
    batch_size: int = 32
    min_len: int = 2
    max_len: int = 8
    bits: int = 8
    eval_lengths: list = field(default_factory=lambda: [8, 12])
    n_test: int = 1024
    eval_every: int = 250
    grad_clip: float = 1.0
    precision: str = "fp32"
    device: str = "cpu"

    @property
    def name(self) -> str:
        raw = f"{self.backbone}-{self.layers}-{self.arm}-lr{self.lr:g}-seed{self.seed}"
        return re.sub(r"[^A-Za-z0-9._-]", "_", raw.replace(":", "-"))


def baselines(spec: RunSpec, sets) -> dict[str, float]:
    return {f"norecall_{name}": round(majority_error(batch), 6) for name, batch in sets.items()}


def _loss(model, batch, precision: str, device) -> torch.Tensor:
    x = torch.from_numpy(batch.inputs).to(device)
    mask = torch.from_numpy(batch.target_mask).to(device)
    y = torch.from_numpy(batch.targets).to(device)[mask]
    with autocast(precision, device):
        logits = model(x)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float()[mask], y)


def run(spec: RunSpec, run_dir: Path, result_file: Path, log=print) -> dict:
    """Train (or resume, or skip if complete) one run; returns its result record."""
    if result_file.is_file():
        previous = read_json(result_file)
        if previous.get("status") == "complete":
            return previous
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise FrozenDTError("device cuda: no CUDA device is available")
    device = torch.device(spec.device)
    sets = {f"L{n}": test_set(n, spec.n_test, spec.bits) for n in spec.eval_lengths}
    bars = baselines(spec, sets)
    torch.manual_seed(spec.seed)
    model = build_probe_model(spec.arm, backbone=spec.backbone, layers=spec.layers, seed=spec.seed,
                              in_features=spec.bits + 3, out_bits=spec.bits).to(device)
    counts = param_counts(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=spec.lr)
    checkpoint = run_dir / "checkpoint.pt"
    step, curve, wall = 0, [], 0.0
    source = checkpoint if checkpoint.is_file() else snapshot_path(result_file)
    if source.is_file():
        state = load_checkpoint(source, map_location=device)
        step, wall = int(state["step"]), float(state["wall_s"])
        curve = resumable_curve(spec, state, source, result_file)
        model.load_trainable_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        log(f"{spec.name}: resumed at step {step} from {source}")
    record = {"spec": asdict(spec), "name": spec.name, "trainable_params": counts["trainable_params"],
              "frozen_params": counts["frozen_params"], "baselines": bars,
              "hardware": f"{torch.get_num_threads()} torch thread(s), CPU" if spec.device == "cpu"
              else torch.cuda.get_device_name(0)}
    started = time.time() - wall
    model.train()
    while step < spec.steps:
        step += 1
        loss = _loss(model, train_batch(spec.seed, step, spec.batch_size, spec.min_len, spec.max_len, spec.bits),
                     spec.precision, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
        optimizer.step()
        if step % spec.eval_every == 0 or step == spec.steps:
            errors = {k: round(v, 6) for k, v in evaluate(model, sets, spec.precision).items()}
            wall = time.time() - started
            curve.append({"step": step, "train_loss": round(float(loss.detach()), 6), **errors,
                          "wall_s": round(wall, 1)})
            status = "complete" if step == spec.steps else "running"
            write_json(result_file, {**record, "status": status, "step": step, "curve": curve,
                                     "wall_s": round(wall, 1)})  # first: a checkpoint never runs ahead of its curve
            save_checkpoint(checkpoint, {"model": model.trainable_state_dict(), "optimizer": optimizer.state_dict(),
                                         "step": step, "wall_s": wall, "spec": asdict(spec)})
            log(f"{spec.name} step {step}: " + " ".join(f"{k}={v:.4f} (no recall {bars['norecall_' + k[4:]]:.4f})"
                                                        for k, v in errors.items()) + f" [{wall:.0f}s]")
    return read_json(result_file)


def eval_steps(spec: RunSpec, upto: int) -> list[int]:
    """The steps at which a run evaluates, up to ``upto``."""
    return [s for s in range(1, upto + 1) if s % spec.eval_every == 0 or s == spec.steps]


def resumable_curve(spec: RunSpec, state: dict, source: Path, result_file: Path) -> list[dict]:
    """The evaluations a resumed run keeps: its result file's, up to the checkpoint's step. Refused when the
    checkpoint is another run's (arm, rate, seed, sizes, device or precision differ: a checkpoint written before
    the spec was stored passes) or the result file lacks an evaluation the checkpoint has passed (moved aside,
    or cut between the two writes): resuming would leave a hole in the learning curve."""
    step = int(state["step"])
    if "spec" in state and state["spec"] != asdict(spec):
        differ = sorted(k for k in asdict(spec) if state["spec"].get(k) != asdict(spec)[k])
        raise FrozenDTError(f"{source} is a checkpoint of another run ({', '.join(differ)} differ): move it aside "
                            "to start this run afresh")
    previous = read_json(result_file).get("curve", []) if result_file.is_file() else []
    curve = [row for row in previous if row["step"] <= step]
    if [row["step"] for row in curve] != eval_steps(spec, step):
        raise FrozenDTError(f"{source} is at step {step}, but {result_file} has evaluations at "
                            f"{[row['step'] for row in curve]} of {eval_steps(spec, step)}: the run cannot resume "
                            "with its whole learning curve; move the checkpoint aside to start it afresh")
    return curve


def snapshot_path(result_file: Path) -> Path:
    return result_file.with_suffix(".pt")


SNAPSHOT_LIMIT = 1 << 20  # bytes: frozen-body arms' interface and Adam state (~0.2 MB) fit, a scratch model does not


def snapshot(run_dir: Path, result_file: Path) -> Path | None:
    """Copy an unfinished run's checkpoint beside its result file (to be committed), if it is small; else None."""
    import shutil

    from frozen_dt.paths import atomic_path

    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file() or checkpoint.stat().st_size > SNAPSHOT_LIMIT:
        return None
    target = snapshot_path(result_file)
    with atomic_path(target) as tmp:
        shutil.copyfile(checkpoint, tmp)
    return target


def steps_to_threshold(curve: list[dict], key: str, threshold: float) -> int | None:
    """The first evaluated step whose ``key`` is at or below ``threshold`` (None: censored, never reached)."""
    for row in curve:
        if row[key] <= threshold:
            return int(row["step"])
    return None


def final_error(record: dict, key: str, last: int = 2) -> float:
    """Mean of ``key`` over the run's last ``last`` evaluations (less noisy than the last one alone)."""
    values = [row[key] for row in record["curve"][-last:]]
    if not values:
        raise FrozenDTError(f"{record.get('name')}: no evaluation yet")
    return float(np.mean(values))
