"""The training loop every algorithm shares: sampling, updates, logging, evaluation, checkpoints, exact resume.

An algorithm (:class:`Algorithm`) owns its networks and optimizers and knows how to sample a batch and take one
update; :class:`Trainer` owns everything around it:

* the data RNG (a ``numpy.random.Generator`` seeded with ``seed``; the caller seeds torch before building models);
* metric rows (means over each ``log_every`` interval) through sinks (:mod:`frozen_dt.training.sinks`): always
  ``metrics.jsonl``/``metrics.csv``, and whatever else is given (wandb);
* evaluation through a hook ``evaluate(algorithm, step) -> dict`` every ``eval_every`` steps and at the end; its
  ``"score"`` decides the ``best`` checkpoint;
* checkpoints ``checkpoints/last.pt`` (every ``save_every`` steps and at the end) and ``checkpoints/best.pt``,
  written atomically (temp file, then rename) and read with ``torch.load(weights_only=True)``.

A checkpoint holds the algorithm's ``state_dict()`` (for sequence models: trainable parameters only, optimizer,
LR scheduler; never the frozen backbone), the step, the RNG states (torch CPU and CUDA, the numpy Generator's
bit-generator state as plain ints, python's ``random``), the metrics accumulated since the last log row, the best
score so far and the observation statistics. Resuming restores all of it, so ``N/2`` steps + resume + ``N/2``
steps equals ``N`` uninterrupted steps bit for bit (on CPU). An interruption never damages ``last.pt``: it is
only ever replaced by a complete file; the run continues from it with ``--resume``.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from frozen_dt.data.dataset import ObsStats
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_path
from frozen_dt.progress import progress_bar
from frozen_dt.run_dir import checkpoint_path
from frozen_dt.training.sinks import MetricsLog

CHECKPOINT_FORMAT = "frozen-dt-checkpoint/1"


class Algorithm(Protocol):
    """What the trainer runs. An algorithm may also define ``update_stack(algorithms, batches, rngs) -> [metrics]``
    (a staticmethod: one update of each of several seeds' instances, together; ``rngs[i]()`` is a context in which
    instance i's torch RNG is the global one) - :mod:`frozen_dt.training.stack` uses it for ``--seeds``."""

    def sample_batch(self, rng: np.random.Generator) -> dict: ...
    def update(self, batch: dict) -> dict: ...  # float metrics of this update
    def state_dict(self) -> dict: ...  # everything that trains (no frozen weights), optimizers, schedulers
    def load_state_dict(self, state: dict) -> None: ...
    model: "torch.nn.Module"  # what the algorithm's rollout agent acts with
    obs_stats: ObsStats | None  # the observation normalization its agent uses (None: raw observations)


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: ``path`` is always a complete checkpoint."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not Path(path).is_file():
        raise FrozenDTError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated or foreign file
        import pickle

        if isinstance(error, pickle.UnpicklingError):
            why = "corrupt, or it holds objects that weights-only loading refuses"
        else:
            why = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        raise FrozenDTError(f"cannot read checkpoint {path} ({why})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise FrozenDTError(f"{path} is not a frozen-dt checkpoint")
    return state


def rng_state(rng: np.random.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": rng.bit_generator.state,  # a dict of str and python ints: loadable with weights_only
        "python": random.getstate(),
    }


def restore_rng_state(rng: np.random.Generator, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@contextmanager
def preserved_rng_state():
    """Run a block (an evaluation) without changing torch's (CPU and CUDA) or python's global RNG states."""
    python_state = random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(python_state)


def metric(value: torch.Tensor):
    """An update's metric: a python float on CPU; on an accelerator the detached tensor, so that a step never waits
    for the device (the trainer reads metrics when it writes a log row or a checkpoint)."""
    return value.detach() if value.device.type != "cpu" else float(value.detach())


def metrics(step: dict) -> dict:
    """A training step's metrics (tensors on its device, or numbers) as the trainer books them: :func:`metric`."""
    return {k: metric(v) if isinstance(v, torch.Tensor) else v for k, v in step.items()}


def non_finite(metrics: dict) -> list[str]:
    """The names of the metrics that are NaN or infinite. Metrics still on an accelerator (tensors) are not read
    here: that would wait for the device every step; they are checked when a log row or checkpoint reads them."""
    return sorted(k for k, v in metrics.items() if not isinstance(v, torch.Tensor) and not math.isfinite(float(v)))


class Diverged(FrozenDTError):
    """An update returned a non-finite metric (NaN or infinite loss): training stops; the last checkpoint stands."""


class Trainer:
    """Run ``algorithm`` for ``steps`` updates in ``run_dir`` (see the module doc).

    A trainer in a stack of seeds (:mod:`frozen_dt.training.stack`) keeps its own torch RNG state
    (``own_torch_rng``), swapped in by :meth:`own_rng` around everything that draws from it (dropout, checkpoints),
    so that its randomness is what the same seed's single run draws.
    """

    def __init__(self, algorithm: Algorithm, run_dir: Path, *, steps: int, seed: int,
                 log_every: int, eval_every: int, save_every: int,
                 evaluate: Callable[[Algorithm, int], dict] | None = None, sinks: tuple = (), progress: bool | None = None):
        self.algorithm = algorithm
        self.run_dir = Path(run_dir)
        self.steps, self.seed = steps, seed
        self.obs_stats = algorithm.obs_stats  # saved with each checkpoint, checked on resume
        self.log_every, self.eval_every, self.save_every = log_every, eval_every, save_every
        self.evaluate = evaluate
        self.sinks = (MetricsLog(self.run_dir), *sinks)
        self.progress = progress  # False: no bar; otherwise one on a terminal only
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.best_score: float | None = None
        self.pending: dict[str, list[float]] = {}  # metric sums and count since the last log row
        self.last_eval: dict | None = None
        self.saved_step: int | None = None  # step of checkpoints/last.pt
        self.own_torch_rng: tuple | None = None  # (cpu state, cuda states) in a stack; None: the process's RNG
        self.stop_at: float | None = None  # a time.time(): stop at the first checkpoint written after it
        self.stopped = False  # the run stopped at stop_at, before its last step

    @contextmanager
    def own_rng(self):
        """Within the block torch's global RNG is this trainer's own (a no-op outside a stack)."""
        if self.own_torch_rng is None:
            yield
            return
        cuda = torch.cuda.is_initialized()
        outer = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else [])
        torch.set_rng_state(self.own_torch_rng[0])
        if cuda and self.own_torch_rng[1]:
            torch.cuda.set_rng_state_all(self.own_torch_rng[1])
        try:
            yield
        finally:
            self.own_torch_rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else [])
            torch.set_rng_state(outer[0])
            if outer[1]:
                torch.cuda.set_rng_state_all(outer[1])

    # --- checkpoints ----------------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "step": self.step,
            "algorithm": self.algorithm.state_dict(),
            "rng": rng_state(self.rng),
            "pending_metrics": {k: list(v) for k, v in self.pending.items()},
            "best_score": self.best_score,
            "last_eval": self.last_eval,
            "obs_stats": None if self.obs_stats is None else self.obs_stats.to_dict(),
        }

    def save(self, which: str) -> None:
        path = checkpoint_path(self.run_dir, which)
        try:
            save_checkpoint(path, self.state())
        except OSError as error:  # disk full, quota, permission: one message saying what is intact
            raise FrozenDTError(f"cannot write {path} at step {self.step} ({error.strerror or error}); "
                                f"{self.checkpoint_kept()}; {self.where_to_continue()} once it is fixed") from None
        if which == "last":
            self.saved_step = self.step

    def restore(self) -> None:
        """Continue from ``checkpoints/last.pt``: algorithm, RNGs, step, pending metrics, best score."""
        state = load_checkpoint(checkpoint_path(self.run_dir, "last"))
        if self.obs_stats is not None and state["obs_stats"] is not None:
            saved = ObsStats.from_dict(state["obs_stats"])
            if not (np.array_equal(saved.mean, self.obs_stats.mean) and np.array_equal(saved.std, self.obs_stats.std)):
                raise FrozenDTError(f"the dataset differs from the one {self.run_dir} was trained on "
                                    "(observation statistics changed); resume with the same data")
        self.algorithm.load_state_dict(state["algorithm"])
        restore_rng_state(self.rng, state["rng"])
        self.step = self.saved_step = int(state["step"])
        self.pending = {k: list(v) for k, v in state["pending_metrics"].items()}
        self.best_score = state["best_score"]
        self.last_eval = state["last_eval"]

    # --- the loop -------------------------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> dict | None:
        """Train to ``steps``; returns the last evaluation's results (None without an evaluation hook)."""
        if resume:
            self.restore()
        self.start()
        bar = progress_bar(total=self.steps, initial=self.step, desc="train", unit="step",
                           enabled=self.progress is not False)
        started, start_step = time.time(), self.step
        try:
            while self.step < self.steps:
                row = self.record(self.algorithm.update(self.algorithm.sample_batch(self.rng)), started, start_step)
                if row:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("loss", "score")})
                bar.update(1)
                if self.stop_due():
                    self.stopped = True
                    break
        except KeyboardInterrupt:
            bar.close()
            print(f"frozen-dt: training interrupted at step {self.step}; {self.where_to_continue()}", flush=True)
            raise
        finally:
            bar.close()
            self.close()
        return self.last_eval

    def stop_due(self) -> bool:
        """``stop_at`` has passed and the step just taken wrote ``checkpoints/last.pt`` (and is not the last one):
        the run stops there, resumable exactly."""
        return self.stop_at is not None and self.saved_step == self.step < self.steps and time.time() >= self.stop_at

    def start(self) -> None:
        for sink in self.sinks:
            sink.start(self.step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def checkpoint_kept(self) -> str:
        return "no checkpoint was written yet" if self.saved_step is None else \
            f"{checkpoint_path(self.run_dir)} is intact at step {self.saved_step}"

    def where_to_continue(self) -> str:
        return "no checkpoint was written yet" if self.saved_step is None else \
            f"continue from step {self.saved_step} with --resume {self.run_dir}"

    def record(self, metrics: dict, started: float, start_step: int) -> dict:
        """Book one update's ``metrics``: the step count, the metric means, the log row (returned), evaluation and
        checkpoints when due. A non-finite metric raises :class:`Diverged` before anything is written."""
        bad = non_finite(metrics)
        if bad:
            raise Diverged(f"training diverged at step {self.step + 1} "
                           f"({', '.join(f'{k} = {metrics[k]}' for k in bad)}); {self.checkpoint_kept()}")
        self.step += 1
        for key, value in metrics.items():
            total, count = self.pending.get(key, (0.0, 0))
            value = value.detach().double() if isinstance(value, torch.Tensor) else float(value)
            self.pending[key] = [total + value, count + 1]  # device metrics add up on the device
        row = self.after_update(started, start_step)
        if row:
            for sink in self.sinks:
                sink.write(row)
        if self.step % self.save_every == 0 or self.step == self.steps:
            self.read_pending()
            self.save("last")
        return row

    def read_pending(self) -> None:
        """Bring metric sums still on a device to the host (a checkpoint holds floats); a non-finite one raises
        :class:`Diverged` (device metrics are checked here and at log rows, not every step)."""
        self.pending = {k: [float(total), count] for k, (total, count) in self.pending.items()}
        bad = sorted(k for k, (total, _) in self.pending.items() if not math.isfinite(total))
        if bad:
            raise Diverged(f"training diverged by step {self.step} ({', '.join(bad)} not finite); "
                           f"{self.checkpoint_kept()}")

    def after_update(self, started: float, start_step: int) -> dict:
        """The metrics row of this step (empty if nothing is due); runs the evaluation and writes ``best``."""
        row = {}
        final = self.step == self.steps
        if self.step % self.log_every == 0 or final:
            self.read_pending()
            row.update({key: total / count for key, (total, count) in self.pending.items()})
            self.pending = {}
            row["steps_per_s"] = (self.step - start_step) / max(time.time() - started, 1e-9)
        if self.evaluate is not None and ((self.eval_every and self.step % self.eval_every == 0) or final):
            with preserved_rng_state():  # evaluation never shifts the training randomness
                results = self.evaluate(self.algorithm, self.step)
            self.last_eval = {"step": self.step, **results}
            row.update(results)
            if self.best_score is None or results["score"] > self.best_score:
                self.best_score = float(results["score"])
                self.save("best")
        return {"step": self.step, **row} if row else {}
