"""The one exception type for problems a user can fix (bad task name, missing or corrupt data...).

The CLI prints its message as a single line and exits with code 2; everything else is a bug and keeps its
traceback.
"""

import errno


class FrozenDTError(Exception):
    """A user-fixable problem: printed as one readable message, exit code 2, no traceback."""


# OSErrors a user's machine causes (not bugs): the CLI reports them as one message, exit code 2.
USER_OS_ERRORS = {
    errno.ENOSPC: "the disk is full: free space, then run the command again",
    errno.EDQUOT: "the disk quota is used up: free space, then run the command again",
    errno.ENAMETOOLONG: "a file name is too long: choose a shorter directory or name",
    errno.EACCES: "permission denied: choose a directory you can write, or fix its permissions",
    errno.EPERM: "operation not permitted: choose a directory you can write, or fix its permissions",
    errno.EROFS: "the filesystem is read-only: choose a writable directory",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or run fewer jobs at once",
}
INTACT = ("files written before are intact (each is written whole to a temporary file, then renamed; a run "
          "continues from its last checkpoint with --resume)")


def os_error_message(error: OSError) -> str | None:
    """One line for an OSError in :data:`USER_OS_ERRORS` (what failed, where, what to do, what is intact);
    None for any other (a bug: keep its traceback)."""
    hint = USER_OS_ERRORS.get(error.errno)
    if hint is None:
        return None
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror or error}{where}; {hint}; {INTACT}"
