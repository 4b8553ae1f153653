"""Task registry and dataset generation (installed as ``frozen_dt.envs``)."""

from frozen_dt.envs.registry import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
