"""``frozen-dt data export TASK --format minari``: a small generated dataset written as a local Minari dataset
opens with ``minari.load_dataset``, its episodes equal ours step for step, and its metadata carries the env spec,
D4RL's reference scores, the generation record and our verify figures beside D4RL's."""

from __future__ import annotations

import numpy as np
import pytest

from frozen_dt.data.sources import load_any
from test_cli import assert_user_error, run, write_d4rl_hdf5

minari = pytest.importorskip("minari")


@pytest.fixture
def generated(data, capsys):
    code, _, err = run(capsys, "data", "generate", "hopper-medium-v2", "--episodes", "3", "--num-envs", "3")
    assert code == 0, err
    return load_any("hopper-medium-v2", task_name="hopper-medium-v2")[0]


def test_round_trip_through_minari_equals_our_episodes(generated, capsys):
    code, out, err = run(capsys, "data", "export", "hopper-medium-v2", "--format", "minari", "--name",
                         "frozen-dt/hopper/medium-test-v0")
    assert code == 0, err
    assert "frozen-dt/hopper/medium-test-v0" in out
    ds = minari.load_dataset("frozen-dt/hopper/medium-test-v0")
    assert ds.total_episodes == generated.n_episodes and ds.total_steps == generated.n_transitions
    for e, episode in enumerate(ds.iterate_episodes()):
        ours = generated.episode(e)
        s, n = int(generated.episode_starts[e]), int(generated.episode_lengths[e])
        np.testing.assert_array_equal(episode.observations[:-1], ours["observations"])
        np.testing.assert_array_equal(episode.observations[-1], generated.next_observations[s + n - 1])
        np.testing.assert_array_equal(episode.actions, ours["actions"])
        np.testing.assert_array_equal(np.asarray(episode.rewards, np.float32), ours["rewards"])
        assert bool(episode.terminations[-1]) == ours["terminated"] and not episode.terminations[:-1].any()
        assert bool(episode.truncations[-1]) != ours["terminated"]
    meta = ds.storage.metadata
    assert ds.spec.env_spec.id == "Hopper-v5"
    assert meta["ref_min_score"] == pytest.approx(-20.272305) and meta["ref_max_score"] == pytest.approx(3234.3)
    record = meta["frozen_dt"]
    assert record["source"]["kind"] == "generated" and record["source"]["generated"]["seed"] == 0
    assert record["verify"]["ours"]["episodes"] == 3 and record["verify"]["d4rl"]["transitions"] == 1_000_000
    back = load_any("minari:frozen-dt/hopper/medium-test-v0")[0]  # and our own Minari reader reads it back
    np.testing.assert_array_equal(back.observations, generated.observations)
    np.testing.assert_array_equal(back.episode_terminated, generated.episode_terminated)


def test_export_refuses_an_existing_id_and_data_without_final_states(generated, data, capsys):
    for expected in (0, 2):
        code, _, err = run(capsys, "data", "export", "hopper-medium-v2", "--name", "frozen-dt/hopper/twice-v0")
        assert code == expected, err
    assert_user_error(code, err, "exists already")
    write_d4rl_hdf5(data / "bare.hdf5")  # no next_observations
    code, _, err = run(capsys, "data", "export", "hopper-medium-v2", "--dataset", str(data / "bare.hdf5"),
                       "--name", "frozen-dt/hopper/bare-v0")
    assert_user_error(code, err, "no next observations")
