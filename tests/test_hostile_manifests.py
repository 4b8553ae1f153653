"""Hostile behaviour-policy manifests (envs/policies/<env>/manifest.json): a field that names a file stays inside
its env's folder, the resume state's commit is a full hash and git reads nothing from the manifest as an option,
every field has its type. Each case: one message, exit status 2, no traceback, nothing changed outside the folder."""

from __future__ import annotations

import json

import pytest

from frozen_dt.cli import main as cli_main
from frozen_dt.envs.behavior import main as behavior_main
from frozen_dt.envs.behavior import read_manifest, restore_resume_state
from frozen_dt.envs.generate import level_checkpoints
from frozen_dt.errors import FrozenDTError
from hostile import refused, snapshot

GOOD = {"file": "hopper-sac-seed0-step0000000.safetensors", "env_id": "Hopper-v5", "steps": 0, "seed": 0,
        "return_mean": 9.0, "return_std": 1.0, "normalized_return": 0.9, "length_mean": 17.0, "eval_episodes": 50,
        "eval_seed": 10_000}
STATE = {"commit": "0" * 40, "path": "envs/policies/hopper/resume/sac_model.zip", "sha256": "0" * 64}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A policy dir with one env, a victim file beside it, the working dir inside the tmp dir."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "victim").write_text("precious")
    policies = tmp_path / "policies"
    (policies / "hopper").mkdir(parents=True)
    (policies / "hopper" / GOOD["file"]).write_bytes(b"actor")
    return tmp_path, policies


def write(policies, manifest) -> None:
    (policies / "hopper" / "manifest.json").write_text(json.dumps(manifest) if isinstance(manifest, (dict, list))
                                                       else manifest)


def manifest_with(**changes) -> dict:
    return {"env": "hopper", "checkpoints": [{**GOOD, **changes.pop("checkpoint", {})}], "levels": {}, **changes}


CASES = {
    "file escaping the folder": (manifest_with(checkpoint={"file": "../../victim"}), "checkpoints[0].file"),
    "absolute file": (manifest_with(checkpoint={"file": "/etc/passwd"}), "checkpoints[0].file"),
    "file as an option": (manifest_with(checkpoint={"file": "-rf"}), "checkpoints[0].file"),
    "level naming a path": (manifest_with(levels={"medium": ["../victim"]}), "levels.medium"),
    "steps as a string": (manifest_with(checkpoint={"steps": "20"}), "checkpoints[0].steps"),
    "steps as a bool": (manifest_with(checkpoint={"steps": True}), "checkpoints[0].steps"),
    "NaN return": ('{"env": "hopper", "checkpoints": [%s]}' % json.dumps({**GOOD, "normalized_return": float("nan")}),
                   "checkpoints[0].normalized_return"),
    "missing steps": (manifest_with(checkpoint={"steps": None}) | {"checkpoints": [{"file": GOOD["file"]}]},
                      "checkpoints[0].steps: is missing"),
    "commit as an option": (manifest_with(resume_state={**STATE, "commit": "--output=../victim"}),
                            "resume_state.commit"),
    "short commit": (manifest_with(resume_state={**STATE, "commit": "abc123"}), "resume_state.commit"),
    "resume path escaping": (manifest_with(resume_state={**STATE, "path": "../../victim"}), "resume_state.path"),
    "resume path as an option": (manifest_with(resume_state={**STATE, "path": "--output=x"}), "resume_state.path"),
    "pruned file escaping": (manifest_with(pruned_checkpoints={"records": [{"steps": 5, "file": "../victim"}]}),
                             "pruned_checkpoints.records[0].file"),
    "not a mapping": ([1, 2, 3], "the top level"),
    "deeply nested": ('{"env": "hopper", "checkpoints": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "not JSON": ("{checkpoints: ", "not valid JSON"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_manifest_is_refused_naming_the_file_and_field(world, case):
    _, policies = world
    manifest, field = CASES[case]
    write(policies, manifest)
    with pytest.raises(FrozenDTError) as error:
        read_manifest("hopper", policies)
    assert "manifest.json" in str(error.value) and field in str(error.value)
    with pytest.raises(FrozenDTError):  # dataset generation reads the same manifest
        level_checkpoints("hopper", "medium", policies)


def test_train_behavior_deletes_nothing_outside_the_policy_folder(world, capsys):
    tmp, policies = world
    write(policies, manifest_with(checkpoint={"file": "../../victim"}))
    before = snapshot(tmp)
    refused(capsys, cli_main, ["data", "train-behavior", "hopper", "--policy-dir", str(policies), "--steps", "10"],
            "checkpoints[0].file")
    assert snapshot(tmp) == before and (tmp / "victim").read_text() == "precious"
    assert not (tmp / "runs").exists()  # refused before its work dir is made


def test_sync_writes_nothing_outside_the_policy_folder(world, capsys):
    tmp, policies = world
    source = tmp / "run"
    (source / "hopper").mkdir(parents=True)
    (source / "hopper" / "x.safetensors").write_bytes(b"hostile")
    (source / "hopper" / "manifest.json").write_text(json.dumps(
        {"env": "hopper", "checkpoints": [{**GOOD, "steps": 100_000, "file": "../../escaped"}]}))
    write(policies, manifest_with())
    before = snapshot(tmp)
    refused(capsys, behavior_main, ["sync", "hopper", "--from", str(source), "--policy-dir", str(policies)],
            "checkpoints[0].file")
    assert snapshot(tmp) == before and not (tmp / "escaped").exists()


def test_a_commit_read_as_a_git_option_writes_nothing(world):
    tmp, policies = world
    target = tmp / "written-by-git"
    write(policies, manifest_with(resume_state={**STATE, "commit": f"--output={target}"}))
    before = snapshot(tmp)
    with pytest.raises(FrozenDTError, match="resume_state.commit"):
        restore_resume_state("hopper", tmp / "work" / "sac_model.zip", policies)
    assert not target.exists()
    assert {k: v for k, v in snapshot(tmp).items()} == before


def test_an_unknown_commit_is_refused_by_git_cleanly(world):
    tmp, policies = world
    write(policies, manifest_with(resume_state=STATE))
    with pytest.raises(FrozenDTError, match="cannot restore hopper's resume state"):
        restore_resume_state("hopper", tmp / "work" / "sac_model.zip", policies)
    assert not (tmp / "work" / "sac_model.zip").exists()


def test_the_shipped_manifests_pass():
    for env in ("hopper", "walker2d", "halfcheetah"):
        assert read_manifest(env)["checkpoints"]
