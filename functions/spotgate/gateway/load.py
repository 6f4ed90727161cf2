"""Requests the gateway has outstanding per worker: the signal least-outstanding routing reads.

Counted in the gateway rather than scraped from workers, because it is exact
and current on the hot path, where a scrape is seconds old.
"""

from __future__ import annotations

from collections import defaultdict


class OutstandingRequests:
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
