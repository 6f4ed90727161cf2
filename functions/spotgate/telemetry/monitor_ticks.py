"""The fleet monitor's ticks: a counter by pool and outcome, and one span per tick.

A tick is observe, decide, act, record: several activities, on Azure run on
whichever instance picks them up, so only the orchestrator knows whether the
tick as a whole succeeded. It reports each tick once, from its non-replaying
pass (the orchestrator replays its code on every event; see
`orchestrations/fleet_monitor.py`), with the orchestration's own start and end
times, which is what this records. The counter is pushed by the process that
ran the tick, so the queries sum it across instances.

The Azure host's orchestrator, registered once per process, reports to
`process_ticks()` (the global OpenTelemetry providers, which it configures
for Application Insights); the local stack hands its runtime's own recorder
to the orchestrator, so `/metrics` counts its ticks too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from spotgate.telemetry.metric_specs import MONITOR_TICKS
from spotgate.telemetry.otel_sink import METER_NAME, OtelSink
from spotgate.telemetry.recorder import Recorder

log = logging.getLogger("spotgate.telemetry")

TICK_SPAN = "fleet_monitor.tick"
OK, FAILED = "ok", "failed"
MAX_TEXT = 300


@dataclass(frozen=True)
class TickReport:
    pool: str
    tick: int
    started: datetime
    ended: datetime
    error: str | None = None
    action: str | None = None
    desired: int | None = None
    actual: int | None = None
    ready: int | None = None
    why: str | None = None

    @property
    def outcome(self) -> str:
        return FAILED if self.error is not None else OK


class TickListener(Protocol):
    def tick_finished(self, report: TickReport) -> None: ...


class MonitorTicks:
    def __init__(self, recorder: Recorder, tracer: Tracer) -> None:
        self._recorder = recorder
        self._tracer = tracer

    def tick_finished(self, report: TickReport) -> None:
        try:
            self._recorder.add(MONITOR_TICKS, 1, (report.pool, report.outcome))
            self._span(report)
        except Exception:  # the monitor's tick is done; its telemetry must not undo it
            log.exception("telemetry of a fleet monitor tick failed")

    def _span(self, report: TickReport) -> None:
        attributes: dict[str, str | int] = {
            "spotgate.pool": report.pool,
            "spotgate.tick": report.tick,
            "spotgate.outcome": report.outcome,
        }
        for name, value in (
            ("spotgate.action", report.action),
            ("spotgate.desired", report.desired),
            ("spotgate.actual", report.actual),
            ("spotgate.ready", report.ready),
            ("spotgate.why", report.why[:MAX_TEXT] if report.why else None),
        ):
            if value is not None:
                attributes[name] = value
        span = self._tracer.start_span(
            TICK_SPAN,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_nanoseconds(report.started),
        )
        if report.error is not None:
            span.set_status(Status(StatusCode.ERROR, report.error[:MAX_TEXT]))
        span.end(end_time=max(_nanoseconds(report.ended), _nanoseconds(report.started)))


def _nanoseconds(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


_process: list[MonitorTicks] = []


def process_ticks() -> MonitorTicks:
    """Ticks into the global OpenTelemetry providers (no-ops until a host configures them)."""
    if not _process:
        sink = OtelSink(metrics.get_meter(METER_NAME))
        _process.append(MonitorTicks(sink, trace.get_tracer(METER_NAME)))
    return _process[0]
