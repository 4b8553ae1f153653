"""Hostile run-side records read back: a stack's ``stack.json`` (its members are plain names inside the stack dir),
a download's ``<file>.source.json`` (a SHA-256, not silently ignored), a run's ``config.json``. Each is refused with
one message naming the file and the field."""

from __future__ import annotations

import json

import pytest

from frozen_dt.data.download import read_source_record, source_record_path
from frozen_dt.errors import FrozenDTError
from frozen_dt.run_dir import read_run_config
from frozen_dt.training.stack import STACK_FILE, STACK_FORMAT, read_stack


@pytest.mark.parametrize("record, field", [
    ({"format": STACK_FORMAT, "seeds": [0], "members": ["../../elsewhere"]}, "members[0]"),
    ({"format": STACK_FORMAT, "seeds": [0], "members": ["/abs"]}, "members[0]"),
    ({"format": STACK_FORMAT, "seeds": ["0"], "members": ["seed0"]}, "seeds[0]"),
    ({"format": STACK_FORMAT, "seeds": [0, 1], "members": ["seed0"]}, "pair one to one"),
    ({"format": STACK_FORMAT, "seeds": [0, 1], "members": ["seed0", "seed0"]}, "each member once"),
    ({"format": "other", "seeds": [0], "members": ["seed0"]}, "format"),
    ({"seeds": [0], "members": ["seed0"]}, "format: is missing"),
])
def test_a_bad_stack_record_is_refused(tmp_path, record, field):
    (tmp_path / STACK_FILE).write_text(json.dumps(record))
    with pytest.raises(FrozenDTError, match="stack.json") as error:
        read_stack(tmp_path)
    assert field in str(error.value)


@pytest.mark.parametrize("record, field", [({"sha256": "zz"}, "sha256"), ({"url": "x"}, "sha256: is missing"),
                                           ([], "the top level"), ({"sha256": "a" * 64, "url": 5}, "url")])
def test_a_bad_download_record_is_refused_not_ignored(tmp_path, record, field):
    data = tmp_path / "hopper_medium-v2.hdf5"
    source_record_path(data).write_text(json.dumps(record))
    with pytest.raises(FrozenDTError, match="source.json") as error:
        read_source_record(data)
    assert field in str(error.value)


def test_a_good_download_record_is_read(tmp_path):
    data = tmp_path / "hopper_medium-v2.hdf5"
    source_record_path(data).write_text(json.dumps({"sha256": "a" * 64, "url": "https://x/y"}))
    assert read_source_record(data)["url"] == "https://x/y"


@pytest.mark.parametrize("text, expect", [("[" * 50_000 + "]" * 50_000, "nested too deeply"), ("{", "not valid JSON"),
                                          ('{"args": []}', "no 'args'"), (b"\xff\xfe", "not valid JSON")])
def test_a_bad_run_config_is_refused(tmp_path, text, expect):
    path = tmp_path / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(FrozenDTError, match=expect):
        read_run_config(tmp_path)


@pytest.mark.parametrize("text", ["[1, 2]", '{"steps": "6"}', "[" * 50_000 + "]" * 50_000, '{"episodes": []}'])
def test_a_sweep_reads_a_bad_summary_or_eval_record_as_not_done(tmp_path, text):
    from frozen_dt.sweeps.jobs import run_state
    from frozen_dt.sweeps.spec import SweepRun

    probe = SweepRun({"task": "bit-xor"}, "p", tmp_path / "probe", 0, 6, command="probe")
    probe.run_dir.mkdir()
    (probe.run_dir / "summary.json").write_text(text)
    assert run_state(probe) == "new"
