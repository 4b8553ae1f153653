"""One writer per run directory and per sweep output root, for the whole command.

``frozen-dt train`` (new or ``--resume``), ``frozen-dt eval`` and a sweep's job each hold the lock of every run
directory they write; ``frozen-dt sweep`` holds its output root's. The lock is an advisory ``flock`` on
``<dir>/.frozen-dt.lock``, which also records the holder (pid, host, command, since): a second writer is refused at
once with one message naming it. The kernel releases the lock when the holder exits, however it exits, so a crash
leaves no stale lock behind. A sweep job's ``frozen-dt`` subprocesses work in the run directories their job holds:
the job names itself in ``FROZEN_DT_LOCK_HOLDER`` and its children may use what it holds.

On a filesystem shared by several machines (Ray over NFS) the guarantee is that of the filesystem's ``flock``.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from frozen_dt.errors import FrozenDTError

LOCK_FILE = ".frozen-dt.lock"
HOLDER_ENV = "FROZEN_DT_LOCK_HOLDER"  # "<host>:<pid>" of a sweep job whose locks its subprocesses may use


class LockHeld(FrozenDTError):
    """Another process holds the lock."""


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _describe(record: dict) -> str:
    if not record:
        return "another process (it is starting)"
    return (f"pid {record.get('pid')} on {record.get('host')} ({record.get('command')}, since "
            f"{record.get('since')})")


def _read_holder(handle) -> dict:
    try:
        handle.seek(0)
        record = json.loads(handle.read() or "{}")
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


@contextmanager
def run_lock(directory: Path, what: str = "run directory"):
    """Hold ``directory``'s lock while the block runs (the directory is created if absent); refuse with one message
    naming the holder if another process holds it."""
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / LOCK_FILE, "a+")
    except OSError as error:
        raise FrozenDTError(f"cannot lock {what} {directory} ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FrozenDTError(f"cannot lock {what} {directory} ({error.strerror or error}): this filesystem "
                                    "offers no locks") from None
            record = _read_holder(handle)
            inherited = record.get("id") and record.get("id") == os.environ.get(HOLDER_ENV)
            if not inherited:
                raise LockHeld(f"{what} {directory} is in use by {_describe(record)}; wait for it to finish or "
                                    f"stop it (nothing was changed)") from None
            yield directory  # the sweep job that started this process holds it for us
            return
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"id": holder_id(), "pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join(["frozen-dt", *sys.argv[1:]])[:300],
                                 "since": datetime.datetime.now().isoformat(timespec="seconds")}))
        handle.flush()
        yield directory
    finally:
        handle.close()  # releases the lock


@contextmanager
def run_locks(directories, what: str = "run directory"):
    """Hold the locks of all ``directories`` (in a fixed order, so two commands never wait on each other)."""
    from contextlib import ExitStack

    with ExitStack() as held:
        for directory in sorted({Path(d).expanduser() for d in directories}):
            held.enter_context(run_lock(directory, what))
        yield
