"""Fixtures for the Azure adapters: a real Azurite (queue service only) on a free loopback port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process_group, wait_listening

ROOT = Path(__file__).resolve().parents[3]
AZURITE_QUEUE = ROOT / "node_modules" / ".bin" / "azurite-queue"
# Azurite's development account and key: published by Microsoft, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class AzuriteQueue:
    queue_endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    connection_string: str
    log_path: Path


@pytest.fixture(scope="session")
def azurite_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteQueue]:
    """One in-memory Azurite queue service for the session; stopped by its process group."""
    if not AZURITE_QUEUE.exists():
        pytest.fail(
            f"{AZURITE_QUEUE.relative_to(ROOT)} is missing: run `make test` "
            "(it runs npm install) or `npm install` in the repository root."
        )
    workspace = tmp_path_factory.mktemp("azurite")
    log_path = workspace / "azurite.log"
    port = free_port()
    command = [
        str(AZURITE_QUEUE),
        "--silent",
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(port),
    ]  # no --location: Azurite refuses it with --inMemoryPersistence; cwd is the tmp folder
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workspace,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_listening(port, process, log_path, "azurite-queue", AZURITE_START_TIMEOUT_S)
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};QueueEndpoint={endpoint};"
        )
        yield AzuriteQueue(endpoint, connection_string, log_path)
    finally:
        stop_process_group(process, grace_s=5.0)
