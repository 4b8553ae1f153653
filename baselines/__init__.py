"""Baseline algorithms on the shared data views and trainer (installed as ``frozen_dt.baselines``)."""
