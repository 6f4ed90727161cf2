"""Local compute: each "VM" is a `spotgate worker` process group (engine + agent).

It stands in for a VM Scale Set: launching takes an optional provisioning
delay, a crash is noticed the moment the process exits (as Azure notices a
deleted instance), and eviction goes through the fake Scheduled Events
endpoint so the agent drains exactly as on a spot VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from spotgate.fleet.registry import WorkerRegistry

log = logging.getLogger("spotgate.compute")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if the dev process dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class WorkerSpec:
    pool: str
    model: str
    engine: str
    engine_args: list[str] = field(default_factory=list)


@dataclass
class _Launched:
    spec: WorkerSpec
    port: int
    process: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None


class LocalProcessCompute:
    def __init__(
        self,
        registry: WorkerRegistry,
        *,
        control_plane_url: str,
        fleet_token: str,
        log_dir: Path,
        provision_delay_s: float = 0.0,
        heartbeat_interval_s: float = 2.0,
        host: str = "127.0.0.1",
    ) -> None:
        self._registry = registry
        self._control_plane_url = control_plane_url.rstrip("/")
        self._fleet_token = fleet_token
        self._log_dir = log_dir
        self._provision_delay_s = provision_delay_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._host = host
        self._launched: dict[str, _Launched] = {}
        self._counter = 0

    def workers(self) -> list[str]:
        return [wid for wid, w in self._launched.items() if w.process is not None]

    def log_path(self, worker_id: str) -> Path:
        return self._log_dir / f"{worker_id}.log"

    async def launch(self, spec: WorkerSpec) -> str:
        self._counter += 1
        worker_id = f"{spec.pool}-w{self._counter}"
        port = free_port(self._host)
        url = f"http://{self._host}:{port}"
        self._registry.expect(
            worker_id, pool=spec.pool, model=spec.model, engine=spec.engine, url=url
        )
        launched = _Launched(spec, port)
        self._launched[worker_id] = launched
        launched.watcher = asyncio.create_task(self._run(worker_id, launched))
        return worker_id

    async def _run(self, worker_id: str, launched: _Launched) -> None:
        if self._provision_delay_s:
            await asyncio.sleep(self._provision_delay_s)
        spec = launched.spec
        command = [
            sys.executable,
            "-m",
            "spotgate.cli",
            "worker",
            "--engine",
            spec.engine,
            "--model",
            spec.model,
            "--pool",
            spec.pool,
            "--host",
            self._host,
            "--port",
            str(launched.port),
            "--worker-id",
            worker_id,
            "--control-plane",
            self._control_plane_url,
            "--imds-url",
            f"{self._control_plane_url}/_local/imds/{worker_id}",
            "--heartbeat-interval",
            str(self._heartbeat_interval_s),
            *spec.engine_args,
        ]
        env = {**os.environ, "SPOTGATE_FLEET_TOKEN": self._fleet_token}
        self._log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(worker_id).open("ab") as log_file:
            launched.process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        code = await launched.process.wait()
        launched.process = None
        reason = "killed" if code in (-signal.SIGKILL, -signal.SIGTERM) else f"exit code {code}"
        log.info("worker %s process ended (%s)", worker_id, reason)
        self._registry.mark_gone(worker_id, f"process ended ({reason})")

    def kill(self, worker_id: str) -> bool:
        """Crash a worker with no notice: SIGKILL its whole process group."""
        launched = self._launched.get(worker_id)
        if launched is None or launched.process is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launched.process.pid, signal.SIGKILL)
        return True

    async def terminate(self, worker_id: str, grace_s: float = 10.0) -> None:
        launched = self._launched.get(worker_id)
        if launched is None:
            return
        process = launched.process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        if launched.watcher is not None:
            launched.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await launched.watcher

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.terminate(wid) for wid in list(self._launched)))
