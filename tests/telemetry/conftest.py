"""OpenTelemetry as Application Insights would receive it, held in memory.

The SDK's in-memory reader and exporter stand where the Azure Monitor
exporters stand on Azure: they get the same instruments and spans, from
providers handed to the process's `Telemetry` (the global ones stay
untouched, so tests do not leak into each other).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spotgate.telemetry.telemetry import Telemetry


@dataclass
class Point:
    attributes: dict[str, Any]
    value: float | None = None
    """A counter's or a gauge's value."""
    count: int | None = None
    """A histogram's observations, `value` then their sum."""
    max: float | None = None


@dataclass
class Otel:
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    def telemetry(self) -> Telemetry:
        return Telemetry(self.meter_provider, self.tracer_provider)

    def metrics(self) -> dict[str, list[Point]]:
        """A collection (observable gauges are read now), by metric name."""
        found: dict[str, list[Point]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        found.setdefault(metric.name, []).append(_point(point))
        return found

    def value(self, name: str, **attributes: str) -> float:
        """The sum over points of `name` whose attributes include `attributes`."""
        return sum(
            (p.value or 0.0)
            for p in self.metrics().get(name, [])
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )

    def histogram(self, name: str, **attributes: str) -> Point:
        """The one histogram point of `name` with exactly `attributes`."""
        [point] = [p for p in self.metrics().get(name, []) if p.attributes == attributes]
        return point

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def _point(point: Any) -> Point:
    attributes = dict(point.attributes or {})
    if hasattr(point, "count") and hasattr(point, "sum"):
        return Point(attributes, float(point.sum), int(point.count), float(point.max))
    return Point(attributes, float(point.value))


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    yield Otel(reader, exporter, meters, tracers)
    meters.shutdown()
    tracers.shutdown()
