"""Bringing a --policy-dir run into the shipped policy dir (envs.behavior.sync_checkpoints): which checkpoint files
are kept, which records are pruned, and that the levels are chosen over all of them."""

import json

import pytest

from frozen_dt.envs.behavior import main, read_manifest, resume_path, sync_checkpoints
from frozen_dt.errors import FrozenDTError


def _record(steps, normalized):
    return {"file": f"hopper-sac-seed0-step{steps:07d}.safetensors", "env_id": "Hopper-v5", "steps": steps,
            "seed": 0, "return_mean": 30.0 * normalized, "return_std": 1.0, "normalized_return": normalized,
            "length_mean": 1000.0, "eval_episodes": 50, "eval_seed": 10_000 + steps}


def _policy_dir(path, records):
    (path / "hopper").mkdir(parents=True)
    for r in records:
        (path / "hopper" / r["file"]).write_bytes(f"actor at {r['steps']}".encode())
    (path / "hopper" / "manifest.json").write_text(json.dumps({"env": "hopper", "checkpoints": records,
                                                               "levels": {}, "training_seconds": 12.5}))


@pytest.fixture
def dirs(tmp_path):
    """Shipped: 0 and 25k. The run (its own policy dir) went on: 75k is medium-like, 175k expert-like."""
    shipped, run = tmp_path / "shipped", tmp_path / "run"
    early = [_record(0, 0.5), _record(25_000, 5.0)]
    _policy_dir(shipped, early)
    _policy_dir(run, early + [_record(50_000, 20.0), _record(75_000, 44.0), _record(125_000, 70.0),
                              _record(150_000, 90.0), _record(175_000, 108.0)])
    return shipped, run


def test_keeps_multiples_and_what_levels_name_and_prunes_the_rest(dirs):
    shipped, run = dirs
    done = sync_checkpoints("hopper", run, shipped, keep_every=50_000)
    manifest = read_manifest("hopper", shipped)
    assert manifest["levels"]["medium"].endswith("0075000.safetensors")  # not a 50k multiple, kept as a level
    assert manifest["levels"]["expert"].endswith("0175000.safetensors")
    assert done["copied"] == [50_000, 75_000, 150_000, 175_000]
    assert done["pruned"] == [125_000]
    assert [c["steps"] for c in manifest["checkpoints"]] == [0, 25_000, 50_000, 75_000, 150_000, 175_000]
    pruned = manifest["pruned_checkpoints"]["records"]
    assert [r["steps"] for r in pruned] == [125_000] and "file" not in pruned[0]
    assert pruned[0]["normalized_return"] == 70.0  # the evaluation stays on record
    assert not (shipped / "hopper" / "hopper-sac-seed0-step0125000.safetensors").exists()
    for c in manifest["checkpoints"]:  # every kept record has its file, byte for byte
        assert (shipped / "hopper" / c["file"]).read_bytes() == (run / "hopper" / c["file"]).read_bytes()
    assert manifest["training_seconds"] == 12.5
    assert not list((shipped / "hopper").glob(".*tmp*"))


def test_a_second_sync_changes_nothing(dirs):
    shipped, run = dirs
    sync_checkpoints("hopper", run, shipped)
    first = read_manifest("hopper", shipped)
    done = sync_checkpoints("hopper", run, shipped)
    assert done["copied"] == [] and done["pruned"] == []
    assert read_manifest("hopper", shipped) == first


def test_levels_are_chosen_over_shipped_and_new_checkpoints(tmp_path):
    """The shipped 25k is the best medium; the run's new checkpoints are all further from the target."""
    shipped, run = tmp_path / "shipped", tmp_path / "run"
    _policy_dir(shipped, [_record(0, 0.5), _record(25_000, 44.3)])
    _policy_dir(run, [_record(75_000, 30.0), _record(100_000, 60.0)])
    sync_checkpoints("hopper", run, shipped)
    assert read_manifest("hopper", shipped)["levels"]["medium"].endswith("0025000.safetensors")


def test_a_level_naming_a_file_no_longer_kept_is_refused(dirs):
    shipped, run = dirs
    (shipped / "hopper" / "hopper-sac-seed0-step0025000.safetensors").unlink()  # pruned by hand before
    manifest = json.loads((run / "hopper" / "manifest.json").read_text())
    before = (shipped / "hopper" / "manifest.json").read_text()
    with pytest.raises(FrozenDTError, match="not kept"):
        sync_checkpoints("hopper", run, shipped)
    assert (shipped / "hopper" / "manifest.json").read_text() == before  # the manifest is left as it was
    assert sorted(p.name for p in (shipped / "hopper").iterdir()) == ["hopper-sac-seed0-step0000000.safetensors",
                                                                      "manifest.json"]  # and nothing copied
    assert manifest["checkpoints"]


def test_model_goes_to_the_resume_path(dirs, tmp_path):
    shipped, run = dirs
    model = tmp_path / "sac_model.zip"
    model.write_bytes(b"sb3 state")
    sync_checkpoints("hopper", run, shipped, model=model)
    assert resume_path("hopper", shipped).read_bytes() == b"sb3 state"


def test_command_line_reports_level_changes_and_bad_input_exits_2(dirs, tmp_path, capsys):
    shipped, run = dirs
    assert main(["sync", "hopper", "--from", str(run), "--policy-dir", str(shipped), "--keep-every", "50000"]) == 0
    out = capsys.readouterr().out
    assert "copied 4 checkpoints" in out and "pruned 1" in out
    assert "expert: CHANGED (regenerate its data): None -> hopper-sac-seed0-step0175000.safetensors" in out
    assert main(["sync", "hopper", "--from", str(tmp_path / "nowhere"), "--policy-dir", str(shipped)]) == 2
    assert "error: no " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["sync", "atlantis", "--from", str(run)])
    assert exit_.value.code == 2


def test_prune_held_applies_the_rule_to_kept_checkpoints_and_keeps_what_levels_name(dirs):
    shipped, run = dirs
    sync_checkpoints("hopper", run, shipped, keep_every=50_000)
    before = {c["steps"] for c in read_manifest("hopper", shipped)["checkpoints"]}
    done = sync_checkpoints("hopper", run, shipped, keep_every=100_000, prune_held=True)
    manifest = read_manifest("hopper", shipped)
    named = {f for files in manifest["levels"].values() for f in ([files] if isinstance(files, str) else files)}
    kept = {c["steps"] for c in manifest["checkpoints"]}
    assert before - kept == {150_000} and done["pruned"] == [150_000]  # 0, 25k, 50k: medium-replay; 75k, 175k levels
    assert all((shipped / "hopper" / f).is_file() for f in named)
    assert not (shipped / "hopper" / "hopper-sac-seed0-step0150000.safetensors").exists()
    record = [r for r in manifest["pruned_checkpoints"]["records"] if r["steps"] == 150_000][0]
    assert record["file_in_git_history"] and record["normalized_return"] == 90.0
    assert sync_checkpoints("hopper", run, shipped)["copied"] == []  # a later plain sync does not bring it back
