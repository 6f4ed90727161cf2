"""Writes a worker's span to the fleet journal when the registry sees it go.

The registry forgets a gone worker after a few minutes, so its span must be
written when it goes, by whoever sees that: every gateway instance does (the
journal keeps one span per worker id), and each writes a given departure
once. A worker that went while no gateway ran is written when the recorder
starts. The SKU is the gateway's configuration of the pool (`sku_for`), not
the agent's word.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from spotgate.clock import Clock, SystemClock
from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import Worker, WorkerState
from spotgate.fleet.worker_spans import WorkerSpan

log = logging.getLogger("spotgate.fleet")

SkuFor = Callable[[str], str]
DEFAULT_REMEMBER = 10_000


def span_of(worker: Worker, sku_for: SkuFor, end: float | None = None) -> WorkerSpan:
    """Its span from registration (provisioning counts: the VM bills from then) to `end`.

    A record without a registration time (0) starts at its last change of
    state rather than in 1970, and one whose instances' clocks disagree never
    runs backwards.
    """
    start = worker.registered_at or worker.state_changed_at
    return WorkerSpan(
        worker_id=worker.id,
        pool=worker.pool,
        priority=worker.priority,
        sku=sku_for(worker.pool),
        zone=worker.zone,
        start=start if end is None else min(start, end),
        end=end,
        end_reason=worker.reason if end is not None else None,
    )


class WorkerSpanRecorder:
    """Subscribes to `registry`; remembers the newest `remember` departures it wrote."""

    def __init__(
        self,
        registry: WorkerRegistry,
        journal: FleetJournal,
        sku_for: SkuFor,
        *,
        clock: Clock | None = None,
        remember: int = DEFAULT_REMEMBER,
    ) -> None:
        self._journal = journal
        self._sku_for = sku_for
        self._clock = clock or SystemClock()
        self._remember = max(1, remember)
        self._written: OrderedDict[tuple[str, float], None] = OrderedDict()
        for worker in registry.all():
            self.on_change(worker)
        registry.subscribe(self.on_change)

    def on_change(self, worker: Worker) -> None:
        if worker.state != WorkerState.GONE:
            return
        end = worker.state_changed_at or self._clock.now()
        key = (worker.id, end)  # a worker that came back and went again goes once more
        if key in self._written:
            return
        try:
            self._journal.record_worker_span(span_of(worker, self._sku_for, end))
        except Exception:  # a lost span must not fail the registry change that announced it
            log.exception("could not record the span of worker %s", worker.id)
            return
        self._written[key] = None
        while len(self._written) > self._remember:
            self._written.popitem(last=False)


def live_spans(registry: WorkerRegistry, sku_for: SkuFor) -> list[WorkerSpan]:
    """Open spans (no end yet) of every worker the registry has not seen go."""
    return [span_of(w, sku_for) for w in registry.all() if w.state != WorkerState.GONE]


def spans_between(
    journal: FleetJournal,
    registry: WorkerRegistry,
    sku_for: SkuFor,
    since: float,
    until: float | None = None,
) -> list[WorkerSpan]:
    """Ended spans from the journal and live ones from the registry, one per worker, by start.

    A worker in both came back after going (a rebooted VM keeps its
    registration time): its live span covers the ended one, so it wins.
    """
    spans = {s.worker_id: s for s in journal.worker_spans(since, until)}
    for span in live_spans(registry, sku_for):
        if until is None or span.start < until:
            spans[span.worker_id] = span
    return sorted(spans.values(), key=lambda s: (s.start, s.worker_id))
