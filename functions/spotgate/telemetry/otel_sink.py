"""The OpenTelemetry side of the recorder: what reaches Application Insights on Azure.

Instruments come from the Meter it is given, of the provider a host
configured (`adapters/azure/app_insights.py` on Azure) or a test's own; each
is made on first use. The Azure Monitor exporter sends counters and
histograms as increments per export interval (delta), gauges as their latest
value, each under the instrument's name with the labels as `customDimensions`.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    Observation,
)

from spotgate.telemetry.metric_specs import Kind, MetricSpec
from spotgate.telemetry.recorder import Labels, Read, safely

METER_NAME = "spotgate"


def attributes(spec: MetricSpec, labels: Labels) -> dict[str, str]:
    return dict(zip(spec.labels, labels, strict=True))


class OtelSink:
    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def add(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        counter = self._counters.get(spec.name)
        if counter is None:
            counter = self._meter.create_counter(spec.name, spec.unit, spec.help)
            self._counters[spec.name] = counter
        counter.add(value, attributes(spec, labels))

    def observe(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        histogram = self._histograms.get(spec.name)
        if histogram is None:
            histogram = self._meter.create_histogram(spec.name, spec.unit, spec.help)
            self._histograms[spec.name] = histogram
        histogram.record(value, attributes(spec, labels))

    def watch(self, spec: MetricSpec, read: Read) -> None:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, attributes(spec, labels)) for labels, value in safely(spec, read)
            ]

        if spec.kind == Kind.COUNTER:
            self._meter.create_observable_counter(spec.name, [observe], spec.unit, spec.help)
        else:
            self._meter.create_observable_gauge(spec.name, [observe], spec.unit, spec.help)
