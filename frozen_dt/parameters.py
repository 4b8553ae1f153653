"""Trainable versus frozen parameters: the one parameter counter, trainable-only state dicts, the frozen fingerprint.

A model lists in ``frozen_modules`` the submodules whose tensors checkpoints leave out (the frozen LM slice); of
those, only parameters that train (``--freeze ln``/``none``) are kept. The frozen weights are reloaded from their
package, and :func:`frozen_fingerprint` checks on resume and evaluation that they are the ones the run trained
with.
"""

from __future__ import annotations

from torch import nn


def param_counts(model: nn.Module) -> dict:
    """``trainable_params`` and ``frozen_params`` of ``model`` (shared parameters counted once)."""
    params = list(model.parameters())
    return {"trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "frozen_params": sum(p.numel() for p in params if not p.requires_grad)}


def _in_frozen_module(model: nn.Module, name: str) -> bool:
    return any(name.startswith(prefix + ".") for prefix in getattr(model, "frozen_modules", ()))


def trainable_state_dict(model: nn.Module) -> dict:
    """``model.state_dict()`` without the frozen modules' tensors (their trainable parameters stay)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: tensor for name, tensor in model.state_dict().items()
            if name in trainable or not _in_frozen_module(model, name)}


def load_trainable_state_dict(model: nn.Module, state: dict) -> None:
    """Load a :func:`trainable_state_dict`; every key the model expects outside the frozen modules must be there."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    missing = [k for k in missing if k in trainable or not _in_frozen_module(model, k)]
    if missing or unexpected:
        raise KeyError(f"checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def frozen_fingerprint(model: nn.Module) -> list[float]:
    """(sum, sum of squares) over the frozen parameters in float64: a cheap check that a run resumes on the same
    frozen weights, which its checkpoints do not hold."""
    frozen = [p.detach().double() for p in model.parameters() if not p.requires_grad]
    return [float(sum(p.sum() for p in frozen)), float(sum((p * p).sum() for p in frozen))]


def check_frozen_fingerprint(params: dict, model: nn.Module, run_dir) -> None:
    """The frozen weights ``model`` was built with must be the ones the run in ``run_dir`` trained with (its
    ``params.json``, given as ``params``); a clear error otherwise (resume and evaluation both check)."""
    saved, now = params.get("frozen_fingerprint", []), frozen_fingerprint(model)
    if len(saved) != len(now) or any(abs(a - b) > 1e-9 * max(abs(a), abs(b)) for a, b in zip(saved, now)):
        from frozen_dt.errors import FrozenDTError

        raise FrozenDTError(f"{run_dir}: the frozen backbone weights differ from the ones the run was trained with "
                            "(another package version or cache?)")
