"""`spotgate fleet export` against a gateway served on loopback: files, counts, refusals."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spotgate.api.app import create_app
from spotgate.cli import app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings
from tests.conftest import serve_asgi

ADMIN_KEY = "admin-test"
API_KEY = "sk-test"
FILES = ("evictions", "capacity_failures", "decisions", "worker_spans", "worker_hours")


@pytest.fixture
def stack_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A gateway whose journal saw one eviction an hour ago, with a worker still serving."""
    monkeypatch.chdir(tmp_path)  # no .spotgate/dev.json to find keys in
    monkeypatch.delenv("SPOTGATE_ADMIN_KEY", raising=False)
    settings = Settings(
        api_keys=[API_KEY], admin_key=ADMIN_KEY, pools=["big"], pool_skus={"big": "ND96"}
    )
    runtime = build_runtime(settings, InMemoryWorkerStore())
    now = time.time()
    runtime.journal.record_eviction("big", "w0", "1", at=now - 3600)
    runtime.journal.record_eviction("big", "too-old", "1", at=now - 3 * 86400)
    runtime.registry.register("w1", pool="big", model="m", engine="sim", url="http://w1")
    with serve_asgi(create_app(runtime)) as url:
        yield url


def export(url: str, out: Path, *args: str, key: str | None = ADMIN_KEY) -> tuple[int, str]:
    env = {"SPOTGATE_ADMIN_KEY": key} if key else {}
    result = CliRunner().invoke(app, ["fleet", "--url", url, "export", str(out), *args], env=env)
    return result.exit_code, result.output


def test_csv_export_writes_the_files_and_shows_their_rows(stack_url: str, tmp_path: Path) -> None:
    out = tmp_path / "journal"
    code, output = export(stack_url, out, "--format", "csv", "--since", "24h")
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.csv" for name in FILES)
    with (out / "evictions.csv").open(newline="") as file:
        assert [row["worker_id"] for row in csv.DictReader(file)] == ["w0"]  # within 24h
    with (out / "worker_spans.csv").open(newline="") as file:
        [span] = list(csv.DictReader(file))
    assert (span["worker_id"], span["sku"], span["end"]) == ("w1", "ND96", "")
    lines = {line.split("│")[1].strip(): line for line in output.splitlines() if "│" in line}
    assert lines[str(out / "evictions.csv")].split("│")[2].strip() == "1"
    assert lines[str(out / "decisions.csv")].split("│")[2].strip() == "0"


def test_parquet_is_the_default_and_the_window_reaches_back(stack_url: str, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    code, output = export(stack_url, tmp_path, "--since", "7d")
    assert code == 0, output
    evictions = pq.read_table(tmp_path / "evictions.parquet").to_pylist()
    assert [e["worker_id"] for e in evictions] == ["too-old", "w0"]


def test_a_bad_since_is_refused_before_the_stack_is_asked(stack_url: str, tmp_path: Path) -> None:
    code, output = export(stack_url, tmp_path / "out", "--since", "last week")
    assert code == 2
    assert "neither a duration" in output
    assert not (tmp_path / "out").exists()


def test_without_the_admin_key_nothing_is_written(stack_url: str, tmp_path: Path) -> None:
    code, output = export(stack_url, tmp_path / "out", key=None)
    assert code == 1
    assert "HTTP 401" in output
    assert not (tmp_path / "out").exists()
