"""A whole training step captured once as a CUDA graph and replayed (``frozen-dt train --cuda-graph``).

A step of a sequence model on the device is hundreds of small kernels (a frozen 0:5 slice at batch 64 is ~60
tokens a window); launched one by one from Python, the GPU waits on the host. :class:`GraphedStep` takes a step
function of static device tensors only - ``step(indices) -> (loss, grad_norm)``: the device sampler's gather, the
forward, the loss, the backward, gradient clipping and a fused, capturable AdamW whose learning rate is a device
tensor (the schedule fills it between steps) - runs it eagerly for a few warm-up steps on a side stream (AdamW's
state, the gradients and a frozen slice's bf16 weights come into being there), captures one more call as a graph and
replays it from then on. Only the batch indices are drawn outside the graph (from the sampler's own generator, into
a static tensor): a graph replays its own random offsets for the default generator (dropout) but a sampler's
generator would need registering with it.

Each call is one training step, warm-up and capture included. On CPU (and whenever ``enabled`` is false) the same
step function simply runs eagerly: what a replay computes is what the eager call computes, and
tests/test_graphed_step.py checks that the step function computes what the ordinary update does.
"""

from __future__ import annotations

import torch

WARMUP_STEPS = 3  # eager steps on a side stream before the capture (cuda's recommendation: a few)


class GraphedStep:
    """``step(indices) -> (loss, grad_norm)`` (device tensors) called on fresh ``draw(out=indices)`` each time,
    through a CUDA graph when ``enabled`` (see the module doc)."""

    def __init__(self, step, draw, batch_size: int, device: torch.device, enabled: bool):
        self.step, self.draw, self.device = step, draw, torch.device(device)
        self.enabled = enabled and self.device.type == "cuda"
        self.indices = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.calls = 0
        self.graph = self.outputs = None
        self.stream = None

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.draw(out=self.indices)
        self.calls += 1
        if not self.enabled:
            return self.step(self.indices)
        if self.graph is not None:
            self.graph.replay()
            return tuple(o.clone() for o in self.outputs)
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            if self.calls <= WARMUP_STEPS:
                outputs = self.step(self.indices)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        if self.calls <= WARMUP_STEPS:
            return outputs
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self.step(self.indices)
        self.graph.replay()  # the capture ran nothing: this is the step
        return tuple(o.clone() for o in self.outputs)
