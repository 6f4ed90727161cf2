"""How long each worker ran, as what: the GPU-hours a cost report prices.

A span starts when a worker registers and ends when it is gone (evicted,
lost, deleted). Ended spans are kept in the fleet journal; a running
worker's span ends "now" when a report is made. The SKU comes from the
gateway's configuration of the worker's pool, not from the agent, which
could claim anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

HOUR_S = 3600.0


@dataclass(frozen=True)
class WorkerSpan:
    worker_id: str
    pool: str
    priority: str
    """spot | on-demand"""
    sku: str | None
    zone: str | None
    start: float
    end: float | None = None
    """None while the worker runs."""
    end_reason: str | None = None

    def seconds_in(self, since: float, until: float, now: float) -> float:
        """Seconds of this span inside [since, until); a running span ends at `now`."""
        end = self.end if self.end is not None else now
        return max(0.0, min(end, until) - max(self.start, since))

    def hours(self, since: float, until: float, now: float) -> Iterator[tuple[float, float]]:
        """(start of a UTC hour, seconds of this span in it) for each hour it touches in
        [since, until); Unix time has no leap seconds, so hours are multiples of 3600."""
        end = min(self.end if self.end is not None else now, until)
        at = max(self.start, since)
        while at < end:
            hour = at - at % HOUR_S
            upto = min(hour + HOUR_S, end)
            yield hour, upto - at
            at = upto

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerSpan:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


WORKER_SPAN_COLUMNS = tuple(WorkerSpan.__dataclass_fields__)
