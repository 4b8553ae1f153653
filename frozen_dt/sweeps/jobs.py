"""A sweep's jobs: what state each run is in, running one (train, then evaluate) as subprocesses with a fixed number
of torch threads, retries, and the backends that run many: a local pool of processes, or Ray tasks.

A job is idempotent. Its run directory says how far it got: ``done`` (the final checkpoint and the evaluation
file are there: nothing to do), ``evaluate`` (trained, not evaluated), ``resume`` (a checkpoint before the final
step: ``frozen-dt train --resume``, the trainer's exact resume) or ``new``. A failed attempt is retried from
whatever state it left; the last line of its output is reported. Every attempt's output is appended to
``<run dir>/job.log``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from frozen_dt.errors import FrozenDTError, os_error_message
from frozen_dt.locks import HOLDER_ENV, holder_id, run_locks
from frozen_dt.run_dir import checkpoint_path, read_json, run_eval_path
from frozen_dt.schema import integer, record
from frozen_dt.sweeps.spec import SweepRun, probe_argv, stack_train_argv, train_argv

STATES = ("done", "evaluate", "resume", "new")


def job_env(threads: int) -> dict:
    """The environment of a sweep's subprocesses: ``threads`` torch/BLAS threads, unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def run_state(run: SweepRun) -> str:
    """How far ``run`` got (:data:`STATES`)."""
    from frozen_dt.eval.runs import read_eval_record
    from frozen_dt.training.trainer import load_checkpoint

    if run.command == "probe":  # no resume: a probe run is done (its summary written) or starts again
        summary = Path(run.run_dir) / "summary.json"
        try:
            done = summary.is_file() and read_json(summary, record({"steps": integer()}))["steps"] == run.steps
            return "done" if done else "new"
        except FrozenDTError:  # unreadable: run it again
            return "new"
    evaluation = run.evaluation
    last = checkpoint_path(run.run_dir)
    if not last.is_file():
        return "new"
    try:
        step = int(load_checkpoint(last)["step"])
    except FrozenDTError:
        return "new"  # a checkpoint that cannot be read: train again from the start
    if step < run.steps:
        return "resume"
    if evaluation["episodes"] <= 0:
        return "done"
    path = run_eval_path(run.run_dir, evaluation["checkpoint"], evaluation.get("env_version"))
    if path.is_file():
        try:
            found = read_eval_record(path)
            if found.get("episodes") == evaluation["episodes"] and found["checkpoint_step"] == step:
                return "done"
        except FrozenDTError:  # unreadable: evaluate again
            pass
    return "evaluate"


def job_argvs(job: SweepRun | list[SweepRun], threads: int) -> list[list[str]]:
    """The ``frozen-dt`` command lines that take a job - one run, or the seeds of one config stacked in one process
    (``stack_seeds``) - from its state to done. Stacked seeds that are all new train as one ``--seeds`` stack, all
    unfinished ones resume as one; seeds in different states (one finished alone, say) continue one by one, since
    every member of a stack is also a run of its own."""
    runs = job if isinstance(job, list) else [job]
    states = [run_state(run) for run in runs]
    if runs[0].command == "probe":
        return [probe_argv(run) for run, state in zip(runs, states) if state != "done"]
    argvs = []
    if len(runs) > 1 and set(states) == {"new"}:
        argvs.append(stack_train_argv(runs))
    elif len(runs) > 1 and set(states) == {"resume"}:
        argvs.append(["train", runs[0].task, f"--resume={runs[0].run_dir.parent}"])
    else:
        for run, state in zip(runs, states):
            if state == "new":
                argvs.append(train_argv(run))
            elif state == "resume":
                argvs.append(["train", run.task, f"--resume={run.run_dir}"])
    for run, state in zip(runs, states):
        evaluation = run.evaluation
        if state != "done" and evaluation["episodes"] > 0:
            argvs.append(["eval", str(run.run_dir), "--episodes", str(evaluation["episodes"]),
                          "--num-envs", str(evaluation["num_envs"]), "--eval-seed", str(evaluation["eval_seed"]),
                          "--checkpoint", evaluation["checkpoint"], "--workers", str(threads)]
                         + (["--env-version", evaluation["env_version"]] if evaluation.get("env_version") else []))
    return argvs


class Children:
    """The subprocesses running now, so that Ctrl-C reaches all of them."""

    def __init__(self):
        self.lock, self.procs, self.stopping = threading.Lock(), set(), False

    def start(self, argv: list[str], log, env: dict) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise KeyboardInterrupt
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.procs.add(proc)
        return proc

    def done(self, proc) -> None:
        with self.lock:
            self.procs.discard(proc)

    def interrupt(self) -> None:
        """SIGINT to every child (training writes nothing partial: it stops at its last checkpoint)."""
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def last_line(log_path: Path) -> str:
    lines = [line for line in log_path.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "(no output)"


def execute(job: SweepRun | list[SweepRun], *, threads: int, retries: int, children: Children | None = None,
            node: str | None = None) -> list[dict]:
    """Take a job (one run, or stacked seeds: :func:`job_argvs`) to done, retrying failed attempts; one outcome per
    run (``status``: done, skipped or failed)."""
    runs = job if isinstance(job, list) else [job]
    children = children or Children()
    started = time.time()
    log_path = (runs[0].run_dir if len(runs) == 1 else runs[0].run_dir.parent) / "job.log"
    env = job_env(threads)

    def outcomes(attempts: int = 0, **fields) -> list[dict]:
        return [{"run_dir": str(run.run_dir), "config": run.config_name, "seed": run.seed, "algo": run.algo,
                 "task": run.task, "node": node or socket.gethostname(), "attempts": attempts,
                 "state": state_of(run), "seconds": round(time.time() - started, 1), **fields} for run in runs]

    try:  # run_locks makes the run dirs
        with run_locks([run.run_dir for run in runs] + ([runs[0].run_dir.parent] if len(runs) > 1 else [])):
            return attempt_job(runs, argvs_of=lambda: job_argvs(runs, threads), retries=retries, children=children,
                               log_path=log_path, env={**env, HOLDER_ENV: holder_id()}, outcomes=outcomes)
    except (FrozenDTError, OSError) as error:  # a run dir held by another process, a disk full...: this job
        # fails, the others go on, and sweep.json records it
        return outcomes(status="failed", error=(os_error_message(error) if isinstance(error, OSError) else None)
                        or str(error))


def state_of(run: SweepRun) -> str:
    """:func:`run_state`, or ``unknown`` when its files cannot be looked at (a name too long, no permission)."""
    try:
        return run_state(run)
    except OSError:
        return "unknown"


def attempt_job(runs: list[SweepRun], *, argvs_of, retries: int, children: Children, log_path: Path, env: dict,
                outcomes) -> list[dict]:
    """The attempts of one job, its run dirs locked by this process (its subprocesses use the lock: HOLDER_ENV)."""
    attempts = 0
    argvs = argvs_of()
    if not argvs:
        return [{**o, "seconds": 0.0} for o in outcomes(status="skipped")]
    error = None
    for attempt in range(1 + retries):
        attempts = attempt + 1
        if attempt:  # a retry starts from wherever the failed attempt left the runs
            argvs = argvs_of()
        error = None
        for argv in argvs:
            with open(log_path, "a") as log:
                log.write(f"\n$ frozen-dt {' '.join(argv)}\n")
                log.flush()
                proc = children.start([sys.executable, "-m", "frozen_dt.cli", *argv], log, env)
                try:
                    code = proc.wait()
                except KeyboardInterrupt:  # this job was cancelled (Ray): stop its process too, cleanly
                    os.killpg(proc.pid, signal.SIGINT)
                    proc.wait()
                    raise
                finally:
                    children.done(proc)
            if code != 0:
                if children.stopping:
                    raise KeyboardInterrupt
                error = f"frozen-dt {argv[0]} exited with {code}: {last_line(log_path)}"
                break
        if error is None:
            return outcomes(attempts, status="done")
    return outcomes(attempts, status="failed", error=error)


def datasets_to_prepare(sweep) -> list[tuple[str, list[str]]]:
    """``(what, frozen-dt argv)`` for every dataset the sweep's runs need that is not here yet: its ``data``
    entries whose file is missing, and the tasks whose runs name no ``dataset`` and that have no local one."""
    from frozen_dt.data.sources import locate
    from frozen_dt.envs.registry import get_task

    todo = []
    for entry in sweep.data:
        if not Path(entry["out"]).expanduser().is_file():
            size = [f"--{k}={entry[k]}" for k in ("episodes", "transitions", "seed") if k in entry]
            todo.append((entry["out"], ["data", "generate", entry["task"], f"--out={entry['out']}", *size]))
    if any(run.command == "probe" for run in sweep.runs):
        return todo  # probes make their own data
    for task in dict.fromkeys(run.task for run in sweep.runs
                               if not run.settings.get("dataset") and not run.settings.get("download")):
        if locate(get_task(task)) is None:
            todo.append((task, ["data", "generate", task]))
    return todo


def prepare_data(sweep, threads: int) -> None:
    """Generate the datasets of :func:`datasets_to_prepare`, one at a time, before any job starts (so that jobs
    do not generate the same dataset side by side). Output goes to ``<out>/data.log``."""
    todo = datasets_to_prepare(sweep)
    if not todo:
        return
    log_path = sweep.out / "data.log"
    env = job_env(threads)
    for what, argv in todo:
        print(f"sweep: generating {what} (frozen-dt {' '.join(argv)}; log {log_path})", flush=True)
        with open(log_path, "a") as log:
            log.write(f"\n$ frozen-dt {' '.join(argv)}\n")
            log.flush()
            code = subprocess.call([sys.executable, "-m", "frozen_dt.cli", *argv], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
        if code != 0:
            raise FrozenDTError(f"generating {what} failed ({last_line(log_path)}); see {log_path}")


def run_local(work: list, *, jobs: int, threads: int, retries: int, on_result) -> list:
    """Run the jobs of ``work`` (runs, or lists of stacked runs) on ``jobs`` processes at a time here;
    ``on_result(outcome)`` for each run as its job ends. Ctrl-C stops every job (they resume on the next
    invocation)."""
    children = Children()
    results = []
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(execute, job, threads=threads, retries=retries, children=children) for job in work]
    try:
        for future in futures:
            for outcome in future.result():
                results.append(outcome)
                on_result(outcome)
    except KeyboardInterrupt:
        children.interrupt()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


def import_ray():
    try:
        import ray
    except ImportError:
        raise FrozenDTError("--backend ray needs Ray: pip install 'frozen-dt[ray]'") from None
    return ray


def check_ray_address(address: str | None, timeout: float = 3.0) -> None:
    """A ``HOST:PORT`` address must accept a connection now (Ray itself would keep retrying for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as error:
        raise FrozenDTError(f"cannot reach Ray at {address} ({getattr(error, 'strerror', None) or error}); start "
                            "the cluster (ray start --head) or give its address") from None


def _ray_execute(job, threads: int, retries: int) -> list[dict]:
    import ray

    return execute(job, threads=threads, retries=retries,
                   node=f"{socket.gethostname()}:{ray.get_runtime_context().get_node_id()[:12]}")


def run_ray(work: list, *, address: str | None, cpus: int, gpus: float, retries: int, on_result) -> list:
    """Each job of ``work`` (a run, or stacked runs) as a Ray task asking for ``cpus`` CPUs and ``gpus`` GPUs; Ray
    places them on the cluster's nodes. Run dirs must be on a path every node can write (a shared filesystem).
    ``address`` None: a local Ray."""
    ray = import_ray()
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise FrozenDTError(f"cannot reach Ray at {address or 'a new local instance'}: "
                            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_ray_execute)
        pending = {task.remote(job, cpus, retries): job for job in work}
        results = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                for outcome in ray.get(ref):
                    results.append(outcome)
                    on_result(outcome)
        return results
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        raise
    finally:
        ray.shutdown()
