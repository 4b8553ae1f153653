"""Evaluation: rollouts, normalized scores, statistics, leaderboard (installed as ``frozen_dt.eval``)."""
