"""experiments/parity/recipe_swap.py's arms change exactly what they name, only while their block runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from frozen_dt.training.trainer import load_checkpoint
from test_cli import run, write_d4rl_hdf5

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("recipe_swap", HERE.parent / "experiments" / "parity" / "recipe_swap.py")
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


def test_log_std_head_arm_is_a_plain_clamped_linear_head_through_training(capsys, tmp_path):
    small = ("--hidden-dim", "32", "--hidden-layers", "2", "--actor-lr", "1e-2")
    with recipe_swap.patched("cql", {"log-std-head"}):
        swapped = _train(capsys, tmp_path, "swapped", "cql", *small)["algorithm"]["model"]
    plain = _train(capsys, tmp_path, "plain", "cql", *small)["algorithm"]["model"]
    assert float(swapped["actor.log_std_scale"]) == 1.0 and float(swapped["actor.log_std_offset"]) == 0.0
    assert float(plain["actor.log_std_offset"]) != -1.0  # CORL's offset starts at -1 and learns


def test_mean_backup_arm_backs_up_the_actors_squashed_mean_at_the_next_state():
    import numpy as np
    import torch

    from test_semantics import action_reward_dataset, value_algorithm

    dataset = action_reward_dataset(n=200)

    def td_losses(parts):  # (the update's TD loss, the TD loss of a backup at tanh(mean(s'))) before the step
        algo = value_algorithm("cql", dataset, hidden_dim=16, hidden_layers=1, batch_size=32, discount=0.99)
        batch = algo.sample_batch(np.random.default_rng(0))
        t = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in batch.items()}
        with torch.no_grad():
            next_actions = algo.model.actor(t["next_observations"])
            next_q = torch.min(*(q(t["next_observations"], next_actions) for q in algo.target_q))
            backup = t["rewards"] * algo.reward_scale + algo.discount * (1.0 - t["dones"]) * next_q
            expected = sum(((q(t["observations"], t["actions"]) - backup) ** 2).mean()
                           for q in (algo.model.q1, algo.model.q2)) / 2
        with recipe_swap.patched("cql", parts):
            return algo.update(batch)["td_loss"], float(expected)

    swapped, expected = td_losses({"mean-backup"})
    assert swapped == pytest.approx(expected, rel=1e-5)
    plain, expected = td_losses(set())  # CORL's sampled backup action, and so the patch is undone after its block
    assert plain != pytest.approx(expected, rel=1e-3)


def test_std_sigmoid_arm_is_d3rlpys_sigmoid_log_std_through_training():
    """IQL's state-independent log-std in the arm: -5 + 7 sigmoid(p), p stored and trained from 0 (log-std -1.5 at
    init; one Adam step of lr 1e-2 moves p by 1e-2); after the block the plain CORL parameter (log-std 0) again."""
    import numpy as np
    import torch

    from test_semantics import action_reward_dataset, value_algorithm

    dataset = action_reward_dataset(n=200)
    with recipe_swap.patched("iql", {"std-sigmoid"}):
        swapped = value_algorithm("iql", dataset, hidden_dim=16, hidden_layers=1, batch_size=32, lr=1e-2)
    assert torch.equal(swapped.model.actor.log_std.detach(), torch.full((2,), -1.5))
    swapped.update(swapped.sample_batch(np.random.default_rng(0)))
    p = swapped.model.actor.parametrizations.log_std.original.detach()
    torch.testing.assert_close(p.abs(), torch.full((2,), 1e-2), rtol=1e-4, atol=0)
    torch.testing.assert_close(swapped.model.actor.log_std.detach(), -5.0 + 7.0 * torch.sigmoid(p))
    plain = value_algorithm("iql", dataset, hidden_dim=16, hidden_layers=1, batch_size=32, lr=1e-2)
    assert not hasattr(plain.model.actor, "parametrizations")
    assert torch.equal(plain.model.actor.log_std.detach(), torch.zeros(2))


def test_an_arm_is_compared_with_both_sides_of_the_parity_record_by_welchs_test(tmp_path):
    import json

    from scipy import stats

    record = tmp_path / "task-iql.json"
    record.write_text(json.dumps({"ours": {"per_seed": [50.0, 40.0, 45.0]}, "d3rlpy": {"per_seed": [20.0, 30.0]}}))
    rows = [{"score": 35.0}, {"score": 25.0}, {"score": 30.0}]
    got = recipe_swap.against_parity(record, rows)
    for side, other in (("ours", [50.0, 40.0, 45.0]), ("d3rlpy", [20.0, 30.0])):
        assert got[f"vs_{side}"]["n"] == [3, len(other)]
        assert got[f"vs_{side}"]["difference"] == pytest.approx(30.0 - sum(other) / len(other))
        assert got[f"vs_{side}"]["welch"]["p"] == pytest.approx(
            stats.ttest_ind([35.0, 25.0, 30.0], other, equal_var=False).pvalue)
    assert recipe_swap.against_parity(tmp_path / "absent.json", rows) == {}
