"""The process's metrics and access log, behind the one pipeline step that feeds them.

`Telemetry` owns a Prometheus registry with the request metrics (fed per
request by `TelemetryStep`, after metering made the request's usage record)
and the fleet collector (read at scrape time). `/metrics` renders it; on
Azure the same names go to Application Insights (adapters export them).
"""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from spotgate.gateway.serving import Outcome, RequestContext, ServingStep
from spotgate.gateway.tenancy.metering import USAGE
from spotgate.gateway.tenancy.usage import UsageRecord
from spotgate.telemetry.access_log import write_access_line
from spotgate.telemetry.fleet_metrics import FleetCollector
from spotgate.telemetry.request_metrics import RequestMetrics

log = logging.getLogger("spotgate.telemetry")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.registry)

    def watch_fleet(self, collector: FleetCollector) -> None:
        self.registry.register(collector)

    def finished(self, record: UsageRecord) -> None:
        write_access_line(record)
        self.requests.observe(record)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TelemetryStep(ServingStep):
    """Runs after metering, so it reads the request's usage record rather than making another."""

    name = "telemetry"

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def finished(self, context: RequestContext, outcome: Outcome) -> None:
        record = context.notes.get(USAGE)
        if not isinstance(record, UsageRecord):
            return
        try:
            self._telemetry.finished(record)
        except Exception:  # telemetry must never fail a request that was served
            log.exception("telemetry of request %s failed", record.request_id)
