"""Sweeps: grids of tasks x algorithms x settings x seeds, run as resumable jobs on a local pool (or Ray)."""
