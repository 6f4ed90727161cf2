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
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spotgate.adapters.local.private_files import private_file
from spotgate.fleet.compute import CapacityError, Instance, ProvisionRequest
from spotgate.fleet.registration import join_address
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import SPOT

log = logging.getLogger("spotgate.compute")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL|CONNECTION_STRING", re.I)


def worker_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The dev process's environment minus anything that looks like a secret.

    A worker (and whatever code its engine runs) holds the fleet token and no
    more: never the admin key, API keys or a spillover endpoint's key that the
    operator exported for the gateway, as a GPU VM would not have them either.
    """
    return {k: v for k, v in parent.items() if not _SECRET_NAME.search(k)}


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM if the dev process dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class WorkerSpec:
    """How a pool's workers are started; `args_for(n)` gives the n-th worker its own flags."""

    pool: str
    model: str
    engine: str
    engine_args: list[str] = field(default_factory=list)
    args_for: Callable[[int], list[str]] | None = None

    def args(self, index: int) -> list[str]:
        return self.args_for(index) if self.args_for is not None else list(self.engine_args)


@dataclass
class _Launched:
    spec: WorkerSpec
    port: int
    priority: str
    zone: str | None
    index: int
    process: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None


class LocalProcessCompute:
    """The ComputeProvider of a local stack: provision starts processes, delete stops them.

    `spot_available` stands in for the spot market: while it says no for a zone,
    spot requests there fail with the same CapacityError a scale set raises.
    """

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
        specs: dict[str, WorkerSpec] | None = None,
        spot_available: Callable[[str | None], bool] = lambda _zone: True,
        stop_grace_s: float = 10.0,
    ) -> None:
        self._registry = registry
        self._control_plane_url = control_plane_url.rstrip("/")
        self._fleet_token = fleet_token
        self._log_dir = log_dir
        self._provision_delay_s = provision_delay_s
        self._heartbeat_interval_s = heartbeat_interval_s
        self._host = host
        self._specs = dict(specs or {})
        self._spot_available = spot_available
        self._stop_grace_s = stop_grace_s
        self._launched: dict[str, _Launched] = {}
        self._counter = 0
        self._stopping: set[asyncio.Task[None]] = set()

    def workers(self) -> list[str]:
        return [wid for wid, w in self._launched.items() if w.process is not None]

    def log_path(self, worker_id: str) -> Path:
        return self._log_dir / f"{worker_id}.log"

    # ComputeProvider

    async def provision(self, request: ProvisionRequest) -> list[str]:
        spec = self._specs.get(request.pool)
        if spec is None:
            raise LookupError(f"No worker spec for pool '{request.pool}' in this local stack.")
        if request.priority == SPOT and not self._spot_available(request.zone):
            raise CapacityError(
                "sku_not_available",
                f"Spot capacity is not available in zone {request.zone} (local fault injection).",
                priority=request.priority,
                zone=request.zone,
                code="SkuNotAvailable",
            )
        return [
            await self.launch(spec, priority=request.priority, zone=request.zone)
            for _ in range(request.count)
        ]

    async def delete(self, pool: str, worker_ids: Sequence[str]) -> list[str]:
        """Stop the processes in the background: a tick must not wait out a slow shutdown."""
        for worker_id in worker_ids:
            task = asyncio.create_task(self.terminate(worker_id, self._stop_grace_s))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        return list(worker_ids)

    async def instances(self, pool: str) -> list[Instance]:
        return [
            Instance(
                worker_id=worker_id,
                pool=launched.spec.pool,
                priority=launched.priority,
                zone=launched.zone,
                state="running" if launched.process is not None else "creating",
                private_ip=self._host,
                port=launched.port,
            )
            for worker_id, launched in self._launched.items()
            if launched.spec.pool == pool
        ]

    # processes

    async def launch(
        self, spec: WorkerSpec, *, priority: str = SPOT, zone: str | None = None
    ) -> str:
        self._counter += 1
        worker_id = f"{spec.pool}-w{self._counter}"
        port = free_port(self._host)
        url = f"http://{self._host}:{port}"
        self._registry.expect(
            worker_id,
            pool=spec.pool,
            model=spec.model,
            engine=spec.engine,
            url=url,
            priority=priority,
            zone=zone,
            address=join_address(self._host, port),
        )
        used = {w.index for w in self._launched.values() if w.spec.pool == spec.pool}
        index = next(i for i in range(len(used) + 1) if i not in used)
        launched = _Launched(spec, port, priority, zone, index)
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
            "--priority",
            launched.priority,
            *(["--zone", launched.zone] if launched.zone else []),
            *spec.args(launched.index),
        ]
        env = {**worker_environment(os.environ), "SPOTGATE_FLEET_TOKEN": self._fleet_token}
        try:
            with private_file(self.log_path(worker_id)).open("ab") as log_file:
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
        finally:
            self._launched.pop(worker_id, None)
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
        self._launched.pop(worker_id, None)
        self._registry.mark_gone(worker_id, "process stopped")

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.terminate(wid) for wid in list(self._launched)))
        await asyncio.gather(*self._stopping, return_exceptions=True)
