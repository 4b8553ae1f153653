"""What an artifact records about its source: the commit of the checkout named, not of wherever Python runs."""

import subprocess

from frozen_dt.provenance import git_commit


def _repo(path):
    run = lambda *a: subprocess.run(["git", *a], cwd=path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (path / "f.txt").write_text("one\n")
    run("add", "f.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True).stdout.strip()


def test_commit_of_the_named_checkout_and_whether_it_is_dirty(tmp_path):
    sha = _repo(tmp_path)
    (tmp_path / "sub").mkdir()
    assert git_commit(tmp_path / "sub") == {"sha": sha, "dirty": False}
    (tmp_path / "f.txt").write_text("two\n")
    assert git_commit(tmp_path) == {"sha": sha, "dirty": True}


def test_outside_a_git_tree_the_commit_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) == {"sha": "unknown", "dirty": None}
