"""Fixtures for the Azure adapters: real Azurite queue and blob services on free loopback ports."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process_group, wait_listening

ROOT = Path(__file__).resolve().parents[3]
AZURITE_QUEUE = ROOT / "node_modules" / ".bin" / "azurite-queue"
AZURITE_BLOB = ROOT / "node_modules" / ".bin" / "azurite-blob"
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


@dataclass(frozen=True)
class AzuriteBlob:
    blob_endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    connection_string: str
    log_path: Path


@contextlib.contextmanager
def running_azurite(service: str, workspace: Path) -> Iterator[tuple[str, Path]]:
    """One Azurite service (`queue` or `blob`), in memory; yields its endpoint and log.

    Stopped by its process group, whatever the test did.
    """
    binary = {"queue": AZURITE_QUEUE, "blob": AZURITE_BLOB}[service]
    if not binary.exists():
        pytest.fail(
            f"{binary.relative_to(ROOT)} is missing: run `make test` "
            "(it runs npm install) or `npm install` in the repository root."
        )
    log_path = workspace / f"azurite-{service}.log"
    port = free_port()
    command = [
        str(binary),
        "--silent",
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        f"--{service}Host",
        "127.0.0.1",
        f"--{service}Port",
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
        wait_listening(port, process, log_path, f"azurite-{service}", AZURITE_START_TIMEOUT_S)
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", log_path
    finally:
        stop_process_group(process, grace_s=5.0)


def _connection_string(service: str, endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};{service}Endpoint={endpoint};"
    )


@pytest.fixture(scope="session")
def azurite_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteQueue]:
    """One in-memory Azurite queue service for the session."""
    with running_azurite("queue", tmp_path_factory.mktemp("azurite")) as (endpoint, log_path):
        yield AzuriteQueue(endpoint, _connection_string("Queue", endpoint), log_path)


@pytest.fixture(scope="session")
def azurite_blob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteBlob]:
    """One in-memory Azurite blob service for the session."""
    with running_azurite("blob", tmp_path_factory.mktemp("azurite-blob")) as (endpoint, log_path):
        yield AzuriteBlob(endpoint, _connection_string("Blob", endpoint), log_path)
