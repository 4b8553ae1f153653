"""Statistics (bootstrap CIs, IQM, normalization), ``frozen-dt eval`` and ``frozen-dt leaderboard`` end to end."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from scipy import stats as scipy_stats

from frozen_dt.envs.registry import get_task
from frozen_dt.eval.scores import normalized_score
from frozen_dt.eval.stats import aggregate_iqm, stratified_bootstrap_ci, summarize_runs
from test_cli import assert_user_error, run, write_d4rl_hdf5
from test_trainer import SMOKE

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# --- statistics -------------------------------------------------------------------------------------------------


def test_normalization_uses_the_d4rl_references():
    hopper, walker = get_task("hopper-medium-v2"), get_task("walker2d-expert-v2")
    # D4RL's infos.py: hopper REF_MIN -20.272305, REF_MAX 3234.3; walker2d 1.629008, 4592.3
    assert normalized_score(hopper, -20.272305) == pytest.approx(0.0)
    assert normalized_score(hopper, 3234.3) == pytest.approx(100.0)
    assert normalized_score(walker, (4592.3 + 1.629008) / 2) == pytest.approx(50.0)


def test_bootstrap_ci_of_one_task_matches_scipy_percentile_bootstrap():
    scores = np.random.default_rng(3).normal(50, 10, size=12)
    low, high = stratified_bootstrap_ci(scores, reps=20_000, seed=1)
    ref = scipy_stats.bootstrap((scores,), np.mean, method="percentile", n_resamples=20_000, random_state=2)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.4)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.4)
    half = 1.96 * scores.std() / np.sqrt(len(scores))  # the normal approximation of the same interval
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_bootstrap_is_stratified_by_task():
    """Runs are resampled within each task: a task whose runs all agree contributes no spread."""
    m = np.column_stack([np.full(5, 80.0), np.array([0.0, 10.0, 20.0, 30.0, 40.0])])
    low, high = stratified_bootstrap_ci(m, reps=10_000)
    # mean over tasks = 40 + (mean of column 2 resample) / 2: half the single-task interval, centred on 50
    single_low, single_high = stratified_bootstrap_ci(m[:, 1], reps=10_000)
    assert (low, high) == pytest.approx(((80 + single_low) / 2, (80 + single_high) / 2), abs=0.5)
    assert stratified_bootstrap_ci(np.full((4, 3), 7.0), reps=1000) == (7.0, 7.0)


def test_iqm_and_summary():
    scores = np.arange(1.0, 9.0)  # IQM of 1..8 = mean of 3..6
    assert aggregate_iqm(scores[:, None]) == pytest.approx(4.5)
    s = summarize_runs(scores, reps=2000)
    assert s["mean"] == pytest.approx(4.5) and s["median"] == pytest.approx(4.5) and s["ci_low"] < 4.5 < s["ci_high"]


# --- eval and leaderboard ---------------------------------------------------------------------------------------


@pytest.fixture
def trained_runs(data, tmp_path, monkeypatch, capsys):
    """Two seeds of a 4-step DT on a tiny hopper file, in runs/ of a temporary working dir."""
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    monkeypatch.chdir(tmp_path)
    dirs = []
    for seed in ("0", "1"):
        run_dir = tmp_path / "runs" / f"dt-{seed}"
        code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--seed", seed, "--run-dir",
                           str(run_dir), *SMOKE)
        assert code == 0, err
        dirs.append(run_dir)
    return dirs


EVAL = ("--episodes", "3", "--num-envs", "2", "--target-return", "1800")


def test_eval_writes_per_episode_records_and_aggregates_seeds(trained_runs, capsys):
    code, out, err = run(capsys, "eval", *map(str, trained_runs), *EVAL)
    assert code == 0, err
    records = [json.loads((d / "eval-last.json").read_text()) for d in trained_runs]
    for record in records:
        episodes = record["targets"]["1800"]["episodes"]
        assert [e["episode"] for e in episodes] == [0, 1, 2] and record["eval_seed"] == 10_000
        assert record["score"] == pytest.approx(np.mean([e["score"] for e in episodes]))
        assert record["checkpoint_step"] == 4 and record["env_id"] == "Hopper-v4"  # a D4RL-layout file without metadata: D4RL's v4 env
    assert "t over 2 seeds; seeds" in out and "2 seed(s), 6 episodes" in out
    # another env version gets its own file and leaves the main record alone
    code, _, err = run(capsys, "eval", str(trained_runs[0]), *EVAL, "--env-version", "v5")
    assert code == 0, err
    assert json.loads((trained_runs[0] / "eval-last-v5.json").read_text())["env_id"] == "Hopper-v5"
    assert json.loads((trained_runs[0] / "eval-last.json").read_text()) == records[0]
    # the same seeds give the same episodes: evaluating again reproduces the record
    code, _, _ = run(capsys, "eval", str(trained_runs[0]), *EVAL)
    again = json.loads((trained_runs[0] / "eval-last.json").read_text())
    assert again["targets"]["1800"]["episodes"] == records[0]["targets"]["1800"]["episodes"]


def test_eval_without_a_run_takes_the_most_recent(trained_runs, capsys):
    code, out, err = run(capsys, "eval", *EVAL)
    assert code == 0, err
    assert "runs/dt-1 [last, step 4]" in out and not (trained_runs[0] / "eval-last.json").exists()


def test_eval_bad_runs_are_clear_errors_and_overwrite_nothing(trained_runs, capsys, tmp_path):
    code, _, err = run(capsys, "eval", str(tmp_path / "nowhere"), *EVAL)
    assert_user_error(code, err, "is not a directory")
    code, _, err = run(capsys, "eval", str(trained_runs[0]), "--checkpoint", "best", *EVAL)
    assert code == 0, err  # the smoke run evaluated, so best.pt exists
    empty = tmp_path / "empty-run"
    empty.mkdir()
    code, _, err = run(capsys, "eval", str(empty), *EVAL)
    assert_user_error(code, err, "has no checkpoint checkpoints/last.pt")
    code, _, err = run(capsys, "eval", str(trained_runs[0]), "--task", "walker2d-medium-v2", *EVAL)
    assert_user_error(code, err, "trained on hopper-medium-v2 (obs 11, action 3)", "Walker2d-v4 has obs 17, action 6")
    code, _, err = run(capsys, "eval", str(trained_runs[0]), "--episodes", "0")
    assert_user_error(code, err, "--episodes must be positive")
    broken = tmp_path / "broken"
    shutil.copytree(trained_runs[1], broken)
    (broken / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "eval", str(trained_runs[0]), str(broken), *EVAL)
    assert_user_error(code, err, "cannot read checkpoint")
    assert not (trained_runs[0] / "eval-last.json").exists()  # nothing evaluated before every run was checked


def test_eval_tells_configurations_apart_by_the_settings_that_differ(trained_runs, capsys, tmp_path):
    other = tmp_path / "runs" / "dt-lr"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--seed", "0", "--lr", "3e-4",
                       "--run-dir", str(other), *SMOKE)
    assert code == 0, err
    code, out, err = run(capsys, "eval", *map(str, trained_runs), str(other), *EVAL)
    assert code == 0, err
    summaries = [line for line in out.splitlines() if "95 % interval" in line]
    assert len(summaries) == 2 and "dt lr=0.0001 target 1800: " in summaries[0] and "2 seed(s)" in summaries[0]
    assert "dt lr=0.0003 target 1800: " in summaries[1] and "1 seed(s)" in summaries[1]


def test_leaderboard_rows_csv_markdown_and_figures(trained_runs, capsys, tmp_path):
    code, _, err = run(capsys, "leaderboard", "--out", str(tmp_path / "results" / "lb.csv"))
    assert_user_error(code, err, "no evaluated runs")
    assert run(capsys, "eval", *map(str, trained_runs), *EVAL)[0] == 0
    out_csv = tmp_path / "results" / "lb.csv"
    code, out, err = run(capsys, "leaderboard", "runs/*", "--out", str(out_csv))
    assert code == 0, err
    with open(out_csv) as handle:
        [row] = list(csv.DictReader(handle))  # one row per evaluated return target
    assert row["target"] == "1800"
    records = [json.loads((d / "eval-last.json").read_text()) for d in trained_runs]
    assert row["algo"] == "dt" and row["task"] == "hopper-medium-v2" and row["n_seeds"] == "2"
    assert row["n_episodes"] == "6" and row["scale"] == "reduced" and row["dataset_source"] == "file"
    assert float(row["score_mean"]) == pytest.approx(np.mean([r["score"] for r in records]), abs=0.01)
    assert float(row["ci_low"]) <= float(row["score_mean"]) <= float(row["ci_high"])
    assert row["ci_over"] == "t over 2 seeds" and int(row["trainable_params"]) > 0 and row["steps"] == "4"
    table = (tmp_path / "results" / "lb.md").read_text()
    assert "| hopper-medium-v2 | 1800 | dt |" in table
    per_seed = ", ".join(f"{r['score']:.1f}" for r in records)  # 2 seeds: the t-interval with the seeds beside it
    assert f"(95 %, t over 2 seeds; seeds {per_seed})" in table
    for figure in ("scores.png", "curves.png"):
        assert (tmp_path / "results" / figure).read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_over_a_setting_the_columns_do_not_name_gives_one_row_per_value_saying_which(tmp_path, capsys,
                                                                                              monkeypatch):
    from test_hostile_leaderboard import fake_run

    monkeypatch.chdir(tmp_path)
    scores = {("1e-4", 0): 10.0, ("1e-4", 1): 20.0, ("1e-3", 0): 50.0, ("1e-3", 1): 70.0}
    for (lr, seed), score in scores.items():
        run_dir = fake_run(tmp_path / "runs" / f"bc-lr{lr}-{seed}", seed=seed, scores=(score,))
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({"args": {**config["args"], "lr": float(lr)}}))
    fake_run(tmp_path / "other" / "bc-iql-task", seed=0, scores=(5.0,))  # a row no other looks like: no settings
    other = tmp_path / "other" / "bc-iql-task"
    record = json.loads((other / "eval-last.json").read_text())
    (other / "eval-last.json").write_text(json.dumps({**record, "task": "walker2d-medium-v2"}))
    code, out, err = run(capsys, "leaderboard", "runs/*", "other/*", "--out", str(tmp_path / "lb.csv"))
    assert code == 0, err  # no seed of one rate is "already counted" from the other rate's run
    assert "hopper-medium-v2 target 1800: bc lr=0.001: 60.0 [" in out and "; seeds 50.0, 70.0), 2 seed(s)" in out
    with open(tmp_path / "lb.csv") as handle:
        rows = {r["settings"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"lr=0.0001", "lr=0.001", ""} and rows[""]["task"] == "walker2d-medium-v2"
    assert [(rows[k]["n_seeds"], float(rows[k]["score_mean"])) for k in ("lr=0.0001", "lr=0.001")] == \
        [("2", 15.0), ("2", 60.0)]
    assert "| bc | - | - | - | lr=0.001 |" in (tmp_path / "lb.md").read_text()


def test_settings_that_change_speed_or_spell_a_default_do_not_split_a_configuration(tmp_path, capsys, monkeypatch):
    from test_hostile_leaderboard import fake_run

    monkeypatch.chdir(tmp_path)
    spellings = ({"precision": "auto", "compile": False, "device_sampling": "auto"},
                 {"precision": "fp32", "compile": True, "device_sampling": "off"},  # what auto is on a CPU
                 {"precision": "bf16"})  # another precision: a configuration of its own
    for seed, settings in enumerate(spellings):
        run_dir = fake_run(tmp_path / "runs" / f"bc-{seed}", seed=seed, scores=(10.0 * (seed + 1),))
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({"args": {**config["args"], **settings}}))
    code, out, err = run(capsys, "leaderboard", "runs/*", "--out", str(tmp_path / "lb.csv"))
    assert code == 0, err
    with open(tmp_path / "lb.csv") as handle:
        rows = {r["settings"]: (r["n_seeds"], float(r["score_mean"])) for r in csv.DictReader(handle)}
    assert rows == {"precision=fp32": ("2", 15.0), "precision=bf16": ("1", 30.0)}


def test_the_leaderboard_of_evaluations_in_another_env_version_reads_their_own_files(tmp_path, capsys, monkeypatch):
    from test_hostile_leaderboard import fake_run

    monkeypatch.chdir(tmp_path)
    for seed in (0, 1):
        run_dir = fake_run(tmp_path / "runs" / f"bc-{seed}", seed=seed, scores=(10.0 + seed,))
        record = json.loads((run_dir / "eval-last.json").read_text())  # `frozen-dt eval --env-version v5` writes:
        (run_dir / "eval-last-v5.json").write_text(json.dumps({**record, "targets": {"1800": {"episodes": [
            {"score": 50.0 + seed}]}}}))
    for version, expected in ((None, 10.5), ("v5", 50.5)):
        code, out, err = run(capsys, "leaderboard", "runs/*", "--out", str(tmp_path / "lb.csv"),
                             *(["--env-version", version] if version else []))
        assert code == 0, err
        with open(tmp_path / "lb.csv") as handle:
            [row] = list(csv.DictReader(handle))
        assert (row["n_seeds"], float(row["score_mean"])) == ("2", expected)
    code, _, err = run(capsys, "leaderboard", "runs/*", "--out", str(tmp_path / "lb.csv"), "--env-version", "v4")
    assert_user_error(code, err, "each needs its evaluation in v4, eval-last-v4.json")  # none has one
    import frozen_dt

    with pytest.raises(frozen_dt.FrozenDTError, match="env_version must be one of"):
        frozen_dt.leaderboard(["runs/*"], out=tmp_path / "lb.csv", env_version="V5")


def test_a_reference_row_gives_every_other_row_welchs_interval_on_its_difference(tmp_path, capsys, monkeypatch):
    from test_hostile_leaderboard import fake_run

    monkeypatch.chdir(tmp_path)
    arms = {"bc": (10.0, 20.0, 30.0), "iql": (40.0, 50.0, 70.0), "td3bc": (60.0,)}
    for algo, scores in arms.items():
        for seed, score in enumerate(scores):
            run_dir = fake_run(tmp_path / "runs" / f"{algo}-{seed}", seed=seed, scores=(score, score + 2.0))
            config = json.loads((run_dir / "config.json").read_text())
            (run_dir / "config.json").write_text(json.dumps({"args": {**config["args"], "algo": algo}}))
    code, out, err = run(capsys, "leaderboard", "runs/*", "--out", str(tmp_path / "lb.csv"), "--reference", "bc")
    assert code == 0, err
    with open(tmp_path / "lb.csv") as handle:
        rows = {r["algo"]: r for r in csv.DictReader(handle)}
    expected = scipy_stats.ttest_ind([41.0, 51.0, 71.0], [11.0, 21.0, 31.0], equal_var=False)  # seed means
    iql = rows["iql"]
    assert (iql["vs"], iql["diff_n"]) == ("bc", "3 v 3") and float(iql["difference"]) == pytest.approx(54.33 - 21.0)
    assert [float(iql["diff_ci_low"]), float(iql["diff_ci_high"])] == pytest.approx(
        list(expected.confidence_interval(0.95)), abs=0.01)
    assert float(iql["diff_p"]) == pytest.approx(expected.pvalue, abs=1e-4)
    assert rows["td3bc"]["difference"] == "" and rows["td3bc"]["diff_n"] == "1 v 3"  # one seed: no interval
    assert rows["bc"]["vs"] == ""
    table = (tmp_path / "lb.md").read_text()
    assert f"diff +33.3 [{float(iql['diff_ci_low']):+.1f}, {float(iql['diff_ci_high']):+.1f}], Welch p " in table
    assert "no interval (1 v 3 seeds)" in table and "; vs bc: diff +33.3" in out
    code, _, err = run(capsys, "leaderboard", "runs/*", "--out", str(tmp_path / "lb2.csv"), "--reference", "sac")
    assert_user_error(code, err, "--reference 'sac' is no row of this leaderboard (rows: bc, iql, td3bc)")


def test_rows_that_differ_in_freeze_are_told_apart_and_a_reference_is_only_compared_within_its_condition(
        tmp_path, capsys, monkeypatch):
    from test_hostile_leaderboard import fake_run

    monkeypatch.chdir(tmp_path)
    frozen = {"algo": "frozen-dt", "backbone": "gemma3-270m", "layers": "0:2", "init": "pretrained"}
    arms = {("all", "file"): (10.0, 20.0), ("none", "file"): (40.0, 60.0), ("all", "generated"): (30.0, 50.0)}
    for (freeze, source), scores in arms.items():
        for seed, score in enumerate(scores):
            run_dir = fake_run(tmp_path / "runs" / f"{freeze}-{source}-{seed}", seed=seed, scores=(score,))
            config = json.loads((run_dir / "config.json").read_text())
            (run_dir / "config.json").write_text(json.dumps({"args": {**config["args"], **frozen, "freeze": freeze}}))
            (run_dir / "dataset.json").write_text(json.dumps({"source": {"kind": source}}))
    reference = "frozen-dt gemma3-270m 0:2 pretrained freeze=all"
    code, out, err = run(capsys, "leaderboard", "runs/*", "--out", str(tmp_path / "lb.csv"), "--reference", reference)
    assert code == 0, err
    with open(tmp_path / "lb.csv") as handle:
        rows = {(r["freeze"], r["dataset_source"]): r for r in csv.DictReader(handle)}
    assert rows["all", "file"]["settings"] == "freeze=all" and rows["none", "file"]["settings"] == "freeze=none"
    assert rows["all", "generated"]["settings"] == ""  # no look-alike row on generated data
    none = rows["none", "file"]
    assert (none["vs"], none["diff_n"], float(none["difference"])) == (reference, "2 v 2", 35.0)
    assert rows["all", "generated"]["vs"] == reference and rows["all", "generated"]["difference"] == ""
    assert f"; vs {reference}: no {reference} row at this task, target, data and step" in out
    assert "frozen-dt gemma3-270m 0:2 pretrained freeze=none: 50.0" in out


def test_every_score_says_whether_its_data_was_generated_or_d4rls(trained_runs, capsys, tmp_path, monkeypatch):
    import matplotlib.axes

    from frozen_dt.data.sources import data_label

    assert data_label({"kind": "generated"}) == "generated"
    assert data_label({"kind": "downloaded", "download": {"url": "http://rail.eecs.berkeley.edu/datasets/offline_rl/"
                                                                 "gym_mujoco_v2/hopper_medium-v2.hdf5"}}) == "d4rl"
    assert data_label({"kind": "file"}) == "file"
    for run_dir in trained_runs:  # as if the dataset had been made by frozen-dt data generate
        record = json.loads((run_dir / "dataset.json").read_text())
        record["source"]["kind"] = "generated"
        (run_dir / "dataset.json").write_text(json.dumps(record))
    code, out, err = run(capsys, "eval", *map(str, trained_runs), *EVAL)
    assert code == 0, err
    assert all(json.loads((d / "eval-last.json").read_text())["data"] == "generated" for d in trained_runs)
    score_lines = [line for line in out.splitlines() if "normalized score" in line or "95 % interval" in line]
    assert len(score_lines) == 3 and all("(generated data)" in line for line in score_lines)
    titles = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, text, **kw: titles.append(text))
    code, _, err = run(capsys, "leaderboard", "runs/*", "--out", str(tmp_path / "lb.csv"))
    assert code == 0, err
    with open(tmp_path / "lb.csv") as handle:
        assert [row["dataset_source"] for row in csv.DictReader(handle)] == ["generated"]
    assert "| generated |" in (tmp_path / "lb.md").read_text()
    assert titles and all("generated data" in t for t in titles)  # scores.png and curves.png
