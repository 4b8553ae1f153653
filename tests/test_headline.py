"""``bench/headline.py``: the headline's chunks across device leases, on CPU with the tiny protocol and the DT arm.
A chunk cut by its deadline leaves a resumable pack; the next chunk resumes from the unpacked pack to what an
uninterrupted run gives (metrics and evaluation episodes); a chunk whose dataset has other bits says so."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import h5py
import pytest

from test_cli import write_d4rl_hdf5

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "headline.py"


def driver():
    spec = importlib.util.spec_from_file_location("headline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def chunk(state: Path, out: Path, data: Path, seconds: float, capsys, monkeypatch) -> str:
    """One chunk of the DT arm (tiny protocol) with ``seconds`` to its deadline (its training and evaluation in
    subprocesses, as on the device), then its pack unpacked into ``state``, as a returned pack is; the output."""
    shutil.rmtree(out, ignore_errors=True)
    for name, value in (("FROZEN_DT_DATA", str(data)), ("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1")):
        monkeypatch.setenv(name, value)  # for the training and evaluation subprocesses
    for argv in (["run", "--state", str(state), "--out", str(out), "--deadline-at", str(time.time() + seconds),
                  "--device", "cpu", "--arms", "dt", "--scale", "tiny"], ["unpack", str(out), "--state", str(state)]):
        monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
        code = driver().main()
        assert code == 0, capsys.readouterr()
    return capsys.readouterr().out


def rows(member: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "steps_per_s"}
            for line in (member / "metrics.jsonl").read_text().splitlines()]


def chunks(arm: Path) -> list[dict]:
    return [json.loads(line) for line in (arm / "chunks.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("one_torch_thread")
def test_chunks_across_leases_resume_exactly_and_a_changed_dataset_is_reported(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    write_d4rl_hdf5(data / "walker2d-medium-v2.hdf5", obs_dim=17, act_dim=6)
    whole, split, other = tmp_path / "whole", tmp_path / "split", tmp_path / "other"

    chunk(whole, tmp_path / "out", data, 600, capsys, monkeypatch)  # one chunk: 6 steps, then the evaluation
    assert [c["to_step"] for c in chunks(whole / "dt")] == [[6]]

    out = chunk(split, tmp_path / "out", data, 0, capsys, monkeypatch)  # past the deadline: to the first checkpoint
    assert "dt: steps [0] -> [2]" in out, out
    members = [split / "dt" / f"seed{s}" for s in (0, 1, 2)]
    assert all((m / "checkpoints" / "last.pt").is_file() and not (m / "eval-last.json").exists() for m in members)
    shutil.copytree(split, other)

    out = chunk(split, tmp_path / "out", data, 600, capsys, monkeypatch)  # resumed from the unpacked pack
    assert "dt: steps [2] -> [6]" in out and "DATASET CHANGED" not in out, out
    assert [(c["from_step"], c["to_step"], c["data_changed"]) for c in chunks(split / "dt")] == \
        [([0], [2], False), ([2], [6], False)]
    for seed in (0, 1, 2):
        a, b = whole / "dt" / f"seed{seed}", split / "dt" / f"seed{seed}"
        assert rows(a) == rows(b)
        evaluation = [json.loads((m / "eval-last.json").read_text())["targets"] for m in (a, b)]
        assert evaluation[0] == evaluation[1] and evaluation[0]["5000"]["episodes"]
        assert not (b / "checkpoints").exists()  # evaluated at the last step: no checkpoint travels any more

    with h5py.File(data / "walker2d-medium-v2.hdf5", "r+") as f:  # other bits (the observations unchanged)
        f["rewards"][0] += 1.0
    out = chunk(other, tmp_path / "out", data, 0, capsys, monkeypatch)
    assert "THE DATASET CHANGED" in out and "dt: steps [2] -> [4]" in out, out
    assert [c["data_changed"] for c in chunks(other / "dt")] == [False, True]


@pytest.mark.slow
def test_the_rehearsal_runs_every_arm_across_two_chunks_to_the_leaderboard(tmp_path):
    """``bash bench/headline.sh --rehearse``: the device-like environment (bench/device_rehearse.sh), the tiny
    protocol with the carried 0:5 slice, chunk 1 cut at its first checkpoints, chunk 2 resumed from the unpacked pack
    to the end and evaluated, the leaderboard written. Online (PyPI) the first time; minutes on CPU."""
    import os
    import subprocess

    state, out = tmp_path / "state", tmp_path / "out"
    done = subprocess.run(["bash", "bench/headline.sh", "--rehearse"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "STATE": str(state), "OUT": str(out)}, timeout=3600)
    assert done.returncode == 0 and "rehearsal done" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert (state / "leaderboard.csv").is_file() and (state / "results.md").is_file()
    assert "| vs dt (difference, Welch 95 % t-interval, p, n) |" in (state / "results.md").read_text()
    for arm in ("pretrained", "random", "dt"):
        assert [(c["from_step"], c["to_step"]) for c in chunks(state / arm)] == [([0], [2]), ([2], [6])]


def test_the_evaluation_reserve_is_kept_only_when_the_chunk_may_finish_the_arm():
    headline = driver()
    full = headline.PROTOCOLS["full"]

    def chunk_at(rate_steps, seconds=200.0):
        return [{"from_step": [0], "to_step": [rate_steps], "seconds": seconds}]

    assert headline.eval_reserve([], {"steps": [0]}, full, 300) == 150  # no rate yet: keep it
    assert headline.eval_reserve(chunk_at(20_000), {"steps": [20_000]}, full, 300) == 0  # 800 s to go: train on
    assert headline.eval_reserve(chunk_at(90_000), {"steps": [90_000]}, full, 300) == 150  # 22 s to go: keep it
    assert headline.eval_reserve(chunk_at(20_000), {"steps": [80_000]}, full, 300) == 0  # 200 s: 150 more won't fit


@pytest.mark.parametrize("entry", ["../evil.txt", "/abs/evil.txt", "other/evil.txt", "dt/link"])
def test_unpack_refuses_an_archive_with_anything_but_files_inside_the_arms(entry, tmp_path, monkeypatch, capsys):
    import io
    import tarfile

    headline = driver()
    state, packs = tmp_path / "state", tmp_path / "packs"
    headline.write_protocol(state, "tiny")
    packs.mkdir()
    with tarfile.open(packs / "headline-dt.tgz", "w:gz") as tar:
        info = tarfile.TarInfo(entry)
        if entry.endswith("link"):
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "unpack", str(packs), "--state", str(state)])
    with pytest.raises(SystemExit) as stopped:
        headline.main()
    assert "unexpected entry" in str(stopped.value) and entry[:20] in str(stopped.value)
    assert sorted(p.name for p in state.iterdir()) == ["headline.json"]  # nothing unpacked, no staging left
    assert not (tmp_path / "evil.txt").exists()
