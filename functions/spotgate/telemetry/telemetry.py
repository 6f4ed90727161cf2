"""The process's metrics, traces and access log, behind the one pipeline step that feeds them.

`Telemetry` records every measurement twice through one `Recorders`: into
its Prometheus registry, which `/metrics` renders, and into OpenTelemetry
instruments, which reach Application Insights through the providers a host
configured before building the runtime (`adapters/azure/app_insights.py`);
the providers are the global ones unless a test hands in its own. Without a
configured (SDK) meter provider no instrument is made: the API's stand-in
would keep every instrument, and through its callbacks every runtime, alive.

Request metrics and the request's span come from `TelemetryStep` (the span
opens when the request is received and closes with the usage record metering
made), fleet readings and timings from `watch_fleet`, attempts on workers from
the worker client `traced` wraps.
"""

from __future__ import annotations

import logging

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from spotgate.fleet.registry import WorkerRegistry
from spotgate.gateway.serving import Outcome, RequestContext, ServingStep
from spotgate.gateway.tenancy.metering import USAGE
from spotgate.gateway.tenancy.usage import UsageRecord
from spotgate.gateway.upstream import UpstreamClient
from spotgate.telemetry.access_log import write_access_line
from spotgate.telemetry.fleet_metrics import FleetReadings
from spotgate.telemetry.fleet_timings import FleetTimings
from spotgate.telemetry.monitor_ticks import MonitorTicks
from spotgate.telemetry.otel_sink import METER_NAME, OtelSink
from spotgate.telemetry.prometheus_sink import PrometheusSink
from spotgate.telemetry.recorder import Recorder, Recorders
from spotgate.telemetry.request_metrics import RequestMetrics
from spotgate.telemetry.tracing import TRACER_NAME, RequestSpan, RequestTracing, TracedUpstream

log = logging.getLogger("spotgate.telemetry")
CONTENT_TYPE = CONTENT_TYPE_LATEST
SPAN = "telemetry.span"


class Telemetry:
    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        meters = meter_provider or metrics.get_meter_provider()
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME)
        sinks: list[Recorder] = [PrometheusSink(self.registry)]
        if isinstance(meters, SdkMeterProvider):
            sinks.append(OtelSink(meters.get_meter(METER_NAME)))
        self.recorder = Recorders(sinks)
        self.requests = RequestMetrics(self.recorder)
        self.tracing = RequestTracing(self.tracer)
        self.ticks = MonitorTicks(self.recorder, self.tracer)
        """The fleet monitor's tick listener, for an orchestrator run by this process."""

    def watch_fleet(self, readings: FleetReadings) -> None:
        readings.watch(self.recorder)
        FleetTimings(readings.registry, self.recorder)

    def traced(self, upstream: UpstreamClient, registry: WorkerRegistry) -> UpstreamClient:
        """`upstream` with a span per call, under the request's span, naming the worker."""

        def worker_of(url: str) -> str | None:
            for worker in registry.all():
                if worker.url and url.startswith(worker.url + "/"):
                    return worker.id
            return None

        return TracedUpstream(upstream, self.tracer, worker_of)

    def admitted(self, pool: str, waited_s: float) -> None:
        """Admission's wait listener: called on the request's path, so it never raises."""
        try:
            self.requests.admitted(pool, waited_s)
        except Exception:
            log.exception("recording an admission wait failed")

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

    async def received(self, context: RequestContext) -> None:
        try:
            context.notes[SPAN] = self._telemetry.tracing.started(context.request)
        except Exception:  # a request is served with or without its trace
            log.exception("tracing request %s failed", context.request.request_id)

    def finished(self, context: RequestContext, outcome: Outcome) -> None:
        record = context.notes.get(USAGE)
        usage = record if isinstance(record, UsageRecord) else None
        try:
            if usage is not None:
                self._telemetry.finished(usage)
            span = context.notes.pop(SPAN, None)
            if isinstance(span, RequestSpan):
                self._telemetry.tracing.finished(span, outcome, usage)
        except Exception:  # telemetry must never fail a request that was served
            log.exception("telemetry of request %s failed", context.request.request_id)
