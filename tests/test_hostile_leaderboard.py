"""Hostile evaluation records and run files under ``frozen-dt leaderboard``: every file is validated, a bad run is
left out and listed (exit status 1, the good runs' leaderboard still written), only finite numbers count, a cell a
spreadsheet would run as a formula is neutralised, a run reached by two paths or a seed copied twice counts once.
Nothing is written outside the leaderboard's folder."""

from __future__ import annotations

import csv
import json
import math

import pytest

from frozen_dt.cli import main
from frozen_dt.eval.leaderboard import safe_cell
from hostile import refused, snapshot


def fake_run(path, *, seed=0, scores=(10.0, 20.0, 30.0), **record):
    """A run dir as `frozen-dt train` + `eval` leave it (a bc run: no backbone), with its records only."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"args": {"algo": "bc", "task": "hopper-medium-v2", "seed": seed,
                                                           "steps": 4}}))
    (path / "params.json").write_text(json.dumps({"trainable_params": 100}))
    (path / "dataset.json").write_text(json.dumps({"source": {"kind": "file"}}))
    (path / "versions.json").write_text(json.dumps({"git": {"sha": "abc"}}))
    evaluation = {"task": "hopper-medium-v2", "checkpoint_step": 4, "primary_target": "1800", "episodes": len(scores),
                  "targets": {"1800": {"episodes": [{"score": s} for s in scores]}}, "device": "cpu",
                  "created_at": "2026-01-01T00:00:00", **record}
    (path / "eval-last.json").write_text(json.dumps(evaluation) if isinstance(evaluation, dict) else evaluation)
    return path


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return [fake_run(tmp_path / "runs" / f"bc-{seed}", seed=seed) for seed in (0, 1)]


def leaderboard(capsys, tmp_path, *patterns):
    code = main(["leaderboard", *patterns, "--out", str(tmp_path / "lb" / "lb.csv")])
    out = capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "lb" / "lb.csv"))) if (tmp_path / "lb" / "lb.csv").exists() else []
    return code, out, rows


def corrupt(run_dir, name, change):
    path = run_dir / name
    value = json.loads(path.read_text())
    path.write_text(change if isinstance(change, str) else json.dumps(change(value)))


CASES = {
    "infinite score": ("eval-last.json", '{"task": "hopper-medium-v2", "checkpoint_step": 4, "primary_target": "1800",'
                       ' "targets": {"1800": {"episodes": [{"score": Infinity}]}}}', "episodes[0].score"),
    "NaN score": ("eval-last.json", lambda r: {**r, "targets": {"1800": {"episodes": [{"score": math.nan}]}}},
                  "must be a finite number"),
    "string score": ("eval-last.json", lambda r: {**r, "targets": {"1800": {"episodes": [{"score": "12"}]}}},
                     "episodes[0].score: must be a number, got '12'"),
    "missing key": ("eval-last.json", lambda r: {k: v for k, v in r.items() if k != "checkpoint_step"},
                    "checkpoint_step: is missing"),
    "wrong type": ("eval-last.json", lambda r: {**r, "targets": []}, "targets: must be a mapping"),
    "primary target absent": ("eval-last.json", lambda r: {**r, "primary_target": "9"}, "is not among its targets"),
    "no episodes": ("eval-last.json", lambda r: {**r, "targets": {"1800": {"episodes": []}}}, "episodes is empty"),
    "deeply nested": ("eval-last.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "not JSON": ("eval-last.json", "{", "not valid JSON"),
    "params of the wrong type": ("params.json", lambda r: {"trainable_params": "many"}, "trainable_params"),
    "dataset source a list": ("dataset.json", lambda r: {"source": []}, "source: must be a mapping"),
    "config without args": ("config.json", lambda r: {}, "no 'args'"),
    "unknown algorithm": ("config.json", lambda r: {"args": {**r["args"], "algo": "=cmd"}}, "unknown algorithm"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_run_is_left_out_and_listed_and_the_rest_is_written(runs, tmp_path, capsys, case):
    name, change, expect = CASES[case]
    corrupt(runs[1], name, change)
    before = snapshot(tmp_path, skip=tmp_path / "lb")
    code, out, rows = leaderboard(capsys, tmp_path, "runs/*")
    assert code == 1 and "Traceback" not in out.err
    [line] = out.err.strip().splitlines()
    assert line.startswith(f"frozen-dt: left out: runs/bc-1: ") and expect in line, line
    assert [r["n_seeds"] for r in rows] == ["1"] and float(rows[0]["score_mean"]) == 20.0
    assert snapshot(tmp_path, skip=tmp_path / "lb") == before


def test_only_bad_runs_is_one_message_and_writes_nothing(runs, tmp_path, capsys):
    for run_dir in runs:
        corrupt(run_dir, "eval-last.json", lambda r: {**r, "checkpoint_step": -1})
    refused(capsys, main, ["leaderboard", "runs/*", "--out", str(tmp_path / "lb" / "lb.csv")], "checkpoint_step")
    assert not (tmp_path / "lb").exists()


def test_a_run_reached_by_two_paths_counts_once(runs, tmp_path, capsys):
    (tmp_path / "alias").symlink_to(tmp_path / "runs")
    code, out, rows = leaderboard(capsys, tmp_path, "runs/*", "./runs/bc-0", str(tmp_path / "alias" / "*"))
    assert code == 0, out.err
    assert [(r["n_seeds"], r["n_episodes"]) for r in rows] == [("2", "6")]


def test_a_copied_seed_counts_once_and_is_listed(runs, tmp_path, capsys):
    fake_run(tmp_path / "runs" / "bc-0-copy", seed=0, scores=(99.0, 99.0, 99.0))
    code, out, rows = leaderboard(capsys, tmp_path, "runs/*")
    assert code == 1 and "seed 0 of this configuration is already counted from runs/bc-0" in out.err
    assert [(r["n_seeds"], r["n_episodes"], r["score_mean"]) for r in rows] == [("2", "6", "20.0")]


def test_formula_cells_are_neutralised_in_csv_and_markdown(runs, tmp_path, capsys):
    for run_dir in runs:
        corrupt(run_dir, "eval-last.json", lambda r: {**r, "device": "=HYPERLINK(\"http://x\")|x"})
        corrupt(run_dir, "dataset.json", lambda r: {"source": {"kind": "@SUM(A1)"}})
    code, out, rows = leaderboard(capsys, tmp_path, "runs/*")
    assert code == 0, out.err
    assert rows[0]["device"].startswith("'=") and rows[0]["dataset_source"] == "'@SUM(A1)"
    markdown = (tmp_path / "lb" / "lb.md").read_text()
    assert "| '@SUM(A1) |" in markdown and "|x" not in markdown.replace("\\|x", "")
    cells = ("+1", "-x", "\tx", "ok", -1.5, "a\nb", "-")
    assert [safe_cell(v) for v in cells] == ["'+1", "'-x", "'\tx", "ok", -1.5, "a b", "-"]
