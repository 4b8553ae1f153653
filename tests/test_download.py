"""Downloads without network: a loopback HTTP server stands in for the D4RL/OGBench servers ($FROZEN_DT_MIRROR),
and a fake ``minari.download_dataset`` for Minari's client.

Every failure must leave nothing a loader would pick up (no file, no ``.part``) and end in a FrozenDTError
(exit code 2 from the CLI).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import struct
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from frozen_dt import cli
from frozen_dt.data import download
from frozen_dt.data.sources import fetch, load_task_dataset, locate
from frozen_dt.envs.registry import get_task
from frozen_dt.errors import FrozenDTError

HOPPER_D4RL_FILE = "hopper_medium-v2.hdf5"  # the name D4RL serves
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


# --- tiny valid dataset files ----------------------------------------------------------------------------------


def write_d4rl_hdf5(path: Path, obs_dim: int = 11, act_dim: int = 3, n: int = 30, seed: int = 0,
                    drop: tuple = ()) -> Path:
    """A D4RL-layout file: episodes end at step 9 (terminal), 19 and 29 (timeouts)."""
    rng = np.random.default_rng(seed)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[9] = True
    timeouts[19::10] = True
    arrays = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.uniform(0, 1, size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if key not in drop:
                f.create_dataset(key, data=value)
    return path


def write_ogbench_npz(path: Path, obs_dim: int = 40, act_dim: int = 5, seed: int = 0) -> Path:
    """Two OGBench trajectories of 10 stored states each; ``terminals`` marks each trajectory's last state."""
    rng = np.random.default_rng(seed)
    n = 20
    terminals = np.zeros(n, np.float32)
    terminals[[9, 19]] = 1.0
    np.savez(
        path,
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        terminals=terminals,
    )
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


# --- loopback server ------------------------------------------------------------------------------------------


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; ``server.modes[file name]`` makes the transfer of that file fail on purpose."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        mode = self.server.modes.get(name)
        if mode is None:
            return super().do_GET()
        data = (Path(self.directory) / name).read_bytes()
        half = data[: len(data) // 2]
        self.send_response(200)
        if mode == "chunked-truncate":  # chunked transfer whose chunk never completes
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(data) + half)
        else:  # announces the full length, sends half, then the "server dies"
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(half)
        self.wfile.flush()
        if mode == "reset":  # abortive close: the client sees a connection reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


@pytest.fixture
def data(tmp_path, monkeypatch):
    """An empty data dir ($FROZEN_DT_DATA) and an empty Minari dir, so nothing of the user's leaks in."""
    path = tmp_path / "data"
    monkeypatch.setenv("FROZEN_DT_DATA", str(path))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.delenv("FROZEN_DT_MIRROR", raising=False)
    return path


@pytest.fixture
def server(tmp_path, monkeypatch, data):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(MirrorHandler, directory=str(root)))
    httpd.daemon_threads = True
    httpd.modes = {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_port}/"
    monkeypatch.setenv("FROZEN_DT_MIRROR", url)
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    try:
        yield SimpleNamespace(root=root, modes=httpd.modes, url=url)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- D4RL -----------------------------------------------------------------------------------------------------


def test_cli_download_d4rl_file_then_load(server, data, capsys):
    served = write_d4rl_hdf5(server.root / HOPPER_D4RL_FILE)
    code, out, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 0, err
    assert "3 episodes" in out and "30 transitions" in out
    dest = data / HOPPER_D4RL_FILE
    assert dest.read_bytes() == served.read_bytes()
    assert files_in(data) == sorted([HOPPER_D4RL_FILE, HOPPER_D4RL_FILE + ".source.json"])  # no .part, no .tmp

    record = json.loads((data / (HOPPER_D4RL_FILE + ".source.json")).read_text())
    assert record["sha256"] == sha256_of(served)
    assert record["url"] == server.url + HOPPER_D4RL_FILE
    assert record["bytes"] == served.stat().st_size
    assert "pinned on first download" in record["sha256_verified_against"]

    dataset = load_task_dataset("hopper-medium-v2")
    assert dataset.source["kind"] == "downloaded"
    assert dataset.source["download"]["sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
    assert dataset.source["task"] == "hopper-medium-v2"
    assert (dataset.n_episodes, dataset.n_transitions, dataset.obs_dim, dataset.act_dim) == (3, 30, 11, 3)


def test_download_with_correct_sha256_records_it_as_verified(server, data, capsys):
    served = write_d4rl_hdf5(server.root / HOPPER_D4RL_FILE)
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2", "--sha256", sha256_of(served).upper())
    assert code == 0, err
    record = download.read_source_record(data / HOPPER_D4RL_FILE)
    assert record["sha256"] == sha256_of(served)
    assert record["sha256_verified_against"] == "expected checksum"


def test_wrong_sha256_refused_and_nothing_left(server, data, capsys):
    write_d4rl_hdf5(server.root / HOPPER_D4RL_FILE)
    code, out, err = run_cli(capsys, "data", "download", "hopper-medium-v2", "--sha256", "0" * 64)
    assert code == 2
    assert "checksum" in err and "0" * 64 in err
    assert "Traceback" not in err
    assert files_in(data) == []


def test_changed_server_file_refused_by_first_download_pin(server, data, capsys):
    served = write_d4rl_hdf5(server.root / HOPPER_D4RL_FILE, seed=0)
    assert run_cli(capsys, "data", "download", "hopper-medium-v2")[0] == 0
    first = sha256_of(served)
    record_before = (data / (HOPPER_D4RL_FILE + ".source.json")).read_text()

    write_d4rl_hdf5(served, seed=1)  # the server's copy changes (still a valid file)
    assert sha256_of(served) != first
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 2
    assert "checksum" in err and first in err
    # the pinned copy and its record are untouched, no partial file
    assert sha256_of(data / HOPPER_D4RL_FILE) == first
    assert (data / (HOPPER_D4RL_FILE + ".source.json")).read_text() == record_before
    assert files_in(data) == sorted([HOPPER_D4RL_FILE, HOPPER_D4RL_FILE + ".source.json"])
    assert load_task_dataset("hopper-medium-v2").source["download"]["sha256"] == first

    # the same file again is accepted; a checksum the user passes explicitly overrides the pin
    write_d4rl_hdf5(served, seed=0)
    assert run_cli(capsys, "data", "download", "hopper-medium-v2")[0] == 0
    write_d4rl_hdf5(served, seed=1)
    assert run_cli(capsys, "data", "download", "hopper-medium-v2", "--sha256", sha256_of(served))[0] == 0
    assert sha256_of(data / HOPPER_D4RL_FILE) == sha256_of(served)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"<html>not found</html>" * 10), "unreadable HDF5"),
        (lambda p: p.write_bytes(b""), "HDF5"),
        (lambda p: write_d4rl_hdf5(p, obs_dim=17), "observations have 17 dims"),
        (lambda p: write_d4rl_hdf5(p, act_dim=6), "actions have 6 dims"),
        (lambda p: write_d4rl_hdf5(p, drop=("rewards", "timeouts")), "missing key(s) rewards, timeouts"),
    ],
    ids=["garbage", "empty", "obs-17", "act-6", "missing-keys"],
)
def test_invalid_served_file_refused_and_nothing_left(server, data, capsys, make, message):
    make(server.root / HOPPER_D4RL_FILE)
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert files_in(data) == []
    assert locate(get_task("hopper-medium-v2")) is None


def test_404_is_a_clear_error(server, data, capsys):
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 2
    assert err.startswith("frozen-dt: error: download of ") and "404" in err
    assert server.url + HOPPER_D4RL_FILE in err
    assert files_in(data) == []


@pytest.mark.parametrize("mode", ["truncate", "reset", "chunked-truncate"])
def test_server_dying_mid_transfer_leaves_no_partial_file(server, data, capsys, mode):
    write_d4rl_hdf5(server.root / HOPPER_D4RL_FILE, n=4000)  # large enough that half of it is real bytes
    server.modes[HOPPER_D4RL_FILE] = mode
    with pytest.raises(FrozenDTError, match="download of"):
        download.download_file(server.url + HOPPER_D4RL_FILE, data / HOPPER_D4RL_FILE, progress=False)
    assert files_in(data) == []
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 2 and "download of" in err and "Traceback" not in err
    assert files_in(data) == []


def test_unreachable_mirror_is_a_clear_error(data, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FROZEN_DT_MIRROR", f"http://127.0.0.1:{port}")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 2
    assert "FROZEN_DT_MIRROR" in err
    assert files_in(data) == []


def test_file_url_mirror(tmp_path, data, monkeypatch, capsys):
    """An internal copy on a shared filesystem, given as a file:// URL."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    served = write_d4rl_hdf5(mirror / HOPPER_D4RL_FILE)
    monkeypatch.setenv("FROZEN_DT_MIRROR", mirror.as_uri())
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 0, err
    assert sha256_of(data / HOPPER_D4RL_FILE) == sha256_of(served)


def test_mirror_that_is_not_a_url_is_a_clear_error(tmp_path, data, monkeypatch, capsys):
    monkeypatch.setenv("FROZEN_DT_MIRROR", str(tmp_path / "mirror"))
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2")
    assert code == 2
    assert "FROZEN_DT_MIRROR" in err and "Traceback" not in err
    assert files_in(data) == []


def test_resolve_url_uses_the_mirror_with_the_upstream_file_name(monkeypatch):
    url = get_task("hopper-medium-v2").download_url
    monkeypatch.delenv("FROZEN_DT_MIRROR", raising=False)
    assert download.resolve_url(url) == url
    monkeypatch.setenv("FROZEN_DT_MIRROR", "http://mirror.internal/d4rl/")
    assert download.resolve_url(url) == "http://mirror.internal/d4rl/" + HOPPER_D4RL_FILE


# --- load_task_dataset(download=True) -------------------------------------------------------------------------


def test_load_task_dataset_download_end_to_end(server, data):
    served = write_d4rl_hdf5(server.root / "walker2d_medium_replay-v2.hdf5", obs_dim=17, act_dim=6)
    task = get_task("walker2d-medium-replay-v2")
    with pytest.raises(FrozenDTError, match="no dataset for walker2d-medium-replay-v2"):
        load_task_dataset(task)  # no download unless asked
    assert files_in(data) == []

    dataset = load_task_dataset(task, download=True)
    assert dataset.source["kind"] == "downloaded"
    assert dataset.source["download"]["sha256"] == sha256_of(served)
    assert dataset.source["task"] == task.name
    assert dataset.source["env_version"] == "v4"
    assert (dataset.obs_dim, dataset.act_dim, dataset.n_episodes) == (17, 6, 3)

    server.modes["walker2d_medium_replay-v2.hdf5"] = "truncate"  # now local: the server is not asked again
    again = load_task_dataset(task.name, download=True)
    assert again.source["download"] == dataset.source["download"]


def test_fetch_refuses_sources_that_do_not_serve_the_task(data):
    with pytest.raises(FrozenDTError, match="cannot be downloaded from ogbench"):
        fetch(get_task("hopper-medium-v2"), "ogbench")
    with pytest.raises(FrozenDTError, match="cannot be downloaded from d4rl"):
        fetch(get_task("scene-play-v0"), "d4rl")
    with pytest.raises(FrozenDTError, match="no Minari dataset"):
        fetch(get_task("hopper-random-v2"), "minari")
    with pytest.raises(FrozenDTError, match="unknown download source"):
        fetch(get_task("hopper-medium-v2"), "http")
    assert files_in(data) == []


# --- OGBench --------------------------------------------------------------------------------------------------


def test_ogbench_download_fetches_training_and_validation_files(server, data, capsys):
    train = write_ogbench_npz(server.root / "scene-play-v0.npz", seed=0)
    val = write_ogbench_npz(server.root / "scene-play-v0-val.npz", seed=1)
    code, out, err = run_cli(capsys, "data", "download", "scene-play-v0")
    assert code == 0, err
    assert "2 episodes, 18 transitions" in out
    assert files_in(data) == sorted(
        ["scene-play-v0.npz", "scene-play-v0.npz.source.json", "scene-play-v0-val.npz", "scene-play-v0-val.npz.source.json"]
    )
    assert sha256_of(data / "scene-play-v0.npz") == sha256_of(train)
    assert download.read_source_record(data / "scene-play-v0.npz")["sha256"] == sha256_of(train)
    assert download.read_source_record(data / "scene-play-v0-val.npz")["sha256"] == sha256_of(val)
    assert download.read_source_record(data / "scene-play-v0-val.npz")["url"] == server.url + "scene-play-v0-val.npz"

    dataset = load_task_dataset("scene-play-v0")
    assert dataset.source["kind"] == "downloaded"
    assert (dataset.obs_dim, dataset.act_dim, dataset.n_episodes, dataset.n_transitions) == (40, 5, 2, 18)


def test_ogbench_wrong_dims_refused(server, data, capsys):
    write_ogbench_npz(server.root / "scene-play-v0.npz", obs_dim=37)  # cube-double's size
    write_ogbench_npz(server.root / "scene-play-v0-val.npz", obs_dim=37)
    code, _, err = run_cli(capsys, "data", "download", "scene-play-v0")
    assert code == 2 and "observations have 37 dims" in err
    assert files_in(data) == []


def test_ogbench_missing_or_invalid_validation_file_is_refused(server, data, capsys):
    write_ogbench_npz(server.root / "scene-play-v0.npz")
    code, _, err = run_cli(capsys, "data", "download", "scene-play-v0")
    assert code == 2 and "scene-play-v0-val.npz" in err and "404" in err
    assert not (data / "scene-play-v0-val.npz").exists() and not (data / "scene-play-v0-val.npz.part").exists()

    (server.root / "scene-play-v0-val.npz").write_bytes(b"garbage" * 100)
    code, _, err = run_cli(capsys, "data", "download", "scene-play-v0")
    assert code == 2 and "npz" in err and "Traceback" not in err
    assert "scene-play-v0-val.npz" not in files_in(data)
    assert not any(name.endswith(".part") for name in files_in(data))


def test_ogbench_single_task_downloads_the_shared_file(server, data):
    write_ogbench_npz(server.root / "scene-play-v0.npz")
    write_ogbench_npz(server.root / "scene-play-v0-val.npz", seed=1)
    found = fetch(get_task("scene-play-singletask-task2-v0"))
    assert found.path == data.resolve() / "scene-play-v0.npz"
    assert (data / "scene-play-v0-val.npz").is_file()


# --- Minari ---------------------------------------------------------------------------------------------------

MINARI_ID = "mujoco/hopper/medium-v0"
MINARI_RECORD = "minari-mujoco--hopper--medium-v0.source.json"


@pytest.fixture(scope="module")
def minari_templates(tmp_path_factory):
    """Two versions (a, b) of a tiny real Minari dataset for MINARI_ID, made once with minari itself."""
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    roots = {}
    for version, seed in (("a", 0), ("b", 1)):
        root = tmp_path_factory.mktemp(f"minari-{version}")
        rng = np.random.default_rng(seed)
        buffers = [
            EpisodeBuffer(
                observations=rng.normal(size=(6, 11)).astype(np.float32),
                actions=rng.uniform(-1, 1, size=(5, 3)).astype(np.float32),
                rewards=np.ones(5),
                terminations=np.array([False] * 4 + [e == 0]),
                truncations=np.array([False] * 4 + [e == 1]),
            )
            for e in range(2)
        ]
        with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mp.setenv("MINARI_DATASETS_PATH", str(root))
            minari.create_dataset_from_buffers(
                MINARI_ID, buffers,
                observation_space=gym.spaces.Box(-np.inf, np.inf, (11,), np.float32),
                action_space=gym.spaces.Box(-1, 1, (3,), np.float32),
            )
        roots[version] = root
    return roots


@pytest.fixture
def fake_minari(monkeypatch, minari_templates, data):
    """minari.download_dataset replaced by a copy of template ``state.version`` into $MINARI_DATASETS_PATH."""
    import minari

    state = SimpleNamespace(version="a", calls=[], fail=None)

    def fake_download(dataset_id, force_download=False):
        state.calls.append((dataset_id, force_download))
        if state.fail:
            raise state.fail
        dest = Path(os.environ["MINARI_DATASETS_PATH"]) / dataset_id
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(minari_templates[state.version] / dataset_id, dest)

    monkeypatch.setattr(minari, "download_dataset", fake_download)
    return state


def minari_file_hashes(dataset_id: str) -> dict:
    root = Path(os.environ["MINARI_DATASETS_PATH"]) / dataset_id
    return {str(p.relative_to(root)): sha256_of(p) for p in root.rglob("*") if p.is_file()}


def test_minari_download_pins_sha256_in_data_dir(fake_minari, data, capsys):
    code, out, err = run_cli(capsys, "data", "download", "hopper-medium-v2", "--source", "minari")
    assert code == 0, err
    assert fake_minari.calls == [(MINARI_ID, True)]
    assert "2 episodes, 10 transitions" in out
    record = json.loads((data / MINARI_RECORD).read_text())
    assert record["minari_id"] == MINARI_ID
    assert record["sha256"] == minari_file_hashes(MINARI_ID)
    assert "data/main_data.hdf5" in record["sha256"]

    dataset = load_task_dataset("hopper-medium-v2")  # found locally in Minari's dir now
    assert dataset.source["kind"] == "minari" and dataset.source["minari_id"] == MINARI_ID

    # the same dataset again: accepted
    assert run_cli(capsys, "data", "download", "hopper-medium-v2", "--source", "minari")[0] == 0


def test_minari_changed_dataset_refused_on_second_download(fake_minari, data, capsys):
    assert run_cli(capsys, "data", "download", "hopper-medium-v2", "--source", "minari")[0] == 0
    record_before = (data / MINARI_RECORD).read_text()

    fake_minari.version = "b"
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2", "--source", "minari")
    assert code == 2
    assert "differs from the copy pinned earlier" in err and "data/main_data.hdf5" in err
    assert (data / MINARI_RECORD).read_text() == record_before
    # the refused copy must not be picked up by the loaders afterwards
    assert locate(get_task("hopper-medium-v2")) is None
    with pytest.raises(FrozenDTError, match="no dataset for hopper-medium-v2"):
        load_task_dataset("hopper-medium-v2")


def test_minari_download_via_load_task_dataset(fake_minari, data):
    with pytest.raises(FrozenDTError, match="no dataset for hopper-medium-v2"):
        load_task_dataset("hopper-medium-v2")
    dataset = load_task_dataset("hopper-medium-v2", download=True, download_source="minari")
    assert fake_minari.calls == [(MINARI_ID, True)]
    assert dataset.source["kind"] == "minari" and dataset.source["task"] == "hopper-medium-v2"
    assert (dataset.obs_dim, dataset.act_dim, dataset.n_episodes) == (11, 3, 2)
    assert (data / MINARI_RECORD).is_file()


def test_minari_client_failure_is_a_clear_error(fake_minari, data, capsys):
    fake_minari.fail = ConnectionError("no route to host")
    code, _, err = run_cli(capsys, "data", "download", "hopper-medium-v2", "--source", "minari")
    assert code == 2
    assert "Minari download of 'mujoco/hopper/medium-v0' failed (ConnectionError: no route to host)" in err
    assert files_in(data) == []
