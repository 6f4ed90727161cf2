"""`spotgate serve` refuses settings it cannot serve with, before it listens, and says what to set.

Each case runs the real command in a fresh process with a clean SPOTGATE_* environment;
none gets as far as binding a socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spotgate.adapters.local.process_compute import free_port


def spotgate_serve(workdir: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTGATE_")}
    env |= {"SPOTGATE_DATA_DIR": str(workdir / "data"), **settings}
    command = [sys.executable, "-m", "spotgate.cli", "serve", "--port", str(free_port()), *args]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=60)


def test_an_open_address_without_admin_key_or_fleet_token_is_refused(tmp_path: Path) -> None:
    result = spotgate_serve(tmp_path, "--host", "0.0.0.0", SPOTGATE_API_KEYS='["sk-x"]')
    assert result.returncode == 2, result.stderr
    assert "refuses to start" in result.stderr
    assert "SPOTGATE_ADMIN_KEY" in result.stderr and "SPOTGATE_FLEET_TOKEN" in result.stderr
    assert "Uvicorn running" not in result.stderr


def test_cosmos_without_an_endpoint_is_refused(tmp_path: Path) -> None:
    result = spotgate_serve(
        tmp_path,
        SPOTGATE_STORE_BACKEND="cosmos",
        SPOTGATE_ADMIN_KEY="a",
        SPOTGATE_FLEET_TOKEN="f",
    )
    assert result.returncode == 2, result.stderr
    assert "SPOTGATE_COSMOS_ENDPOINT" in result.stderr


def test_cosmos_without_a_shared_key_salt_is_refused(tmp_path: Path) -> None:
    """Replicas that each made up a salt would each reject the others' API keys."""
    result = spotgate_serve(
        tmp_path,
        SPOTGATE_STORE_BACKEND="cosmos",
        SPOTGATE_COSMOS_ENDPOINT="https://127.0.0.1:9/",  # refused before any connection
        SPOTGATE_ADMIN_KEY="a",
        SPOTGATE_FLEET_TOKEN="f",
    )
    assert result.returncode == 2, result.stderr
    assert "SPOTGATE_KEY_SALT" in result.stderr


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("gpu-1=http://10.1.2.3:8000", "outside the worker networks"),
        ("gpu-1=http://gpu-box:8000", "must be an IP address"),
        ("other/gpu-1=http://127.0.0.1:8000", "not in SPOTGATE_POOLS"),
        ("gpu-1", "ID=URL"),
    ],
)
def test_a_worker_machine_that_could_never_enrol_is_refused(
    tmp_path: Path, spec: str, says: str
) -> None:
    result = spotgate_serve(
        tmp_path, "--worker", spec, SPOTGATE_ADMIN_KEY="a", SPOTGATE_FLEET_TOKEN="f"
    )
    assert result.returncode == 2, result.stderr
    assert says in " ".join(result.stderr.replace("│", " ").split())  # typer draws a box
