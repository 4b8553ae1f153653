"""Several seeds of one run trained together in one process: ``frozen-dt train TASK --seeds 0,1,2``.

A stack is one :class:`~frozen_dt.training.trainer.Trainer` per seed, stepped in lockstep by :class:`StackTrainer`.
Each seed keeps everything a single run of that seed has: its own model (the trainable part), optimizer, schedule,
data RNG (its batches), torch RNG (its dropout; swapped in by ``Trainer.own_rng``), metrics, evaluations,
checkpoints and run directory with the same files. So seed k of a stack computes what ``--seed k`` alone computes,
up to the float rounding of batched kernels, and each member can also be resumed alone as a plain run.

What the seeds share is what does not train. A pretrained, fully frozen LM slice is loaded once and held once
(:func:`frozen_dt.frozen_lm_dt.load_backbone`), and the seeds' windows go through it as one batch. An algorithm
says how its seeds update together with an ``update_stack`` staticmethod: the sequence models send a shared frozen
body one batch, and DT (whose transformer trains), BC and the value baselines run their networks as vmapped calls
over the seeds' stacked parameters (:func:`stacked_call`; random draws such as dropout masks are drawn before the
call from each seed's own RNG). Per-seed frozen slices (random inits), and algorithms without an ``update_stack``,
update seed by seed in the same process. The seeds' periodic evaluations run as one call, every seed x return target
in one vector env, each seed's episodes those it runs alone (:meth:`StackTrainer.shared_evaluation`).

Layout: ``<stack dir>/stack.json`` (task, algorithm, seeds, member dirs) and ``<stack dir>/seed<k>/``, an ordinary
run directory whose ``config.json`` records the stack under ``"stack"``. ``--resume <stack dir>`` continues every
member from its ``checkpoints/last.pt``. A member whose update returns a non-finite loss stops the whole stack with
a message naming its seed; no member's checkpoint is touched by the stop.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_map

from frozen_dt.errors import FrozenDTError
from frozen_dt.progress import progress_bar
from frozen_dt.run_dir import read_json, write_json
from frozen_dt.schema import choice, integer, list_of, plain_name, record
from frozen_dt.training.trainer import Diverged, Trainer, non_finite

STACK_FILE = "stack.json"
STACK_FORMAT = "frozen-dt-stack/1"
STACK_RECORD = record({"format": choice(STACK_FORMAT), "seeds": list_of(integer(), 4096),
                       "members": list_of(plain_name(), 4096)})


def stacked_call(modules: list[nn.Module], x, *rest, fixed: dict[str, torch.Tensor] | None = None):
    """``modules[i](x[i], *(r[i] for r in rest))`` for each seed i, stacked (N, ...). The inputs are tensors or
    pytrees of them (a batch dict) with the seeds along dim 0. One seed's module is called as it is; several (same
    architecture) run as one batched call: ``torch.func.vmap`` over their parameters stacked with ``torch.stack``,
    so each module's own parameters receive their gradients. ``fixed``: parameters already stacked by the caller
    (frozen ones, stacked once: :func:`stacked_frozen`), used as they are. Nothing inside may draw random numbers
    (vmap would not draw them from each seed's RNG): dropout masks come in with the inputs."""
    if len(modules) == 1:
        out = modules[0](*tree_map(lambda t: t[0], (x, *rest)))
        return tuple(o[None] for o in out) if isinstance(out, tuple) else out[None]
    fixed = fixed or {}
    names = [name for name, _ in modules[0].named_parameters() if name not in fixed]
    params = {**fixed, **{name: torch.stack([m.get_parameter(name) for m in modules]) for name in names}}
    template = modules[0]

    def call(p, *inputs):
        return torch.func.functional_call(template, p, inputs)

    return torch.func.vmap(call)(params, x, *rest)


def stacked_frozen(modules: list[nn.Module], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The frozen parameters (``requires_grad`` False) of same-architecture ``modules``, stacked along a new first
    dim (in ``dtype`` if given): what :func:`stacked_call` takes as ``fixed``. Frozen weights never change, so a
    caller stacks them once, not every step."""
    with torch.no_grad():
        return {name: torch.stack([m.get_parameter(name).detach() for m in modules]).to(dtype or p.dtype)
                for name, p in modules[0].named_parameters() if not p.requires_grad}


def member_dir(stack_dir: Path, seed: int) -> Path:
    return Path(stack_dir) / f"seed{seed}"


def is_stack(path) -> bool:
    return (Path(path).expanduser() / STACK_FILE).is_file()


def write_stack(stack_dir: Path, *, task: str, algo: str, seeds: list[int]) -> None:
    write_json(Path(stack_dir) / STACK_FILE, {"format": STACK_FORMAT, "task": task, "algo": algo, "seeds": seeds,
                                              "members": [member_dir(Path(), s).name for s in seeds]})


def read_stack(stack_dir: Path) -> tuple[list[int], list[Path]]:
    """The seeds of a stack directory and their run directories."""
    path = Path(stack_dir) / STACK_FILE
    record = read_json(path, STACK_RECORD)  # members: plain names, inside the stack dir
    if len(record["seeds"]) != len(record["members"]) or len(set(record["members"])) != len(record["members"]):
        raise FrozenDTError(f"{path}: seeds and members must pair one to one, each member once")
    return list(record["seeds"]), [Path(stack_dir) / name for name in record["members"]]


def runs_in(path: Path) -> list[Path]:
    """``path`` itself, or the member runs when it is a stack directory."""
    return read_stack(path)[1] if is_stack(path) else [Path(path)]


class StackTrainer:
    """Train the ``trainers`` (one per seed in ``seeds``, same algorithm and steps) together; see the module doc."""

    def __init__(self, trainers: list[Trainer], seeds: list[int], stack_dir: Path, *, progress: bool | None = None,
                 evaluate=None):
        """``evaluate(algorithms, step) -> [results]``: the members' periodic evaluation as one call (every seed x
        target in one vector env: :func:`frozen_dt.training.train.policy_evaluation`); it replaces the members'
        own hooks, which would evaluate seed after seed. Each member books its own results as before."""
        if len({t.steps for t in trainers}) != 1:
            raise ValueError("the members of a stack train for the same number of steps")
        self.trainers, self.seeds, self.stack_dir = trainers, list(seeds), Path(stack_dir)
        self.steps = trainers[0].steps
        self.progress = progress
        kinds = {type(t.algorithm) for t in trainers}
        self.update_stack = getattr(kinds.pop(), "update_stack", None) if len(kinds) == 1 else None
        if evaluate is not None:
            self.evaluate_all, self.evaluated = evaluate, (None, [])
            for i, trainer in enumerate(trainers):
                if trainer.evaluate is not None:
                    trainer.evaluate = self.shared_evaluation(i)

    def shared_evaluation(self, index: int):
        """Member ``index``'s evaluation hook: the first member due at a step evaluates every member (all have
        taken that step's update by then: the stack updates all seeds before booking any), the others read theirs."""
        def evaluate(algorithm, step: int) -> dict:
            if self.evaluated[0] != step:
                self.evaluated = (step, self.evaluate_all([t.algorithm for t in self.trainers], step))
            return self.evaluated[1][index]

        return evaluate

    def update(self, batches: list[dict]) -> list[dict]:
        algorithms = [t.algorithm for t in self.trainers]
        rngs = [t.own_rng for t in self.trainers]
        if self.update_stack is not None:
            return self.update_stack(algorithms, batches, rngs)
        metrics = []
        for algorithm, batch, rng in zip(algorithms, batches, rngs):
            with rng():
                metrics.append(algorithm.update(batch))
        return metrics

    def run(self, resume: bool = False) -> list[dict | None]:
        """Train every member to ``steps``; each member's last evaluation (None without an evaluation hook)."""
        if resume:
            for trainer in self.trainers:
                with trainer.own_rng():
                    trainer.restore()
            steps = {t.step for t in self.trainers}
            if len(steps) != 1:
                raise FrozenDTError(f"{self.stack_dir}: its seeds' checkpoints are at different steps "
                                    f"({', '.join(f'seed {s}: {t.step}' for s, t in zip(self.seeds, self.trainers))}); "
                                    "resume each member's directory on its own")
        for trainer in self.trainers:
            trainer.start()
        step = self.trainers[0].step
        bar = progress_bar(total=self.steps, initial=step, desc=f"train {len(self.seeds)} seeds", unit="step",
                           enabled=self.progress is not False)
        started, start_step = time.time(), step
        try:
            while step < self.steps:
                batches = [t.algorithm.sample_batch(t.rng) for t in self.trainers]
                metrics = self.update(batches)
                self.check(metrics, step + 1)
                rows = []
                for seed, trainer, m in zip(self.seeds, self.trainers, metrics):
                    with trainer.own_rng():
                        try:
                            rows.append(trainer.record(m, started, start_step))
                        except Diverged as error:  # device metrics, read at a log row or checkpoint
                            raise Diverged(f"seed {seed}: {error}; the stack stopped") from None
                step += 1
                if rows[0]:
                    bar.set_postfix({f"loss{s}": f"{r['loss']:.4g}" for s, r in zip(self.seeds, rows) if "loss" in r})
                bar.update(1)
                if all(t.stop_due() for t in self.trainers):  # every member saved this step
                    for trainer in self.trainers:
                        trainer.stopped = True
                    break
        except KeyboardInterrupt:
            bar.close()
            saved = {t.saved_step for t in self.trainers}
            where = "no checkpoint was written yet" if saved == {None} else \
                f"continue from step {max(s or 0 for s in saved)} with --resume {self.stack_dir}"
            print(f"frozen-dt: training of seeds {','.join(map(str, self.seeds))} interrupted at step {step}; {where}",
                  flush=True)
            raise
        finally:
            bar.close()
            for trainer in self.trainers:
                trainer.close()
        return [t.last_eval for t in self.trainers]

    def check(self, metrics: list[dict], step: int) -> None:
        """Stop the stack, before anything of this step is written, when a seed's update is not finite."""
        bad = [(seed, m, keys) for seed, m in zip(self.seeds, metrics) if (keys := non_finite(m))]
        if not bad:
            return
        which = "; ".join(f"seed {seed} ({', '.join(f'{k} = {m[k]}' for k in keys)})" for seed, m, keys in bad)
        kept = ", ".join(f"seed {s}: step {t.saved_step}" if t.saved_step is not None else f"seed {s}: none yet"
                         for s, t in zip(self.seeds, self.trainers))
        raise Diverged(f"training diverged at step {step}: {which}. The stack stopped; every seed's "
                       f"checkpoints/last.pt is intact ({kept}); a healthy seed continues alone with --resume "
                       f"{member_dir(self.stack_dir, '<k>')}")
