"""The one exception type for problems a user can fix (bad task name, missing or corrupt data...).

The CLI prints its message as a single line and exits with code 2; everything else is a bug and keeps its
traceback.
"""


class FrozenDTError(Exception):
    """A user-fixable problem: printed as one readable message, exit code 2, no traceback."""
