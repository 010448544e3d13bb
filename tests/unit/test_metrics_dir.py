"""`recsys serve`'s Prometheus multiprocess directory: fresh for each server, exported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.metrics_dir import MULTIPROC_ENV, prepare_multiprocess_dir


def test_each_server_gets_an_empty_directory_and_dead_servers_lose_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")  # unset for the function; restored after the test
    root = tmp_path / "prometheus"
    dead = root / "999999999"  # no such pid
    alive = root / "1"  # init: a running server's directory stays
    mine = root / str(os.getpid())  # a directory left by an earlier process with our pid
    for folder in (dead, alive, mine):
        folder.mkdir(parents=True)
        (folder / "counter_7.db").write_bytes(b"old")
    path = prepare_multiprocess_dir(tmp_path)
    assert path == mine
    assert os.environ[MULTIPROC_ENV] == str(mine.resolve())
    assert list(mine.iterdir()) == []
    assert not dead.exists()
    assert (alive / "counter_7.db").exists()


def test_an_operators_directory_is_kept_and_emptied_of_metric_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "gauge_livemax_12.db").write_bytes(b"old")
    (given / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    assert prepare_multiprocess_dir(tmp_path / "var") == given
    assert sorted(p.name for p in given.iterdir()) == ["notes.txt"]
