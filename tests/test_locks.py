"""Concurrent writers: a run dir or a sweep's output root has one writer at a time (the second is refused at once with
one message naming the holder, nothing changed), a crashed holder leaves no stale lock, and two processes saving one
checkpoint path never tear it (each write has its own temporary file). Deterministic: the holder is a process that
holds the lock until told to let go."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from frozen_dt.cli import main
from frozen_dt.locks import HOLDER_ENV, LOCK_FILE, LockHeld, run_lock
from frozen_dt.run_dir import checkpoint_path
from frozen_dt.training.trainer import load_checkpoint
from hostile import REPO, refused, snapshot

HOLD = "import sys\nfrom frozen_dt.locks import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('held', flush=True)\n    sys.stdin.read()\n"


@pytest.fixture
def holder():
    """Start a process holding a directory's lock; it lets go when its stdin closes."""
    procs = []

    def start(directory):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_training_of_one_run_dir_is_refused_naming_the_holder(data, tmp_path, holder, capsys):
    from test_cli import write_d4rl_hdf5

    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    run_dir = tmp_path / "run"
    proc = holder(run_dir)
    before = snapshot(tmp_path)
    message = refused(capsys, main, ["train", "hopper-medium-v2", "--algo", "bc", "--steps", "2", "--run-dir",
                                     str(run_dir)], f"pid {proc.pid}")
    assert "is in use by" in message and "nothing was changed" in message
    assert snapshot(tmp_path) == before
    refused(capsys, main, ["train", "hopper-medium-v2", "--resume", str(run_dir)], f"pid {proc.pid}")
    refused(capsys, main, ["eval", str(run_dir)], f"pid {proc.pid}")
    assert snapshot(tmp_path) == before


def test_a_second_sweep_of_one_root_is_refused_and_sweep_json_is_kept(data, tmp_path, holder, capsys):
    from test_cli import write_d4rl_hdf5
    from test_sweeps import TINY, write_spec

    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")  # were the lock not held, the sweep would train, not generate
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text('{"the first sweep": "wrote this"}')
    spec = write_spec(tmp_path / "s.json", TINY, out)
    proc = holder(out)
    before = snapshot(tmp_path)
    refused(capsys, main, ["sweep", str(spec)], f"sweep output root {out} is in use by pid {proc.pid}")
    assert snapshot(tmp_path) == before


def test_a_sweep_job_whose_run_dir_is_held_fails_alone(data, tmp_path, holder):
    from frozen_dt.sweeps.jobs import execute
    from frozen_dt.sweeps.spec import load_sweep
    from test_sweeps import TINY, write_spec

    sweep = load_sweep(write_spec(tmp_path / "s.json", TINY, tmp_path / "out"))
    proc = holder(sweep.runs[0].run_dir)
    [outcome] = execute(sweep.runs[0], threads=1, retries=0)
    assert outcome["status"] == "failed" and f"pid {proc.pid}" in outcome["error"]
    assert not checkpoint_path(sweep.runs[0].run_dir).exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld), run_lock(tmp_path):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with run_lock(tmp_path):  # the kernel let go of it with the process
        record = json.loads((tmp_path / LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and record["command"].startswith("frozen-dt")


def test_a_sweep_jobs_subprocesses_use_the_lock_it_holds(tmp_path, holder, monkeypatch):
    proc = holder(tmp_path)
    record = json.loads((tmp_path / LOCK_FILE).read_text())
    monkeypatch.setenv(HOLDER_ENV, "another-host:1")
    with pytest.raises(LockHeld), run_lock(tmp_path):
        pass
    monkeypatch.setenv(HOLDER_ENV, record["id"])
    with run_lock(tmp_path):
        pass
    assert proc.poll() is None


SAVE = """
import sys, torch
from frozen_dt.training.trainer import save_checkpoint
value = int(sys.argv[2])
for _ in range(40):
    save_checkpoint(sys.argv[1], {"step": value, "weights": torch.full((20_000,), float(value))})
"""


def test_two_processes_saving_one_checkpoint_never_tear_it(tmp_path):
    path = checkpoint_path(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SAVE, str(path), str(v)], cwd=REPO, env=env,
                              stderr=subprocess.PIPE, text=True) for v in (1, 2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    state = load_checkpoint(path)
    assert torch.equal(state["weights"], torch.full((20_000,), float(state["step"])))  # one writer's, whole
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left
