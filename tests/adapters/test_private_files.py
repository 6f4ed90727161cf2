"""Local state (cached answers, registry, journal, worker logs, the dev key) is owner-only.

Every check runs under umask 022, the usual default, under which files are
0644 and folders 0755 unless the code sets their modes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spotgate import dev_command
from spotgate.adapters.local.private_files import private_database, private_dir, private_file
from spotgate.adapters.local.process_compute import LocalProcessCompute, WorkerSpec
from spotgate.adapters.local.sqlite_cache_store import SqliteCacheStore
from spotgate.adapters.local.sqlite_fleet_journal import SqliteFleetJournal
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import Worker
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "project" / ".spotgate"  # neither folder exists yet


def _assert_private_database(path: Path) -> None:
    """The database and the WAL side files SQLite made next to it (it is open: they exist)."""
    assert _mode(path.parent) == 0o700
    assert _mode(path) == 0o600
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        assert side.exists(), f"{side.name} missing: is the store still open in WAL mode?"
        assert _mode(side) == 0o600, side.name


async def test_the_response_cache_is_private(data_dir: Path) -> None:
    store = SqliteCacheStore(data_dir / "cache.sqlite3", max_bytes=1 << 20)
    try:
        await store.put("k", b"a cached answer, in clear text", 60)
        assert await store.get("k") is not None
        _assert_private_database(data_dir / "cache.sqlite3")
        assert _mode(data_dir.parent) == 0o700  # created here too: private as well
    finally:
        await store.close()


def test_the_worker_registry_is_private(data_dir: Path) -> None:
    store = SqliteWorkerStore(data_dir / "spotgate.sqlite3")
    try:
        store.put(Worker(id="w1", pool="default", model="m", engine="sim", url="http://x"))
        _assert_private_database(data_dir / "spotgate.sqlite3")
    finally:
        store.close()


def test_the_fleet_journal_is_private(data_dir: Path) -> None:
    with SqliteFleetJournal(data_dir / "fleet-journal.sqlite3") as journal:
        journal.record_eviction("default", "w1", "1", 1.0)
        _assert_private_database(data_dir / "fleet-journal.sqlite3")


def test_files_left_by_an_older_version_are_tightened(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    for name in ("spotgate.sqlite3", "spotgate.sqlite3-wal", "spotgate.sqlite3-shm"):
        (data_dir / name).touch(mode=0o644)
    private_database(data_dir / "spotgate.sqlite3")
    for name in ("spotgate.sqlite3", "spotgate.sqlite3-wal", "spotgate.sqlite3-shm"):
        assert _mode(data_dir / name) == 0o600, name
    assert _mode(data_dir) == 0o755  # a folder that already existed is the user's to choose


def test_memory_databases_touch_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert private_database(":memory:") == ":memory:"
    assert list(tmp_path.iterdir()) == []


def test_private_dir_and_file(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "a" / "b")
    assert _mode(tmp_path / "a") == 0o700 and _mode(folder) == 0o700
    path = private_file(folder / "c.log")
    assert path.read_bytes() == b"" and _mode(path) == 0o600
    path.write_bytes(b"kept")
    assert private_file(path).read_bytes() == b"kept"  # never truncates


def test_the_dev_connection_file_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / ".spotgate" / "dev.json"
    monkeypatch.setattr(dev_command, "DEV_CONNECTION_FILE", target)
    dev_command._write_connection_file("http://127.0.0.1:1", "sk-secret", "admin-secret")
    assert json.loads(target.read_text())["api_key"] == "sk-secret"
    assert _mode(target.parent) == 0o700 and _mode(target) == 0o600


async def test_worker_logs_are_private(data_dir: Path) -> None:
    runtime = build_runtime(Settings(cache_backend="off"), InMemoryWorkerStore())
    compute = LocalProcessCompute(
        runtime.registry,
        control_plane_url="http://127.0.0.1:9",  # nothing listens: the worker is stopped anyway
        fleet_token="token",
        log_dir=data_dir / "logs",
        stop_grace_s=5,
    )
    worker_id = await compute.launch(WorkerSpec("default", "m", "sim"))
    log_path = compute.log_path(worker_id)
    try:
        deadline = time.monotonic() + 30
        while compute._launched.get(worker_id) is not None and (
            compute._launched[worker_id].process is None
        ):
            assert time.monotonic() < deadline, "the worker process never started"
            await asyncio.sleep(0.02)
        assert log_path.exists()
        assert _mode(data_dir) == 0o700
        assert _mode(log_path.parent) == 0o700
        assert _mode(log_path) == 0o600
    finally:
        with contextlib.suppress(Exception):
            await compute.shutdown()
        await runtime.close()
