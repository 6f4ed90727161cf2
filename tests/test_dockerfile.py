"""The container image of `spotgate serve`: what the Dockerfile promises, read statically, and
(where Docker runs) built, started, probed and stopped as a platform would.

The smoke test needs a reachable Docker daemon and network access for the build (pip
downloads the dependencies); without a daemon it is skipped and says so.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from spotgate.adapters.local.process_compute import free_port

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|CONNECTION_STRING|SALT", re.I)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            found.append((name.upper(), " ".join(rest.split())))
    return found


def arguments(name: str) -> list[str]:
    return [rest for instruction, rest in instructions() if instruction == name]


def ignored_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [p.strip() for p in lines if p.strip() and not p.startswith("#")]


def is_ignored(path: str) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in ignored_patterns()
    )


def test_the_image_is_slim_python_311_and_runs_as_a_user_not_root() -> None:
    assert arguments("FROM") == ["python:3.11-slim"]
    users = arguments("USER")
    assert users, "no USER: the server would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    names = [name for name, _ in instructions()]
    assert names.index("USER") < names.index("CMD")


def test_it_serves_on_8000_with_a_liveness_healthcheck() -> None:
    assert arguments("EXPOSE") == ["8000"]
    (check,) = arguments("HEALTHCHECK")
    assert "http://127.0.0.1:8000/health/live" in check
    (command,) = arguments("CMD")
    assert command.startswith('["spotgate", "serve"')  # exec form: SIGTERM reaches spotgate
    assert '"--host", "0.0.0.0"' in command and '"--port", "8000"' in command


def test_no_secret_is_baked_into_the_image() -> None:
    for name in ("ENV", "ARG", "LABEL"):
        for rest in arguments(name):
            keys = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest) or rest.split()[:1]
            assert not [k for k in keys if SECRET_NAME.search(k)], f"{name} {rest}"
    copied = " ".join(arguments("COPY") + arguments("ADD"))
    assert ".env" not in copied and "local.settings.json" not in copied


def test_it_installs_the_serving_extras_without_vllm() -> None:
    installs = [r for r in arguments("RUN") if "pip install" in r]
    assert installs and all("[azure]" in r and "vllm" not in r for r in installs)


def test_the_build_context_leaves_out_local_state_and_keeps_what_the_build_copies() -> None:
    for local in (".venv", "node_modules", ".spotgate", ".env", ".git", ".cache", "notebooks"):
        assert is_ignored(local), f".dockerignore does not exclude {local}"
    for cached in ("functions/spotgate/__pycache__", ".pytest_cache", ".mypy_cache"):
        assert is_ignored(cached) or is_ignored(Path(cached).name), cached
    for rest in arguments("COPY"):
        for source in rest.split()[:-1]:
            assert (REPO / source).exists(), source
            assert not is_ignored(source), f"{source} is copied but .dockerignore drops it"


# --- built and run, where Docker is ------------------------------------------------------


def docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not on PATH: the image build and smoke test need a Docker daemon"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"the Docker daemon is not reachable: {probe.stderr.strip()[:200]}"
    return None


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    why = docker_unavailable()
    if why:
        pytest.skip(why)
    tag = f"spotgate-smoke:{uuid.uuid4().hex[:8]}"
    built = docker("build", "-t", tag, str(REPO), timeout=1200)
    assert built.returncode == 0, built.stderr[-4000:]
    try:
        yield tag
    finally:
        docker("rmi", "-f", tag)


@pytest.mark.integration
def test_the_image_serves_probes_and_stops_cleanly_on_sigterm(image: str) -> None:
    port = free_port()
    name = f"spotgate-smoke-{uuid.uuid4().hex[:8]}"
    env = {
        "SPOTGATE_API_KEYS": '["sk-smoke"]',
        "SPOTGATE_ADMIN_KEY": "sk-smoke-admin",
        "SPOTGATE_FLEET_TOKEN": "smoke-fleet-token",
    }
    flags = [item for key in env for item in ("-e", key)]
    started = subprocess.run(
        ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", *flags, image],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},  # -e NAME passes the value without it on the command line
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, docker("logs", name).stderr[-4000:]
            time.sleep(0.5)
        models = httpx.get(
            f"{url}/v1/models", headers={"Authorization": "Bearer sk-smoke"}, timeout=5
        )
        assert models.status_code == 200
        assert docker("exec", name, "id", "-u").stdout.strip() != "0"
        assert docker("stop", "-t", "30", name, timeout=60).returncode == 0
        exit_code = docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        assert exit_code == "0", docker("logs", name).stderr[-4000:]
    finally:
        docker("rm", "-f", name)
