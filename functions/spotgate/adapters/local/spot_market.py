"""A stand-in for the spot market on one machine: capacity that can be refused, and evictions.

Locally nothing ever takes a VM back, so the fleet manager's hardest paths
would never run. This injects them on purpose: spot refused in some zones
(so the capacity mix falls back to on-demand and later returns), and random
evictions at a configurable rate, each delivered with notice through the
fake Scheduled Events endpoint, exactly as Azure delivers them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from spotgate.background import cancel_and_wait
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import SPOT
from spotgate.fleet.worker import WorkerState

log = logging.getLogger("spotgate.spot")

Evict = Callable[[str, float], object]

ANY_ZONE = "*"


class LocalSpotMarket:
    def __init__(
        self,
        registry: WorkerRegistry,
        evict: Evict,
        *,
        evictions_per_hour: float = 0.0,
        notice_s: float = 30.0,
        check_interval_s: float = 1.0,
        seed: int | None = None,
    ) -> None:
        """`evictions_per_hour` is per running spot worker, as spot eviction rates are quoted."""
        self._registry = registry
        self._evict = evict
        self.evictions_per_hour = evictions_per_hour
        self.notice_s = notice_s
        self._interval = check_interval_s
        self._rng = random.Random(seed)
        self._refused: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # capacity

    def available(self, zone: str | None) -> bool:
        return ANY_ZONE not in self._refused and (zone or "") not in self._refused

    def refuse(self, zone: str | None = None) -> None:
        """No spot in `zone` (None: anywhere) until restore()."""
        self._refused.add(zone or ANY_ZONE)

    def restore(self, zone: str | None = None) -> None:
        if zone is None:
            self._refused.clear()
        else:
            self._refused.discard(zone)

    def refused_zones(self) -> list[str]:
        return sorted(self._refused)

    # random evictions

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spot-market")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def tick(self) -> list[str]:
        """One draw per running spot worker; returns the workers evicted now."""
        if self.evictions_per_hour <= 0:
            return []
        chance = min(1.0, self.evictions_per_hour * self._interval / 3600.0)
        victims = [
            w.id
            for w in self._registry.all()
            if w.state == WorkerState.READY
            and w.priority == SPOT
            and w.eviction is None
            and self._rng.random() < chance
        ]
        for worker_id in victims:
            log.info("spot market evicts %s with %.0f s notice", worker_id, self.notice_s)
            try:
                self._evict(worker_id, self.notice_s)
            except Exception:  # a worker that just ended cannot be evicted; nothing lost
                log.debug("could not evict %s", worker_id, exc_info=True)
        return victims

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.tick()
