"""Active health checks: GET `/health` on every ready worker every few seconds.

Passive health learns a worker is dead only by failing a client request on
it; heartbeats take seconds more. The probe finds a dead or wedged worker
between requests, so its breaker is already open when the next request
comes, and a recovered one is let back in after its cooldown. Draining
workers are not probed: they take no new requests, and their in-flight ones
must finish undisturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from spotgate.background import cancel_and_wait
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import Worker, WorkerState
from spotgate.gateway.breaker import BreakerState
from spotgate.gateway.health import PassiveHealth

log = logging.getLogger("spotgate.health")

Getter = Callable[[str, float], Awaitable[int]]


async def get_status(url: str, timeout_s: float) -> int:
    """The HTTP status of `GET url`, on a fresh connection closed right after.

    Raises TimeoutError, or OSError (ConnectionRefusedError when nothing
    listens). A fresh connection keeps probes off the request pool, and
    reading only the status line keeps a probe a few hundred bytes.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs are probed, not {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            status_line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    fields = status_line.split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise OSError(f"not an HTTP status line: {status_line[:80]!r}")
    return int(fields[1])


class HealthProbe:
    """A background task feeding probe results into `PassiveHealth`'s breakers.

    `start()` and `stop()` belong in the app's lifespan; `probe_once()` is the
    whole of one round, for tests.
    """

    def __init__(
        self,
        registry: WorkerRegistry,
        health: PassiveHealth,
        *,
        interval_s: float = 2.0,
        timeout_s: float = 1.0,
        get: Getter = get_status,
    ) -> None:
        self._registry = registry
        self._health = health
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._get = get
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="spotgate-health-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def probe_once(self) -> None:
        workers = self._registry.all()
        self._health.forget({w.id for w in workers if w.state != WorkerState.GONE})
        ready = [w for w in workers if w.state == WorkerState.READY and w.url]
        await asyncio.gather(*(self._probe(worker) for worker in ready))

    async def _run(self) -> None:
        while True:
            try:
                await self.probe_once()
            except Exception:  # a probe round must never kill the loop
                log.exception("health probe round failed")
            await asyncio.sleep(self._interval_s)

    async def _probe(self, worker: Worker) -> None:
        try:
            status = await self._get(worker.url + "/health", self._timeout_s)
        except (OSError, TimeoutError) as exc:
            self._failed(worker, repr(exc), fatal=isinstance(exc, ConnectionRefusedError))
            return
        except ValueError as exc:  # an address nothing can be sent to: as good as dead
            self._failed(worker, str(exc), fatal=True)
            return
        if status == 200:
            self._health.probe_succeeded(worker.id)
        else:
            self._failed(worker, f"HTTP {status}", fatal=False)

    def _failed(self, worker: Worker, why: str, *, fatal: bool) -> None:
        before = self._health.state(worker.id)
        self._health.failed(worker.id, fatal=fatal)
        if before is not BreakerState.OPEN and self._health.state(worker.id) is BreakerState.OPEN:
            log.warning("worker %s failed its health probe (%s): breaker open", worker.id, why)
