"""bench/parity/recipe_swap.py's arms change exactly what they name, only while their block runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from frozen_dt.training.trainer import load_checkpoint
from test_cli import run, write_d4rl_hdf5

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("recipe_swap", HERE.parent / "bench" / "parity" / "recipe_swap.py")
recipe_swap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe_swap)

FLAGS = ("--steps", "1", "--eval-episodes", "0", "--batch-size", "8", "--save-every", "1")


def _train(capsys, tmp_path, name, algo, *flags):
    dataset = write_d4rl_hdf5(tmp_path / "hopper.hdf5")
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", algo, "--dataset", str(dataset),
                       "--run-dir", str(tmp_path / name), *FLAGS, *flags)
    assert code == 0, err
    return load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")


def test_timestep_init_arm_draws_dts_timestep_table_from_n_0_002(capsys, tmp_path):
    small = ("--embed-dim", "16", "--context", "4", "--warmup-steps", "1", "--lr", "1e-6")
    with recipe_swap.patched("dt", {"timestep-init"}):
        swapped = _train(capsys, tmp_path, "swapped", "dt", *small)
    plain = _train(capsys, tmp_path, "plain", "dt", *small)  # after the block: kzl's N(0, 1) again
    assert swapped["algorithm"]["model"]["embed_timestep.weight"].std() == pytest.approx(0.02, rel=0.1)
    assert plain["algorithm"]["model"]["embed_timestep.weight"].std() == pytest.approx(1.0, rel=0.1)


def test_raw_obs_and_default_init_arms(capsys, tmp_path):
    small = ("--hidden-dim", "256", "--hidden-layers", "2", "--lr", "1e-9", "--actor-lr", "1e-9")
    with recipe_swap.patched("cql", {"raw-obs", "default-init"}):
        swapped = _train(capsys, tmp_path, "swapped", "cql", *small)
    plain = _train(capsys, tmp_path, "plain", "cql", *small)
    assert swapped["obs_stats"] is None and plain["obs_stats"] is not None  # raw observations: no stats to apply

    def last_layer_bound(state):  # the critics' and actor's output layers: CORL draws them from U(-3e-3, 3e-3)
        outputs = [k for k in state if k.endswith(".weight") and state[k].shape[0] <= 3]
        assert outputs
        return max(float(state[k].abs().max()) for k in outputs)

    assert last_layer_bound(plain["algorithm"]["model"]) <= 3e-3 + 1e-6
    assert last_layer_bound(swapped["algorithm"]["model"]) > 3e-2  # PyTorch's default: U(-1/16, 1/16) at width 256
