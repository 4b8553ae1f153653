"""Counting what a training step dispatches: its operations, and those that would make the host wait for a device.

On CPU nothing waits, so a step's host synchronisations are found by what it dispatches: :class:`DispatchCounter`
counts every aten operation of a block and those that synchronise on an accelerator (``.item()``, Python ``bool()``
of a tensor, ``nonzero``, boolean-mask indexing, ``equal``/``allclose``), except reads of ``exempt`` host tensors
(AdamW's step counters, host tensors on a GPU too). ``strict=True`` raises on the first one instead
(tests/test_sync_free.py). On cuda, ``torch.cuda.set_sync_debug_mode`` is the device's own check.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.is_nonzero.default, aten.equal.default,
           aten.masked_select.default, aten.allclose.default}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}


class HostSync(AssertionError):
    """A training step did something that makes the host wait for the device."""


class DispatchCounter(TorchDispatchMode):
    """Within the block: ``ops`` (aten operations dispatched) and ``syncs`` (those that would synchronise)."""

    def __init__(self, exempt: set[int] = frozenset(), strict: bool = False):
        super().__init__()
        self.exempt, self.strict = set(exempt), strict
        self.ops = self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if not (func is aten._local_scalar_dense.default and args[0].data_ptr() in self.exempt):
            if func in SYNCING:
                self.found(f"host synchronisation in a training step: {func}")
            elif func in INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1]):
                self.found(f"boolean-mask indexing in a training step: {func}")
        return func(*args, **kwargs)

    def found(self, what: str) -> None:
        self.syncs += 1
        if self.strict:
            raise HostSync(what)


def optimizer_step_counters(optimizers) -> set[int]:
    """Data pointers of the optimizers' ``step`` state tensors (host tensors unless capturable)."""
    return {state["step"].data_ptr() for o in optimizers for state in o.state.values() if "step" in state}
