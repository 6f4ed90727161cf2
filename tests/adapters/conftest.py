"""Adapters talk to sockets, and the gateway runs them on uvloop, whose transports differ
from asyncio's in detail (types, closing, flow control): every async test here runs on both."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop

from tests.conftest import free_port, stop_process_group, wait_listening


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# --- Cosmos DB emulator (@vercel/cosmosdb-server) for the cache-store contract suite ---

ROOT = Path(__file__).resolve().parents[2]
COSMOSDB_SERVER = ROOT / "node_modules" / ".bin" / "cosmosdb-server"
# Wraps the server's point read so a missing item is 404, as on Cosmos DB (see the file).
COSMOSDB_SERVER_FIXES = Path(__file__).with_name("cosmosdb_server_fixes.cjs")
# The emulator key every Cosmos emulator accepts; published by Microsoft, not a secret.
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
COSMOS_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CosmosServer:
    url: str  # https://127.0.0.1:PORT, self-signed
    key: str
    log_path: Path


@contextlib.contextmanager
def running_cosmos_server(log_dir: Path) -> Iterator[tuple[CosmosServer, subprocess.Popen[bytes]]]:
    """Starts @vercel/cosmosdb-server on a free loopback port; stops it by pid afterwards."""
    if not COSMOSDB_SERVER.exists():
        pytest.fail(
            f"{COSMOSDB_SERVER.relative_to(ROOT)} is missing: run `make test` "
            "(it runs npm install) or `npm install` in the repository root."
        )
    port = free_port()
    log_path = log_dir / "server.log"
    command = [
        "node",
        "--require",
        str(COSMOSDB_SERVER_FIXES),
        str(COSMOSDB_SERVER),
        "-p",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_listening(port, process, log_path, "cosmosdb-server", COSMOS_START_TIMEOUT_S)
        yield CosmosServer(f"https://127.0.0.1:{port}", COSMOS_EMULATOR_KEY, log_path), process
    finally:
        stop_process_group(process, grace_s=5.0)


@pytest.fixture(scope="session")
def cosmos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosServer]:
    """One emulator for the session's contract suite."""
    with running_cosmos_server(tmp_path_factory.mktemp("cosmosdb-server")) as (server, _):
        yield server
