"""`spotgate serve` as a container runs it: one process, settings from SPOTGATE_*, workers
that enrol themselves, and a clean stop on SIGTERM.

The server and a sim worker (`spotgate worker --engine sim`, with the real agent) run as
subprocesses on free loopback ports; the worker's agent polls a stand-in for Azure's
instance metadata on loopback too, so nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from spotgate.adapters.local.process_compute import free_port
from tests.conftest import serve_asgi, stop_process_group, wait_listening
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

API_KEY = "sk-serve-test"
ADMIN_KEY = "sk-serve-admin"
FLEET_TOKEN = "serve-fleet-token"
MODEL = "sim-model"
WORKER_ID = "serve-worker-1"


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any SPOTGATE_* of the caller's, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTGATE_")}
    return {**env, **settings}


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def admin(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=5).json()

    def worker_state(self, worker_id: str) -> str | None:
        found = [w for w in self.admin("/fleet")["workers"] if w["id"] == worker_id]
        return found[0]["state"] if found else None


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], cwd: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """`spotgate <command>` listening on `port`; stopped by its pid (and its group) after."""
    log = cwd / f"{command[3]}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_listening(port, process, log, command[3], timeout_s=60)
        yield process
    finally:
        if process.poll() is None:
            stop_process_group(process, grace_s=10)


@contextlib.contextmanager
def serve(workdir: Path, machines: dict[str, int]) -> Iterator[Served]:
    """`spotgate serve`, with `machines` (worker id: engine port) as the workers that may enrol."""
    port = free_port()
    env = clean_environment(
        SPOTGATE_DATA_DIR=str(workdir / "data"),
        SPOTGATE_API_KEYS=f'["{API_KEY}"]',
        SPOTGATE_ADMIN_KEY=ADMIN_KEY,
        SPOTGATE_FLEET_TOKEN=FLEET_TOKEN,
        SPOTGATE_MONITOR_TICK_S="0.5",
        SPOTGATE_HEARTBEAT_INTERVAL_S="1",
    )
    command = [sys.executable, "-m", "spotgate.cli", "serve", "--port", str(port)]
    command += ["--drain-timeout", "10"]
    for worker_id, worker_port in machines.items():
        command += ["--worker", f"{worker_id}=http://127.0.0.1:{worker_port}"]
    with running(command, env, workdir, port) as process:
        yield Served(f"http://127.0.0.1:{port}", process, workdir / f"serve-{port}.log")


@contextlib.contextmanager
def sim_worker(
    served: Served, imds: str, workdir: Path, worker_id: str, port: int
) -> Iterator[None]:
    """A sim engine and its agent, enrolling with the fleet token as a VM's agent does."""
    command = [sys.executable, "-m", "spotgate.cli", "worker", "--engine", "sim"]
    command += ["--model", MODEL, "--port", str(port), "--worker-id", worker_id]
    command += ["--control-plane", served.url, "--imds-url", imds, "--heartbeat-interval", "1"]
    command += ["--tokens-per-s", "20", "--ttft-ms", "10"]
    env = clean_environment(SPOTGATE_FLEET_TOKEN=FLEET_TOKEN)
    with running(command, env, workdir, port):
        wait_until(lambda: served.worker_state(worker_id) == "ready", 30, f"{worker_id} ready")
        yield


@pytest.fixture(scope="module")
def imds() -> Iterator[str]:
    """Azure's instance metadata as a worker outside Azure sees it: no events, no facts."""

    async def metadata(request: Request) -> JSONResponse:
        if request.url.path.endswith("scheduledevents"):
            return JSONResponse({"DocumentIncarnation": 0, "Events": []})
        return JSONResponse({})

    app = Starlette(routes=[Route("/metadata/{what}", metadata, methods=["GET", "POST"])])
    with serve_asgi(app) as url:
        yield url


@pytest.fixture(scope="module")
def worker_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, worker_port: int) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("serve"), {WORKER_ID: worker_port}) as running_server:
        yield running_server


@pytest.fixture(scope="module")
def enrolled(
    served: Served, imds: str, worker_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with sim_worker(served, imds, tmp_path_factory.mktemp("worker"), WORKER_ID, worker_port):
        yield WORKER_ID


def test_the_container_probes_answer(served: Served) -> None:
    assert httpx.get(f"{served.url}/health/live", timeout=5).status_code == 200

    def ready() -> bool:
        return httpx.get(f"{served.url}/health/ready", timeout=5).status_code == 200

    # ready once the in-process fleet monitor has decided, even with no worker yet
    wait_until(ready, 30, "/health/ready")
    body = httpx.get(f"{served.url}/health/ready", timeout=5).json()
    assert body["status"] == "ok" and "default" in body["pools"]


def test_models_answer_only_with_an_api_key(served: Served) -> None:
    assert httpx.get(f"{served.url}/v1/models", timeout=5).status_code == 401
    headers = {"Authorization": f"Bearer {API_KEY}"}
    listed = httpx.get(f"{served.url}/v1/models", headers=headers, timeout=5)
    assert listed.status_code == 200 and listed.json()["object"] == "list"


def test_no_worker_is_started_and_only_listed_machines_enrol(served: Served) -> None:
    assert {w["id"] for w in served.admin("/fleet")["workers"]} <= {WORKER_ID}

    def enrol(worker_id: str, token: str) -> int:
        body = {"id": worker_id, "pool": "default", "model": MODEL, "engine": "sim"}
        body["url"] = "http://127.0.0.1:9"
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{served.url}/fleet/workers"
        return httpx.post(url, json=body, headers=headers, timeout=5).status_code

    assert enrol("rogue", "not-the-token") == 401
    assert enrol("rogue", FLEET_TOKEN) == 403  # the token alone does not make a worker
    assert served.worker_state("rogue") is None


def test_an_enrolled_worker_serves_chat_completions(served: Served, enrolled: str) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=API_KEY, max_retries=0)
    assert MODEL in [m.id for m in client.models.list()]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert raw.headers["x-worker"] == enrolled
    answer = raw.parse()
    assert answer.choices[0].message.content
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say something."}],
        stream=True,
        max_tokens=5,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text


def test_sigterm_lets_a_stream_finish_then_exits_zero(imds: str, tmp_path: Path) -> None:
    port = free_port()
    with (
        serve(tmp_path, {"drain-worker": port}) as server,
        sim_worker(server, imds, tmp_path, "drain-worker", port),
    ):
        lines: list[str] = []
        first_token = threading.Event()

        def stream() -> None:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Tell a long story."}],
                "stream": True,
                "max_tokens": 40,  # two seconds at 20 tokens/s
                "ignore_eos": True,
            }
            headers = {"Authorization": f"Bearer {API_KEY}"}
            url = f"{server.url}/v1/chat/completions"
            with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        lines.append(line)
                        first_token.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first_token.wait(15), server.log.read_text()
        stopped_at = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        assert server.process.wait(15) == 0, server.log.read_text()
        took = time.monotonic() - stopped_at
        reader.join(5)
        assert lines[-1] == "data: [DONE]", "the stream was cut at SIGTERM"
        assert len(lines) > 20
        assert took < 10
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health/live", timeout=2)
