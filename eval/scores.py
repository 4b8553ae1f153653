"""Score normalization against the D4RL references."""

from __future__ import annotations

import numpy as np

from frozen_dt.envs.registry import Task


def normalized_score(task: Task, returns):
    """D4RL-normalized score, ``100 * (R - REF_MIN) / (REF_MAX - REF_MIN)``; works on scalars and arrays."""
    if task.ref_min is None or task.ref_max is None:
        raise ValueError(f"task {task.name} has no D4RL reference scores (its score type is {task.score_type})")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - task.ref_min) / (task.ref_max - task.ref_min)
