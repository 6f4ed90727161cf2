"""Passive worker health: a worker that just failed a request sits out a cooldown.

The registry learns of a dead worker from heartbeats or the compute provider
seconds later; this keeps the gateway from sending it more requests meanwhile.
"""

from __future__ import annotations

from spotgate.clock import Clock


class PassiveHealth:
    def __init__(self, clock: Clock, cooldown_s: float) -> None:
        self._clock = clock
        self._cooldown_s = cooldown_s
        self._benched_until: dict[str, float] = {}

    def failed(self, worker_id: str) -> None:
        self._benched_until[worker_id] = self._clock.now() + self._cooldown_s

    def succeeded(self, worker_id: str) -> None:
        if self._benched_until:
            self._benched_until.pop(worker_id, None)

    def available(self, worker_id: str) -> bool:
        if not self._benched_until:
            return True
        until = self._benched_until.get(worker_id)
        if until is None:
            return True
        if self._clock.now() >= until:
            del self._benched_until[worker_id]
            return True
        return False
