"""Helpers of the hostile-input tests: a snapshot of a folder's files, and a CLI call that must be refused with one
message (exit status 2, no traceback) while nothing changes outside the folder it may write."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def snapshot(root: Path, skip: Path | None = None) -> dict:
    """Every file under ``root`` (but under ``skip``) by relative path: its size and SHA-256."""
    root = Path(root)
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and not (skip and skip in path.parents):
            files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def refused(capsys, main, argv: list[str], expect: str) -> str:
    """``main(argv)`` in this process: exit status 2 and one line on stderr (or stdout) holding ``expect``."""
    code = main(argv)
    out = capsys.readouterr()
    message = (out.err or out.out).strip()
    assert code == 2, (code, out)
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert expect in message, message
    return message


def cli(argv: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m frozen_dt.cli ARGV`` in a fresh process (one torch thread)."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "frozen_dt.cli", *argv], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=timeout)


def assert_refused(done: subprocess.CompletedProcess, expect: str) -> str:
    """A subprocess refused with one message: exit status 2, no traceback, ``expect`` in its message."""
    message = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr and len(message.splitlines()) == 1, message
    assert expect in message, message
    return message
