"""Passive worker health: what requests and probes reveal, kept as a breaker per worker.

The registry learns of a dead worker from heartbeats or the compute provider
seconds later; this keeps the gateway from sending it more requests
meanwhile. A breaker exists only for a worker that failed since it last
succeeded, so on the hot path (nobody failing) every call is one empty-dict test.
"""

from __future__ import annotations

from spotgate.clock import Clock
from spotgate.gateway.breaker import BreakerState, CircuitBreaker


class PassiveHealth:
    def __init__(
        self,
        clock: Clock,
        cooldown_s: float,
        *,
        failure_threshold: int = 3,
        max_cooldown_s: float = 60.0,
    ) -> None:
        self._clock = clock
        self._cooldown_s = cooldown_s
        self._threshold = failure_threshold
        self._max_cooldown_s = max_cooldown_s
        self._breakers: dict[str, CircuitBreaker] = {}

    def failed(self, worker_id: str, *, fatal: bool = False) -> None:
        """A request (or probe) failed; a `fatal` failure (refused connection, connection
        lost mid-response) opens the breaker at once."""
        breaker = self._breakers.get(worker_id)
        if breaker is None:
            breaker = self._breakers[worker_id] = CircuitBreaker(
                failure_threshold=self._threshold,
                cooldown_s=self._cooldown_s,
                max_cooldown_s=self._max_cooldown_s,
            )
        breaker.failed(self._clock.now(), fatal=fatal)

    def succeeded(self, worker_id: str) -> None:
        if self._breakers:
            self._breakers.pop(worker_id, None)

    def available(self, worker_id: str) -> bool:
        if not self._breakers:
            return True
        breaker = self._breakers.get(worker_id)
        return breaker is None or breaker.allows(self._clock.now())

    def attempt(self, worker_id: str) -> None:
        """The forwarder chose this worker: if its breaker is half-open, this is the trial."""
        if self._breakers:
            breaker = self._breakers.get(worker_id)
            if breaker is not None:
                breaker.attempt(self._clock.now())

    def probe_succeeded(self, worker_id: str) -> None:
        """A health probe answered: it may end a half-open breaker, never cut a cooldown
        short, and never clear request failures (a live /health says little about 5xx)."""
        breaker = self._breakers.get(worker_id)
        if breaker is not None and breaker.current(self._clock.now()) is BreakerState.HALF_OPEN:
            del self._breakers[worker_id]

    def state(self, worker_id: str) -> BreakerState:
        breaker = self._breakers.get(worker_id)
        return BreakerState.CLOSED if breaker is None else breaker.current(self._clock.now())

    def forget(self, keep: set[str]) -> None:
        """Drops the breakers of workers no longer in `keep` (they left the fleet)."""
        for worker_id in [w for w in self._breakers if w not in keep]:
            del self._breakers[worker_id]
