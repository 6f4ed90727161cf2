"""Requests this gateway has in flight per worker: what least-outstanding routing reads.

The vocabulary, used across the package: *in flight* is what one gateway
has open on one worker; *demand* is what a pool is asked for (requests
running, queued, batch backlog: `fleet.observation.PoolDemand`), which the
autoscaler sizes the pool by. Counted here rather than scraped from workers,
because it is exact and current on the hot path, where a scrape is seconds old.
"""

from __future__ import annotations

from collections import defaultdict


class InFlight:
    """Counts per worker id; `start` when a request is sent, `finish` when its answer ends."""

    def __init__(self) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)

    def start(self, worker_id: str) -> None:
        self._counts[worker_id] += 1

    def finish(self, worker_id: str) -> None:
        remaining = self._counts[worker_id] - 1
        if remaining > 0:
            self._counts[worker_id] = remaining
        else:
            del self._counts[worker_id]

    def of(self, worker_id: str) -> int:
        return self._counts.get(worker_id, 0)

    def total(self) -> int:
        return sum(self._counts.values())
