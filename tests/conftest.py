"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tests of many tiny forward passes: thread wake-ups dominate them on a small, busy CPU. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path, monkeypatch):
    """An empty data dir and an empty Minari dir; no mirror, so nothing outside the test is consulted."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("FROZEN_DT_DATA", str(path))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.delenv("FROZEN_DT_MIRROR", raising=False)
    return path
