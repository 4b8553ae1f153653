"""Where data lives, and the guarantee that names from the command line never escape it."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path

from frozen_dt.errors import FrozenDTError
from frozen_dt.schema import is_plain_name

DATA_ENV_VAR = "FROZEN_DT_DATA"
DEFAULT_DATA_DIR = Path("~/.frozen-dt/data")


def data_dir() -> Path:
    """The data directory: ``$FROZEN_DT_DATA`` if set, else ``~/.frozen-dt/data``."""
    return Path(os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_DIR).expanduser()


def data_file(file_name: str) -> Path:
    """``data_dir() / file_name``, refusing any name that could point outside the data directory."""
    if not is_plain_name(file_name):
        raise FrozenDTError(f"refusing data file name {file_name!r}: only letters, digits, '.', '_' and '-' are allowed")
    # The name is a single plain path component, so the file sits directly in the data dir. The file itself may be
    # a symlink to a dataset kept elsewhere (a common way to share large files): it is not resolved.
    return data_dir() / file_name


@contextmanager
def atomic_path(path: Path, suffix: str = ""):
    """Yield a temporary path beside ``path``, unique to this call; once the block succeeds, flush it to disk,
    rename it onto ``path`` (atomic on POSIX) and flush the folder, so ``path`` is the old file or the whole new one,
    also after a crash, and two writers of one path never write into the same temporary file.

    A failure or interruption leaves ``path`` as it was and removes the temporary file. ``suffix`` is appended to
    the temporary name for writers that insist on an extension (``numpy.savez`` adds ``.npz``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique (pid and a random token), created exclusively with the umask's permissions, short enough for any name
    tmp = path.with_name(f".{path.name[:100]}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_file(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    """Flush ``path`` (a file, or a folder: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
