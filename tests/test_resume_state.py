"""SAC resume state kept in git history, out of the working tree (envs.behavior.archive/restore_resume_state)."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from frozen_dt.envs.behavior import archive_resume_state, resume_path, restore_resume_state
from frozen_dt.errors import FrozenDTError

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo, *argv):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A checkout whose policy dir holds one env's manifest and committed resume zip."""
    root = tmp_path / "repo" / "envs" / "policies"
    (root / "toy" / "resume").mkdir(parents=True)
    checkpoint = {"file": "toy-30000.safetensors", "steps": 30_000}
    (root / "toy" / "manifest.json").write_text(json.dumps({"env": "toy", "checkpoints": [checkpoint], "levels": {}}))
    payload = np.random.default_rng(0).bytes(4096)
    resume_path("toy", root).write_bytes(payload)
    git(tmp_path / "repo", "init", "-q")
    git(tmp_path / "repo", "add", "-A")
    git(tmp_path / "repo", "commit", "-qm", "resume state")
    return root, payload


def test_archived_state_leaves_the_tree_and_is_restored_byte_for_byte_from_history(repo, tmp_path):
    root, payload = repo
    record = archive_resume_state("toy", root)
    assert not resume_path("toy", root).exists()  # it no longer travels with the working tree
    manifest = json.loads((root / "toy" / "manifest.json").read_text())
    assert manifest["resume_state"] == record and record["steps"] == 30_000
    assert record["path"] == "envs/policies/toy/resume/sac_model.zip" and len(record["commit"]) == 40
    git(root.parents[1], "commit", "-qam", "archive")  # a later commit: the state is found by the recorded one
    target = restore_resume_state("toy", tmp_path / "work" / "sac_model.zip", root)
    assert target.read_bytes() == payload


def test_a_policy_dir_copied_out_of_the_checkout_restores_from_the_packages_history(repo, tmp_path, monkeypatch):
    """`train-behavior --policy-dir COPY --resume`: the copy is in no git checkout; the package's own is asked."""
    import frozen_dt.envs.behavior as behavior

    root, payload = repo
    archive_resume_state("toy", root)
    copy = tmp_path / "elsewhere" / "policies"
    shutil.copytree(root, copy)
    monkeypatch.setattr(behavior, "POLICY_DIR", root)  # the package's policies, inside its checkout
    assert restore_resume_state("toy", tmp_path / "w.zip", copy).read_bytes() == payload
    monkeypatch.setattr(behavior, "POLICY_DIR", copy)  # neither is a checkout: the error says so
    with pytest.raises(FrozenDTError, match="not a git repository"):
        restore_resume_state("toy", tmp_path / "v.zip", copy)


def test_a_state_in_the_tree_is_used_as_it_is(repo, tmp_path):
    root, payload = repo
    assert restore_resume_state("toy", tmp_path / "w.zip", root).read_bytes() == payload


def test_a_wrong_checksum_or_no_record_is_a_clear_error_and_writes_nothing(repo, tmp_path):
    root, _ = repo
    archive_resume_state("toy", root)
    manifest_file = root / "toy" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["resume_state"]["sha256"] = "0" * 64
    manifest_file.write_text(json.dumps(manifest))
    target = tmp_path / "w.zip"
    with pytest.raises(FrozenDTError, match="SHA-256"):
        restore_resume_state("toy", target, root)
    assert not target.exists()
    del manifest["resume_state"]
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(FrozenDTError, match="nothing to resume"):
        restore_resume_state("toy", target, root)


def test_an_uncommitted_state_is_not_archived(repo):
    root, _ = repo
    resume_path("toy", root).write_bytes(b"changed since the commit")
    with pytest.raises(FrozenDTError, match="not committed"):
        archive_resume_state("toy", root)
    assert resume_path("toy", root).exists()


def test_the_archived_steps_are_the_models_own(tmp_path):
    """A run stopped after its last kept checkpoint: the state's steps come from the SB3 zip, not the checkpoints."""
    import zipfile

    repo = tmp_path / "repo"
    root = repo / "envs" / "policies"
    (root / "toy" / "resume").mkdir(parents=True)
    (root / "toy" / "manifest.json").write_text(json.dumps({
        "env": "toy", "checkpoints": [{"file": "toy-30000.safetensors",
                                                                               "steps": 30_000}], "levels": {},
        "pruned_checkpoints": {"records": [{"steps": 40_000}]}}))
    with zipfile.ZipFile(resume_path("toy", root), "w") as saved:
        saved.writestr("data", json.dumps({"num_timesteps": 45_000}))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "resume state")
    assert archive_resume_state("toy", root)["steps"] == 45_000


def test_without_a_readable_zip_the_steps_are_the_last_evaluated_checkpoints(repo):
    root, _ = repo
    manifest_file = root / "toy" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["pruned_checkpoints"] = {"records": [{"steps": 40_000}]}
    manifest_file.write_text(json.dumps(manifest))
    git(root.parents[1], "commit", "-qam", "a pruned record")
    assert archive_resume_state("toy", root)["steps"] == 40_000
