"""The sim dev stack as a test fixture: `spotgate dev --engine sim` in a subprocess tree.

Shared by every integration module that needs a whole stack (gateway, fleet
monitor, workers with their agents) on free loopback ports, as a user runs it.
Each module starts its own with the speed it needs (`sim_stack`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

KEY = "sk-integration-test"
ADMIN_KEY = "sk-integration-admin"


@dataclass
class Stack:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def fleet(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        return dict(httpx.get(f"{self.url}/fleet", headers=headers, timeout=5).json())

    def workers(self, state: str | None = None) -> list[dict[str, Any]]:
        return [w for w in self.fleet()["workers"] if state is None or w["state"] == state]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SPOTGATE_URL": self.url, "SPOTGATE_ADMIN_KEY": ADMIN_KEY}
        return subprocess.run(
            [sys.executable, "-m", "spotgate.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@contextlib.contextmanager
def sim_stack(
    workdir: Path,
    *,
    workers: int = 3,
    ttft_ms: float = 10,
    tokens_per_s: float = 400,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    tick_s: float = 0.5,
) -> Iterator[Stack]:
    """A running sim stack with `workers` ready workers; stopped (Ctrl-C, then kill) after.

    With `--autoscale` in `extra_args`, `workers` is how many to wait for (the
    minimum pool), not the pool's size.
    """
    port = free_port()
    log = workdir / "dev.log"
    env = {
        **os.environ,
        "SPOTGATE_DEV_API_KEY": KEY,
        "SPOTGATE_ADMIN_KEY": ADMIN_KEY,
        "SPOTGATE_HEARTBEAT_INTERVAL_S": "1",
        **(env or {}),
    }
    command = [sys.executable, "-m", "spotgate.cli", "dev", "--engine", "sim"]
    command += ["--workers", str(workers), "--port", str(port), "--tick", str(tick_s)]
    command += ["--ttft-ms", str(ttft_ms), "--tokens-per-s", str(tokens_per_s), *extra_args]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(f"http://127.0.0.1:{port}", process, log)
    try:

        def all_ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return len(stack.workers("ready")) == workers
            except httpx.HTTPError:
                return False

        wait_until(all_ready, 60, f"{workers} ready workers")
        yield stack
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
