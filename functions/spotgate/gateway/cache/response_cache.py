"""The response cache as the gateway sees it: a lookup and a store that cannot hurt a request.

The cache is an optimisation, so its failures must never become the
client's: a store that raises, hangs or returns garbage makes `get` answer
None (a miss) and `put` drop the entry, each within `timeout_s`. An outage
hits every request, so it is logged at most once per
`failure_log_interval_s` with the count of failures left unlogged, and once
more when the store recovers; never per request.

Freshness is checked here against the entry's own `created_at` and the
decision's TTL, not left to the store: the Cosmos emulator never expires
items, and a rule's TTL may have been shortened since the entry was written.

Every entry names the worker that produced it, and a hit is served only
while that worker is trusted: a worker later found bad (a registration that
failed its checks, garbage output) must not keep answering through the
cache for the rest of the TTL. Its entries are dropped as they are found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from spotgate.clock import Clock
from spotgate.gateway.cache.policy import CacheDecision, CachePolicy
from spotgate.gateway.cache.store import CachedResponse, CacheStore

T = TypeVar("T")

_LOG = logging.getLogger("spotgate.cache")


@dataclass(slots=True)
class CacheStats:
    """Counters for /metrics or tests; plain ints, updated on the event loop only."""

    hits: int = 0
    misses: int = 0
    expired: int = 0
    stored: int = 0
    skipped: int = 0
    failures: int = 0
    distrusted: int = 0


class ResponseCache:
    def __init__(
        self,
        store: CacheStore,
        policy: CachePolicy,
        clock: Clock,
        *,
        timeout_s: float = 0.05,
        failure_log_interval_s: float = 60.0,
        logger: logging.Logger = _LOG,
        trusted: Callable[[str], bool] = lambda _worker_id: True,
    ) -> None:
        """`trusted(worker_id)` says whether answers that worker produced may be served."""
        self._trusted = trusted
        self._store = store
        self._policy = policy
        self._clock = clock
        self._timeout_s = timeout_s
        self._log_interval_s = failure_log_interval_s
        self._log = logger
        self._healthy = True
        self._last_logged_at: float | None = None
        self._suppressed = 0
        self._last_recovery_logged_at: float | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.stats = CacheStats()

    @property
    def healthy(self) -> bool:
        """False from a failed store call until the next one that succeeds."""
        return self._healthy

    def decide(
        self,
        endpoint: str,
        body: Mapping[str, Any],
        request_headers: Mapping[str, str],
        *,
        scope: str = "",
        groups: Sequence[str] = (),
    ) -> CacheDecision:
        return self._policy.decide(endpoint, body, request_headers, scope=scope, groups=groups)

    async def get(self, decision: CacheDecision) -> CachedResponse | None:
        """The fresh stored answer for this request, or None (also when the store fails)."""
        if not decision.read or decision.key is None:
            return None
        try:
            raw = await self._bounded(self._store.get(decision.key))
        except Exception as exc:
            self._failed("get", exc)
            return None
        self._succeeded()
        if raw is None:
            self.stats.misses += 1
            return None
        try:
            response = CachedResponse.from_bytes(raw)
        except ValueError as exc:  # a bad entry, not a bad store: a miss, reported
            self._failed("decode", exc, store_down=False)
            self.stats.misses += 1
            return None
        if response.created_at + decision.ttl_s <= self._clock.now():
            self.stats.expired += 1
            self.stats.misses += 1
            return None
        if not self._trusted(response.worker_id):
            self.stats.distrusted += 1
            self.stats.misses += 1
            self._schedule(self._drop(decision.key))
            return None
        self.stats.hits += 1
        return response

    async def _drop(self, key: str) -> None:
        try:
            await self._bounded(self._store.delete(key))
        except Exception as exc:
            self._failed("delete", exc)

    async def put(self, decision: CacheDecision, response: CachedResponse) -> None:
        """Store a successful answer if the decision allows it and it fits; never raises."""
        if not decision.write or decision.key is None:
            return
        if response.status != 200 or len(response.body) > decision.max_entry_bytes:
            self.stats.skipped += 1
            return
        try:
            await self._bounded(self._store.put(decision.key, response.to_bytes(), decision.ttl_s))
        except Exception as exc:
            self._failed("put", exc)
            return
        self._succeeded()
        self.stats.stored += 1

    def schedule_put(self, decision: CacheDecision, response: CachedResponse) -> None:
        """`put` in the background, so the client never waits for the store.

        The task is kept referenced (the loop holds only weak ones) until done.
        """
        if not decision.write or decision.key is None:
            return
        self._schedule(self.put(decision, response))

    def _schedule(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Let scheduled puts finish (each is bounded by timeout_s), then close the store."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._store.close()

    async def _bounded(self, call: Awaitable[T]) -> T:
        async with asyncio.timeout(self._timeout_s):
            return await call

    def _due(self, last: float | None) -> bool:
        return last is None or self._clock.now() - last >= self._log_interval_s

    def _failed(self, operation: str, exc: Exception, *, store_down: bool = True) -> None:
        if store_down:
            self._healthy = False
        self.stats.failures += 1
        if not self._due(self._last_logged_at):
            self._suppressed += 1
            return
        what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
        suppressed = self._suppressed
        self._suppressed = 0
        self._last_logged_at = self._clock.now()
        self._log.warning(
            "response cache %s %s; serving without the cache "
            "(%d more failure(s) since the last report, next report in %.0f s at most)",
            operation,
            what,
            suppressed,
            self._log_interval_s,
        )

    def _succeeded(self) -> None:
        """Marks the store healthy; says so at most once per interval, as a flapping
        store would otherwise log a recovery per request."""
        if self._healthy:
            return
        self._healthy = True
        if self._due(self._last_recovery_logged_at):
            self._last_recovery_logged_at = self._clock.now()
            self._log.info("response cache store is answering again")
