"""OSErrors a user's machine causes - disk full, a name too long, no permission - end as one message and exit status
2 that says what is intact, never a traceback; the file being written is left as it was, with no temporary file."""

from __future__ import annotations

import errno
import os

import pytest

from frozen_dt.cli import main
from frozen_dt.errors import os_error_message
from frozen_dt.run_dir import checkpoint_path
from frozen_dt.training.trainer import load_checkpoint
from hostile import assert_refused, cli, refused, snapshot
from test_hostile_leaderboard import fake_run

DISK_FULL_AT_SECOND_SAVE = """
import errno, sys, torch
from frozen_dt.cli import main
real, calls = torch.save, []
def save(obj, path):
    calls.append(path)
    if len(calls) == 2:
        with open(path, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    real(obj, path)
torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_while_saving_a_checkpoint_keeps_the_last_one_and_says_so(data, tmp_path):
    import subprocess
    import sys

    from test_cli import write_d4rl_hdf5
    from hostile import REPO

    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", DISK_FULL_AT_SECOND_SAVE, "train", "hopper-medium-v2", "--algo", "bc",
                           "--steps", "4", "--save-every", "2", "--log-every", "2", "--eval-episodes", "0",
                           "--hidden-dim", "16", "--batch-size", "8", "--run-dir", str(run_dir)], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    message = assert_refused(done, "No space left on device")
    assert f"{checkpoint_path(run_dir)} is intact at step 2" in message and f"--resume {run_dir}" in message
    assert load_checkpoint(checkpoint_path(run_dir))["step"] == 2
    assert sorted(p.name for p in checkpoint_path(run_dir).parent.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("code, expect", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "permission denied"),
                                          (errno.EROFS, "read-only"), (errno.EDQUOT, "quota")])
def test_a_failed_write_of_the_leaderboard_is_one_message_and_leaves_nothing_half_written(tmp_path, capsys,
                                                                                         monkeypatch, code, expect):
    import frozen_dt.paths

    monkeypatch.chdir(tmp_path)
    fake_run(tmp_path / "runs" / "bc-0")
    (tmp_path / "lb").mkdir()
    (tmp_path / "lb" / "lb.csv").write_text("the previous leaderboard\n")
    before = snapshot(tmp_path)

    def fail(path):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(frozen_dt.paths, "fsync_file", fail)
    message = refused(capsys, main, ["leaderboard", "runs/*", "--out", str(tmp_path / "lb" / "lb.csv")], expect)
    assert "intact" in message and os.strerror(code) in message
    assert snapshot(tmp_path) == before  # the previous leaderboard as it was, no temporary file


def test_a_run_dir_name_too_long_is_one_message(data, tmp_path, capsys):
    run_dir = tmp_path / ("x" * 300)
    refused(capsys, main, ["train", "hopper-medium-v2", "--algo", "bc", "--steps", "2", "--run-dir", str(run_dir)],
            "File name too long")
    assert list(tmp_path.iterdir()) == [data]


def test_a_sweep_output_root_name_too_long_is_one_message(tmp_path):
    spec = tmp_path / "s.json"
    spec.write_text('{"out": "%s", "base": {"task": "hopper-medium-v2", "algo": "bc", "steps": 2}}'
                    % (tmp_path / ("y" * 300)))
    assert_refused(cli(["sweep", str(spec)], tmp_path), "File name too long")


def test_other_os_errors_are_bugs_and_keep_their_traceback():
    assert os_error_message(OSError(errno.EIO, "Input/output error")) is None
    assert "too long" in os_error_message(OSError(errno.ENAMETOOLONG, "File name too long", "x"))


def test_a_sweep_job_whose_run_dir_cannot_be_made_fails_alone(tmp_path):
    from frozen_dt.sweeps.jobs import execute
    from frozen_dt.sweeps.spec import SweepRun

    run = SweepRun({"task": "hopper-medium-v2", "algo": "bc"}, "bc", tmp_path / ("z" * 300) / "seed0", 0, 2,
                   evaluation={"episodes": 0})
    [outcome] = execute(run, threads=1, retries=0)
    assert outcome["status"] == "failed" and "too long" in outcome["error"] and outcome["state"] == "unknown"
