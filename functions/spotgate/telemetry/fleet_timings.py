"""How long the fleet takes: provisioning, an eviction's drain, and its replacement.

Recorded as the registry changes, not computed from the journal at
collection: a histogram takes observations one by one (OpenTelemetry has no
histogram read at collection), and the journal keeps evictions and ended
worker spans but not the moment a worker turned ready. The registry's change
stream reaches every gateway instance (on Azure through the store sync), and
each interval is computed from the worker record's own times (asked for at
`registered_at`, ready or gone at `state_changed_at`, noticed at the
eviction's `reported_at`), not from when this instance heard of it; so every
instance records the same intervals, as the fleet queries expect of fleet
figures. An instance records only what it saw happen: a worker first seen
ready was provisioned before it watched, and counts for nothing.

- provisioning: from the provision request (`expect`) to the worker ready;
- notice to drain: from an eviction notice (the worker stops getting
  requests at that moment) to the worker gone, its requests finished or the
  platform's deadline reached;
- notice to replacement: from an eviction notice to the next worker of the
  same pool turning ready, paired oldest notice first; a notice with no
  replacement within `replacement_window_s` (the pool shrank instead) is
  dropped rather than paired with a much later scale-up.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque

from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import Worker, WorkerState
from spotgate.telemetry.metric_specs import NOTICE_TO_DRAIN, NOTICE_TO_REPLACEMENT, PROVISIONING
from spotgate.telemetry.recorder import Recorder

log = logging.getLogger("spotgate.telemetry")

REPLACEMENT_WINDOW_S = 3600.0
REMEMBER = 10_000


class FleetTimings:
    def __init__(
        self,
        registry: WorkerRegistry,
        recorder: Recorder,
        *,
        replacement_window_s: float = REPLACEMENT_WINDOW_S,
    ) -> None:
        self._recorder = recorder
        self._window_s = replacement_window_s
        self._states: dict[str, WorkerState] = {w.id: w.state for w in registry.all()}
        self._notices: dict[str, deque[float]] = {}
        self._noticed: OrderedDict[tuple[str, str], bool] = OrderedDict()
        """(worker, event) -> whether its drain was recorded."""
        registry.subscribe(self.changed)

    def changed(self, worker: Worker) -> None:
        """The registry's listener: a change it announces must never fail for telemetry."""
        try:
            self._changed(worker)
        except Exception:
            log.exception("timing the change of worker %s failed", worker.id)

    def _changed(self, worker: Worker) -> None:
        before = self._states.get(worker.id)
        if worker.state == WorkerState.GONE:
            self._states.pop(worker.id, None)
        else:
            self._states[worker.id] = worker.state
        if worker.state == WorkerState.READY and before == WorkerState.PROVISIONING:
            self._ready(worker)
        self._evicted(worker)

    def _ready(self, worker: Worker) -> None:
        ready_at = worker.state_changed_at
        if worker.registered_at and ready_at >= worker.registered_at:
            labels = (worker.pool, worker.priority or "-")
            self._recorder.observe(PROVISIONING, ready_at - worker.registered_at, labels)
        notices = self._notices.get(worker.pool)
        while notices and ready_at - notices[0] > self._window_s:
            notices.popleft()
        if notices and notices[0] <= ready_at:
            noticed_at = notices.popleft()
            self._recorder.observe(NOTICE_TO_REPLACEMENT, ready_at - noticed_at, (worker.pool,))

    def _evicted(self, worker: Worker) -> None:
        eviction = worker.eviction
        if eviction is None or eviction.returns:
            return
        key = (worker.id, eviction.event_id)
        if key not in self._noticed:
            self._noticed[key] = False
            self._notices.setdefault(worker.pool, deque()).append(eviction.reported_at)
            while len(self._noticed) > REMEMBER:
                self._noticed.popitem(last=False)
        if worker.state == WorkerState.GONE and not self._noticed.get(key, True):
            self._noticed[key] = True
            drained_s = max(0.0, worker.state_changed_at - eviction.reported_at)
            self._recorder.observe(NOTICE_TO_DRAIN, drained_s, (worker.pool,))
