"""A local fake of Azure's Scheduled Events endpoint, one document per worker.

The agent polls it exactly as it polls the instance metadata service on a
spot VM, so the eviction path it exercises locally is the one Azure runs.
Like Azure, the platform evicts at NotBefore whether or not the event was
acknowledged, and earlier once it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from spotgate.clock import Clock

Evict = Callable[[str], object]  # what it returns (killed or not) is not used
Schedule = Callable[[float, Callable[[], None]], None]


@dataclass
class _Document:
    incarnation: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)


class FakeScheduledEvents:
    def __init__(self, clock: Clock, evict: Evict, schedule: Schedule) -> None:
        self._clock = clock
        self._evict = evict
        self._schedule = schedule
        self._documents: dict[str, _Document] = {}

    def document(self, worker_id: str) -> dict[str, Any]:
        doc = self._documents.get(worker_id, _Document())
        return {"DocumentIncarnation": doc.incarnation, "Events": doc.events}

    def preempt(self, worker_id: str, notice_s: float = 30.0) -> dict[str, Any]:
        doc = self._documents.setdefault(worker_id, _Document())
        not_before = self._clock.now() + notice_s
        event = {
            "EventId": str(uuid.uuid4()).upper(),
            "EventType": "Preempt",
            "ResourceType": "VirtualMachine",
            "Resources": [worker_id],
            "EventStatus": "Scheduled",
            "NotBefore": formatdate(not_before, usegmt=True),
            "Description": "Spot VM is being evicted (local fault injection).",
            "EventSource": "Platform",
            "DurationInSeconds": -1,
        }
        doc.events.append(event)
        doc.incarnation += 1
        self._schedule(notice_s, lambda: self._platform_evicts(worker_id, event["EventId"]))
        return event

    def acknowledge(self, worker_id: str, event_ids: list[str]) -> int:
        """StartRequests: the VM allows the event to proceed now."""
        doc = self._documents.get(worker_id)
        if doc is None:
            return 0
        started = 0
        for event in doc.events:
            if event["EventId"] in event_ids and event["EventStatus"] == "Scheduled":
                event["EventStatus"] = "Started"
                started += 1
        if started:
            doc.incarnation += 1
            self._schedule(0.5, lambda: self._evict(worker_id))
        return started

    def _platform_evicts(self, worker_id: str, event_id: str) -> None:
        doc = self._documents.get(worker_id)
        if doc is None:
            return
        for event in doc.events:
            if event["EventId"] == event_id and event["EventStatus"] == "Scheduled":
                event["EventStatus"] = "Started"
                doc.incarnation += 1
                self._evict(worker_id)

    def forget(self, worker_id: str) -> None:
        self._documents.pop(worker_id, None)
