"""The pre-registered study of issue 31: slice choice by measurement, shuffled weights, the recall study's arms,
learning-rate sweep and statistics (see ``results/science/PROTOCOL.md``)."""

from __future__ import annotations

import sys
from typing import Callable


def exit_code(action: Callable[[], object]) -> int:
    """Run a command's body: 0, or a readable ``error: ...`` on stderr and 2 for a FrozenDTError (no traceback)."""
    from frozen_dt.errors import FrozenDTError

    try:
        action()
    except FrozenDTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
