"""Simulated time: a clock the fleet code reads, and the queue of what happens next.

The fleet's own classes take a `Clock`; here it is the event queue's, which
jumps from one event to the next, so an hour of trace runs in seconds.
Events at the same moment run in the order they were scheduled.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Action = Callable[[], Awaitable[Any] | None]


@dataclass(slots=True)
class _Event:
    at: float
    action: Action
    cancelled: bool = False


class EventQueue:
    """Also the simulation's `Clock` (`now()`)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # (time, sequence, event) tuples: compared natively, far faster than dataclass order
        self._heap: list[tuple[float, int, _Event]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def at(self, when: float, action: Action) -> _Event:
        event = _Event(max(when, self._now), action)
        heapq.heappush(self._heap, (event.at, next(self._seq), event))
        return event

    def after(self, delay: float, action: Action) -> _Event:
        return self.at(self._now + delay, action)

    @staticmethod
    def cancel(event: _Event) -> None:
        event.cancelled = True

    def peek(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    async def run_until(self, end: float, on_step: Callable[[float], None] | None = None) -> None:
        while True:
            when = self.peek()
            if when is None or when > end:
                break
            _, _, event = heapq.heappop(self._heap)
            self._now = event.at
            result = event.action()
            if result is not None:
                await result
            if on_step is not None:
                on_step(self._now)
        self._now = max(self._now, end)
