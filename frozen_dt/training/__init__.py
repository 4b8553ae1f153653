"""The shared training loop (trainer, checkpoints, sinks), recipes, and the ``frozen-dt train`` command."""
