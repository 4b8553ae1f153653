"""frozen-dt: Decision Transformers on a frozen slice of a text-pretrained language model.

The Python API (:mod:`frozen_dt.api`): ``train``, ``load_policy``, ``evaluate``, ``leaderboard``, ``load_dataset``,
and the dataset views ``TransitionView``, ``SequenceView``, ``GoalView``. They are imported on first use, so that
``import frozen_dt`` stays light.
"""

__version__ = "0.1.0"

_API = {"train": "frozen_dt.api", "load_policy": "frozen_dt.api", "evaluate": "frozen_dt.api",
        "leaderboard": "frozen_dt.api", "load_dataset": "frozen_dt.api", "Policy": "frozen_dt.api",
        "TrainedRun": "frozen_dt.api", "FrozenDTError": "frozen_dt.errors",
        "TransitionView": "frozen_dt.data.views", "SequenceView": "frozen_dt.data.views",
        "GoalView": "frozen_dt.data.views"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'frozen_dt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
