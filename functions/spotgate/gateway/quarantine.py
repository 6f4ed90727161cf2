"""Requests that killed the workers serving them are refused, not sent to the next victim.

A "query of death" (a prompt that crashes the engine, an allocation that
exhausts its memory) looks like any worker crash to the gateway. Resending it
elsewhere, as a crash of a healthy worker would deserve, lets one request take
the pool down worker by worker; clients that retry (the OpenAI SDKs retry
502s twice by default) do the same. So the gateway resends only what a worker
certainly never started (see `WorkerUnreachable.sent`), and counts, per
request, the workers that died while serving it. A request with
`deaths_to_quarantine` deaths is refused with a 400 for `ttl_s`, logged once.

The fingerprint is the response cache's canonical key (model, messages,
parameters; not `stream` or `user`), so a retry with reordered keys or the
streamed form of the same question is recognised. It is computed only when
a worker died or something is already quarantined, so the healthy path
never pays for it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotgate.clock import Clock
from spotgate.errors import InvalidRequest
from spotgate.gateway.cache.key import request_key

log = logging.getLogger("spotgate.quarantine")


@dataclass
class _Record:
    first_at: float
    workers: list[str] = field(default_factory=list)
    logged: bool = False


class RequestQuarantine:
    def __init__(
        self,
        clock: Clock,
        *,
        deaths_to_quarantine: int = 2,
        ttl_s: float = 3600.0,
        max_entries: int = 10_000,
    ) -> None:
        self._clock = clock
        self._threshold = max(1, deaths_to_quarantine)
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._records: OrderedDict[str, _Record] = OrderedDict()

    @staticmethod
    def fingerprint(path: str, body: Mapping[str, Any]) -> str:
        try:
            return request_key(path, body, scope="quarantine")
        except (TypeError, ValueError):  # not encodable: nothing to recognise it by
            return ""

    def check(self, path: str, body: Mapping[str, Any]) -> None:
        """Raises the 400 if this request is quarantined; free while nothing is recorded."""
        if not self._records:
            return
        record = self._fresh(self.fingerprint(path, body))
        if record is not None and len(record.workers) >= self._threshold:
            raise self._refusal(len(record.workers))

    def worker_died(self, path: str, body: Mapping[str, Any], worker_id: str) -> bool:
        """Counts a death under this request; True once it is quarantined (logged then)."""
        key = self.fingerprint(path, body)
        if not key:
            return False
        record = self._fresh(key)
        if record is None:
            record = self._records[key] = _Record(self._clock.now())
            while len(self._records) > self._max_entries:
                self._records.popitem(last=False)
        if worker_id not in record.workers:
            record.workers.append(worker_id)
        self._records.move_to_end(key)
        quarantined = len(record.workers) >= self._threshold
        if quarantined and not record.logged:
            record.logged = True
            log.warning(
                "request %s quarantined for %.0f s: workers %s died while serving it (model %r)",
                key[:16],
                self._ttl_s,
                ", ".join(record.workers),
                body.get("model"),
            )
        return quarantined

    def refusal(self) -> InvalidRequest:
        return self._refusal(self._threshold)

    def _refusal(self, deaths: int) -> InvalidRequest:
        return InvalidRequest(
            f"This request was refused: {deaths} workers failed while serving it, so it is "
            "quarantined for a while. Check its size and parameters before sending it again.",
            code="request_quarantined",
        )

    def _fresh(self, key: str) -> _Record | None:
        record = self._records.get(key)
        if record is not None and self._clock.now() - record.first_at > self._ttl_s:
            del self._records[key]
            return None
        return record
