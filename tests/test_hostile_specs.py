"""Hostile sweep SPECs: no YAML anchors or aliases, a size cap, every value checked against its field at load (the
key named), run-dir names bounded, a cap on the number of runs, job commands in which no value reads as an option.
Each refusal: one message, exit status 2, no traceback, nothing written (the output root is not even made)."""

from __future__ import annotations

import json

import pytest

from frozen_dt.cli import main
from frozen_dt.sweeps.jobs import job_argvs
from frozen_dt.sweeps.spec import MAX_SPEC_BYTES, load_sweep
from hostile import refused, snapshot

BASE = {"task": "hopper-medium-v2", "algo": "bc", "steps": 6, "eval_episodes": 0}

LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"]
                   + [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
                      for p, c in zip("abcde", "bcdef")])


def spec_file(tmp_path, text_or_spec, name="s.json"):
    path = tmp_path / name
    text = text_or_spec if isinstance(text_or_spec, str) else json.dumps({"out": str(tmp_path / "out"),
                                                                           **text_or_spec})
    path.write_text(text)
    return path


YAML_CASES = {
    "nested aliases": (f"out: {{out}}\nbase: {{{{task: hopper-medium-v2}}}}\n{LAUGHS}\nname: *f\n",
                       "anchors and aliases"),
    "alias in a grid axis": ("out: {out}\nbase: &b {{task: hopper-medium-v2}}\ngrid: {{algo: *b}}\n",
                             "anchors and aliases"),
    "merge key": ("out: {out}\nx: &x {{steps: 5}}\nbase: {{<<: *x, task: hopper-medium-v2}}\n",
                  "anchors and aliases"),
}

JSON_CASES = {
    "steps as a string": ({"base": {**BASE, "steps": "20"}}, "base.steps: must be an integer, got '20'"),
    "steps as a float": ({"base": {**BASE, "steps": 20.5}}, "base.steps: must be an integer"),
    "steps as a bool": ({"base": {**BASE, "steps": True}}, "base.steps: must be an integer"),
    "steps null": ({"base": {**BASE, "steps": None}}, "base.steps: must be an integer, got None"),
    "task as a list": ({"base": {**BASE, "task": ["hopper-medium-v2"]}}, "base.task: must be a string"),
    "algo as a list": ({"base": {**BASE, "algo": ["bc", "iql"]}}, "base.algo: must be one of"),
    "unknown task": ({"base": {**BASE, "task": "../../etc"}}, "unknown task"),
    "grid value of the wrong type": ({"base": BASE, "grid": {"steps": [5, "six"]}}, "grid.steps[1]"),
    "lr infinite": ({"base": {**BASE, "lr": 1e999}}, "base.lr: must be a finite number"),
    "seed too large": ({"base": BASE, "seeds": [10**40]}, "seeds[0]: must be"),
    "seeds as strings": ({"base": BASE, "seeds": ["0"]}, "seeds[0]: must be"),
    "override of the wrong type": ({"base": BASE, "overrides": {"bc": {"hidden_dim": "big"}}},
                                   "overrides.bc.hidden_dim: must be an integer"),
    "eval episodes as a string": ({"base": BASE, "eval": {"episodes": "5"}}, "eval.episodes: must be an integer"),
    "grid eval of the wrong type": ({"base": BASE, "grid": [{"eval": {"num_envs": 0}}]}, "num_envs: must be"),
    "out not a string": ({"base": BASE, "out": 5}, "out: must be a string"),
    "data out a list": ({"base": BASE, "data": [{"task": "hopper-medium-v2", "out": ["x"]}]}, "'out' (strings)"),
    "too many runs": ({"base": BASE, "grid": {"hidden_dim": list(range(8, 18)), "batch_size": list(range(1, 11)),
                                              "lr": [0.1 * i for i in range(1, 11)], "seed": list(range(100))}},
                      "expands to 100000 runs, more than 1000"),
}


@pytest.mark.parametrize("case", YAML_CASES)
def test_yaml_anchors_and_aliases_are_refused(tmp_path, capsys, case):
    text, expect = YAML_CASES[case]
    spec = spec_file(tmp_path, text.format(out=tmp_path / "out"), "s.yaml")
    before = snapshot(tmp_path)
    refused(capsys, main, ["sweep", str(spec)], expect)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", JSON_CASES)
def test_a_bad_value_is_refused_at_load_naming_its_key(tmp_path, capsys, case):
    given, expect = JSON_CASES[case]
    spec = spec_file(tmp_path, given)
    before = snapshot(tmp_path)
    refused(capsys, main, ["sweep", str(spec)], expect)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, expect", [(" " * (MAX_SPEC_BYTES + 1), "over 256 KiB"),
                                          ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                          ("\udcff", "cannot read sweep file")])
def test_huge_deep_or_undecodable_files_are_refused(tmp_path, capsys, text, expect):
    spec = tmp_path / "s.json"
    spec.write_bytes(text.encode(errors="surrogateescape"))
    refused(capsys, main, ["sweep", str(spec)], expect)


def test_the_run_cap_is_a_flag(tmp_path, capsys):
    spec = spec_file(tmp_path, {"base": BASE, "grid": {"hidden_dim": [8, 16, 32]}, "seeds": [0, 1, 2, 3]})
    refused(capsys, main, ["sweep", str(spec), "--max-runs", "10", "--dry-run"], "expands to 12 runs, more than 10")
    assert main(["sweep", str(spec), "--max-runs", "12", "--dry-run"]) == 0
    assert "12 runs" in capsys.readouterr().out


def test_long_values_give_bounded_run_dir_names(tmp_path):
    long = [f"/data/{c * 400}.hdf5" for c in "ab"]
    sweep = load_sweep(spec_file(tmp_path, {"base": BASE, "grid": {"dataset": long}, "seeds": [2**62]}))
    names = [run.run_dir.parent.name for run in sweep.runs]
    assert len(set(names)) == 2 and all(len(part.encode()) < 120 for run in sweep.runs
                                        for part in run.run_dir.relative_to(tmp_path / "out").parts)


def test_no_value_reads_as_an_option_in_a_jobs_commands(tmp_path):
    hostile = "--resume=/somewhere/else"
    sweep = load_sweep(spec_file(tmp_path, {"base": {**BASE, "dataset": hostile}, "out": "-o",
                                            "eval": {"episodes": 1}}))
    run = sweep.runs[0]
    assert str(run.run_dir).startswith("/")  # an output root like '-o' is made absolute
    [train, evaluate] = job_argvs(run, 1)
    assert f"--dataset={hostile}" in train and hostile not in train
    assert all(not a.startswith("-") or a.startswith("--") and "=" in a or a in ("--episodes", "--num-envs",
               "--eval-seed", "--checkpoint", "--workers") for a in train + evaluate[2:])
