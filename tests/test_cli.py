"""The ``frozen-dt`` command: in-process through ``frozen_dt.cli.main`` and as a real subprocess.

User errors must exit with code 2 and one readable message on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from frozen_dt import cli
from frozen_dt.envs.registry import TASKS

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path("/work/shared/realdata/hopper-expert-v2_25.pkl")
HOPPER_REF_MIN, HOPPER_REF_MAX = -20.272305, 3234.3  # D4RL hopper references


def write_d4rl_hdf5(path: Path, obs_dim: int = 11, act_dim: int = 3) -> Path:
    """Three episodes of 10 steps: returns 10, 20 and 30 (rewards 1, 2, 3); terminal, then two timeouts."""
    n = 30
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[9] = True
    timeouts[[19, 29]] = True
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=rng.normal(size=(n, obs_dim)).astype(np.float32))
        f.create_dataset("actions", data=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32))
        f.create_dataset("rewards", data=np.repeat([1.0, 2.0, 3.0], 10).astype(np.float32))
        f.create_dataset("terminals", data=terminals)
        f.create_dataset("timeouts", data=timeouts)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_argparse_error(capsys, *argv) -> str:
    """Arguments argparse itself rejects: SystemExit(2) and a usage message."""
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def assert_user_error(code: int, err: str, *fragments: str, max_lines: int = 1) -> None:
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("frozen-dt: error: ")
    assert len(err.strip().splitlines()) <= max_lines, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def run_subprocess(*argv, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    env.pop("FROZEN_DT_MIRROR", None)
    return subprocess.run([sys.executable, "-m", "frozen_dt.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60)


# --- unknown tasks --------------------------------------------------------------------------------------------


def test_unknown_task_subprocess(data, tmp_path):
    proc = run_subprocess("data", "info", "hoper-medium-v2",
                          env_extra={"FROZEN_DT_DATA": str(data), "MINARI_DATASETS_PATH": str(tmp_path / "minari")})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "unknown task 'hoper-medium-v2'" in proc.stderr
    assert "Did you mean" in proc.stderr and "hopper-medium-v2" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ("data", "info", "walker-medium-v2"),
        ("data", "download", "walker-medium-v2"),
        ("train", "walker-medium-v2"),
    ],
    ids=["info", "download", "train"],
)
def test_unknown_task_suggests_close_names(data, capsys, argv):
    code, out, err = run(capsys, *argv)
    assert_user_error(code, err, "unknown task 'walker-medium-v2'", "Did you mean", "walker2d-medium-v2")
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ("data", "download", "../../etc/passwd"),
        ("data", "download", "hopper-medium-v2/../../../etc/passwd"),
        ("train", "../../etc/passwd"),
        ("data", "info", "../../etc/passwd"),
        ("data", "info", "/etc/passwd"),
        ("data", "info", "x.hdf5", "--task", "../../etc/passwd"),
    ],
)
def test_path_escape_attempts_are_refused(data, capsys, argv):
    code, out, err = run(capsys, *argv)
    assert_user_error(code, err)
    assert out == ""
    assert list(data.iterdir()) == []


# --- data list ------------------------------------------------------------------------------------------------


def test_data_list_all_absent(data, capsys):
    code, out, err = run(capsys, "data", "list")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["task", "env", "score", "dataset"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert len(rows) == len(TASKS) == 32
    assert set(rows) == set(TASKS)
    assert rows["hopper-medium-v2"][1:] == ["Hopper-v5", "normalized", "absent"]
    assert rows["ant-expert-v2"][1:] == ["Ant-v5", "normalized", "absent"]
    assert rows["scene-play-v0"][1:] == ["scene-v0", "success", "absent"]
    assert rows["cube-double-play-singletask-task3-v0"][1:] == ["cube-double-singletask-task3-v0", "success", "absent"]
    assert all(r[3] == "absent" for r in rows.values())


def test_data_list_shows_present_files_with_their_path(data, capsys):
    mine = write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    d4rl_named = write_d4rl_hdf5(data / "walker2d_medium_replay-v2.hdf5", obs_dim=17, act_dim=6)
    code, out, err = run(capsys, "data", "list")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.strip().splitlines()[1:]}
    assert rows["hopper-medium-v2"].endswith(f"present: {mine.resolve()}")
    assert rows["walker2d-medium-replay-v2"].endswith(f"present: {d4rl_named.resolve()}")
    assert rows["hopper-expert-v2"].endswith("absent")

    code, out, _ = run(capsys, "data", "list", "--json")
    assert code == 0
    listing = json.loads(out)
    assert len(listing) == 32
    assert all(set(row) == {"task", "env", "score", "dataset"} for row in listing)
    by_task = {row["task"]: row for row in listing}
    assert by_task["hopper-medium-v2"] == {
        "task": "hopper-medium-v2", "env": "Hopper-v5", "score": "normalized", "dataset": f"present: {mine.resolve()}",
    }
    assert sum(row["dataset"] == "absent" for row in listing) == 30
    assert sum(row["score"] == "normalized" for row in listing) == 20
    assert sum(row["score"] == "success" for row in listing) == 12


# --- data info ------------------------------------------------------------------------------------------------


def test_data_info_json_on_a_task_file(data, capsys):
    path = write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    code, out, err = run(capsys, "data", "info", "hopper-medium-v2", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["task"] == "hopper-medium-v2"
    assert (info["n_episodes"], info["n_transitions"], info["obs_dim"], info["act_dim"]) == (3, 30, 11, 3)
    assert info["return_mean"] == pytest.approx(20.0)
    assert info["return_min"] == pytest.approx(10.0)
    assert info["return_max"] == pytest.approx(30.0)
    expected = 100 * (20.0 - HOPPER_REF_MIN) / (HOPPER_REF_MAX - HOPPER_REF_MIN)
    assert info["normalized_return_mean"] == pytest.approx(expected, rel=1e-9)
    assert (info["n_terminated"], info["n_truncated"]) == (1, 2)
    assert info["source"]["kind"] == "file"
    assert info["source"]["format"] == "d4rl-hdf5"
    assert Path(info["source"]["path"]) == path.resolve()
    assert info["source"]["task"] == "hopper-medium-v2"


def test_data_info_text_output(data, capsys):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    code, out, err = run(capsys, "data", "info", "hopper-medium-v2")
    assert code == 0, err
    assert "n_episodes: 3" in out
    assert "return_mean: 20.0000" in out
    assert "source.kind: file" in out


def test_data_info_on_a_path_guesses_the_task(data, capsys, tmp_path):
    path = write_d4rl_hdf5(tmp_path / "hopper-medium-v2_copy.hdf5")
    code, out, err = run(capsys, "data", "info", str(path), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["task"] == "hopper-medium-v2" and info["normalized_return_mean"] is not None

    plain = write_d4rl_hdf5(tmp_path / "mine.hdf5")
    code, out, _ = run(capsys, "data", "info", str(plain), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["task"] is None and info["normalized_return_mean"] is None and info["return_mean"] == pytest.approx(20.0)

    code, out, _ = run(capsys, "data", "info", str(plain), "--task", "hopper-expert-v2", "--json")
    assert code == 0 and json.loads(out)["task"] == "hopper-expert-v2"
    code, _, err = run(capsys, "data", "info", str(plain), "--task", "walker2d-expert-v2")
    assert_user_error(code, err, "actions have 3 dims", "walker2d-expert-v2")


@pytest.mark.skipif(not REALDATA.is_file(), reason="shared real D4RL subset not present")
def test_data_info_on_real_dt_pickle_without_rewards(data, capsys):
    code, out, err = run(capsys, "data", "info", str(REALDATA), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["task"] == "hopper-expert-v2"
    assert (info["n_episodes"], info["n_transitions"], info["obs_dim"], info["act_dim"]) == (25, 24155, 11, 3)
    assert info["return_mean"] is None and info["return_min"] is None and info["return_max"] is None
    assert info["normalized_return_mean"] is None
    assert set(info["missing_keys"]) == {"rewards", "terminals"}
    assert info["source"]["format"] == "dt-pickle"


def test_missing_dataset_names_the_paths_and_the_download_command(data, capsys, tmp_path, monkeypatch):
    code, out, err = run(capsys, "data", "info", "hopper-medium-v2")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("frozen-dt: error: no dataset for hopper-medium-v2")
    root = data.resolve()
    for name in ("hopper-medium-v2.hdf5", "hopper_medium-v2.hdf5", "hopper-medium-v2.pkl"):
        assert str(root / name) in err
    assert str(tmp_path / "minari" / "mujoco/hopper/medium-v0") in err
    assert "frozen-dt data download hopper-medium-v2" in err
    assert "--source minari" in err

    # train does not stop at a missing dataset: it generates one (stopped here before any rollout or training)
    import frozen_dt.data.sources
    from frozen_dt.errors import FrozenDTError

    def no_generation(task, **kwargs):
        raise FrozenDTError(f"generation of {task.name} requested (announce={kwargs.get('announce')})")

    monkeypatch.setattr(frozen_dt.data.sources, "generate_dataset", no_generation)
    code, _, err = run(capsys, "train", "hopper-random-v2", "--algo", "dt")
    assert_user_error(code, err, "generation of hopper-random-v2 requested (announce=True)")


@pytest.mark.parametrize(
    "name, content",
    [
        ("hopper-medium-v2.hdf5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64),  # HDF5 signature, truncated body
        ("hopper_medium-v2.hdf5", b"not hdf5 at all"),
        ("hopper-medium-v2.pkl", b"\x80\x04garbage"),
    ],
)
def test_corrupt_task_file_is_a_clear_error(data, capsys, name, content):
    (data / name).write_bytes(content)
    code, out, err = run(capsys, "data", "info", "hopper-medium-v2")
    assert_user_error(code, err, name)
    assert out == ""


def test_corrupt_file_subprocess(data, tmp_path):
    bad = tmp_path / "scene-play-v0.npz"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    proc = run_subprocess("data", "info", str(bad),
                          env_extra={"FROZEN_DT_DATA": str(data), "MINARI_DATASETS_PATH": str(tmp_path / "minari")})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("frozen-dt: error: ") and str(bad) in proc.stderr


def test_data_info_unknown_format_and_missing_path(data, capsys, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    code, _, err = run(capsys, "data", "info", str(other))
    assert_user_error(code, err, "unknown dataset format")
    code, _, err = run(capsys, "data", "info", str(tmp_path / "nowhere.hdf5"))
    assert_user_error(code, err, "no such file")


# --- train / eval argument validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers, message",
    [
        ("3:40", "the model has 18 layers"),
        ("abc", "expected a Python slice"),
        ("5:2", "selects no layer"),
        ("0:5:1", "expected a Python slice"),
        ("-19:", "the model has 18 layers"),
        ("18:", "selects no layer"),
    ],
)
def test_train_bad_layers(data, capsys, layers, message):
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--layers", layers)
    assert_user_error(code, err, "bad --layers", repr(layers), message)


def test_train_layers_checked_against_the_chosen_backbone(data, capsys):
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--backbone", "minilm-l6", "--layers", "0:7")
    assert_user_error(code, err, "the model has 6 layers")
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--backbone", "hf:some-org/some-model", "--layers", "5:2")
    assert_user_error(code, err, "the slice is empty")
    # depth unknown until the model loads: the form passes, and loading (offline, before any data) is what fails
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--backbone", "hf:some-org/some-model", "--layers", "2:40")
    assert_user_error(code, err, "backbone 'hf:some-org/some-model'", "cannot load its config offline")


def test_train_valid_arguments_pass_validation(data, capsys, monkeypatch):
    import frozen_dt.training.train

    calls = []
    monkeypatch.setattr(frozen_dt.training.train, "train", lambda args, explicit: calls.append((args, explicit)))
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--layers", "-5:", "--backbone", "smollm2-135m",
                       "--algo", "frozen-dt", "--steps", "10")
    assert code == 0, err
    [(args, explicit)] = calls
    assert (args["layers"], args["backbone"], args["algo"], args["steps"]) == ("-5:", "smollm2-135m", "frozen-dt", 10)
    assert explicit == {"layers", "backbone", "algo", "steps"}  # what recipes must not override
    assert "expectile" not in args and "context" in args  # the run's settings and frozen-dt's, nothing else


def test_train_refuses_another_algorithms_settings_naming_their_owner(data, capsys):
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "iql", "--context", "4", "--layers=0:2")
    assert_user_error(code, err, "--context is a setting of frozen-dt, dt, not of iql",
                      "--layers is a setting of frozen-dt, not of iql", "frozen-dt train --algo iql --help")
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "iql", "--no-such-flag", "1")
    assert_user_error(code, err, "--no-such-flag is not a setting of iql runs")


def test_train_help_lists_the_run_settings_and_the_named_algorithms_only(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--algo", "iql", "--help"])
    out = capsys.readouterr().out
    assert "run settings" in out and "iql settings" in out and "--expectile" in out and "--steps" in out
    assert "--context" not in out and "--backbone" not in out and "--cql-alpha" not in out


def test_the_usage_line_names_every_command_the_help_lists(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    usage = out.split("positional arguments:")[0]
    listed = [line.split()[0] for line in out.split("positional arguments:")[1].split("options:")[0].splitlines()[2:]
              if line.startswith("    ") and not line.startswith("     ")]
    assert {"train", "eval", "backbone", "data"} <= set(listed)
    assert all(name in usage for name in listed), (listed, usage)


def test_help_texts_carry_no_rst_markup(capsys):
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"], ["leaderboard", "--help"], ["data", "--help"],
                 ["train", "--algo", "gciql", "--help"], ["probe", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        out = capsys.readouterr().out
        assert "``" not in out and ":class:" not in out and "`" not in out, (argv, out)


@pytest.mark.parametrize(
    "backbone, fragments",
    [
        ("gemma3-27m", ("unknown backbone 'gemma3-27m'", "Did you mean gemma3-270m")),
        ("gpt2", ("unknown backbone 'gpt2'", "hf:<model id or path>")),
        ("hf:", ("unknown backbone 'hf:'",)),
    ],
)
def test_train_unknown_backbone(data, capsys, backbone, fragments):
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--backbone", backbone)
    assert_user_error(code, err, *fragments)


def test_train_unknown_algo_and_bad_types_are_argparse_errors(data, capsys):
    err = run_argparse_error(capsys, "train", "hopper-medium-v2", "--algo", "ppo")
    assert "invalid choice: 'ppo'" in err and "Traceback" not in err
    err = run_argparse_error(capsys, "train", "hopper-medium-v2", "--steps", "abc")
    assert "invalid int value: 'abc'" in err
    err = run_argparse_error(capsys, "train")
    assert "task" in err
    err = run_argparse_error(capsys)
    assert "usage: frozen-dt" in err


@pytest.mark.parametrize(
    "option, value",
    [("--steps", "0"), ("--steps", "-5"), ("--batch-size", "0"), ("--context", "-1"), ("--lr", "0"), ("--lr", "nan")],
)
def test_train_non_positive_numbers(data, capsys, option, value):
    code, _, err = run(capsys, "train", "hopper-medium-v2", option, value)
    assert_user_error(code, err, f"{option} must be positive")


@pytest.mark.parametrize("option", ["--episodes", "--num-envs"])
def test_eval_non_positive_counts(data, capsys, option):
    code, _, err = run(capsys, "eval", option, "0")
    assert_user_error(code, err, f"{option} must be positive, got 0")


def test_eval_bad_checkpoint_choice(data, capsys):
    err = run_argparse_error(capsys, "eval", "--checkpoint", "middle")
    assert "invalid choice: 'middle'" in err
