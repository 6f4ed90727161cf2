"""The Prometheus side of the recorder: what `GET /metrics` renders.

prometheus_client appends `_total` to a counter's name itself, so a spec
named `spotgate_requests_total` is registered as `spotgate_requests` and
scraped under the spec's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from spotgate.telemetry.metric_specs import Kind, MetricSpec
from spotgate.telemetry.recorder import Labels, Read, safely


def base_name(spec: MetricSpec) -> str:
    return spec.name.removesuffix("_total") if spec.kind == Kind.COUNTER else spec.name


class PrometheusSink:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def add(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        counter = self._counters.get(spec.name)
        if counter is None:
            counter = Counter(base_name(spec), spec.help, spec.labels, registry=self._registry)
            self._counters[spec.name] = counter
        counter.labels(*labels).inc(value)

    def observe(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        histogram = self._histograms.get(spec.name)
        if histogram is None:
            histogram = Histogram(
                spec.name,
                spec.help,
                spec.labels,
                buckets=spec.buckets or Histogram.DEFAULT_BUCKETS,
                registry=self._registry,
            )
            self._histograms[spec.name] = histogram
        histogram.labels(*labels).observe(value)

    def watch(self, spec: MetricSpec, read: Read) -> None:
        self._registry.register(_Watched(spec, read))


class _Watched(Collector):
    def __init__(self, spec: MetricSpec, read: Read) -> None:
        self._spec = spec
        self._read = read

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected fresh each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        spec = self._spec
        family_type = CounterMetricFamily if spec.kind == Kind.COUNTER else GaugeMetricFamily
        family = family_type(base_name(spec), spec.help, labels=spec.labels)
        for labels, value in sorted(safely(spec, self._read)):
            family.add_metric(labels, value)
        yield family
