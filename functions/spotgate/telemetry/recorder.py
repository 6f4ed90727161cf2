"""The one way telemetry records a measurement, whichever backends receive it.

Code that measures (request metrics, fleet readings, fleet timings, monitor
ticks) talks to a `Recorder` with a `MetricSpec` and label values; a sink
turns that into its own instruments: Prometheus for `/metrics`,
OpenTelemetry for Application Insights. `Recorders` fans out to several,
so a process serves both from the same calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from spotgate.telemetry.metric_specs import MetricSpec

log = logging.getLogger("spotgate.telemetry")

Labels = tuple[str, ...]
"""Label values, in the order of the spec's `labels`."""
Reading = tuple[Labels, float]
Read = Callable[[], Iterable[Reading]]


class Recorder(Protocol):
    def add(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        """Count `value` more (a counter)."""
        ...

    def observe(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        """One observation (a histogram)."""
        ...

    def watch(self, spec: MetricSpec, read: Read) -> None:
        """`read()` gives the current values at each collection (a gauge, or a counter's
        running total); called by the sink's collector, never on a request's path."""
        ...


class Recorders:
    """Every sink gets every call; `watch` readings are taken once per sink's collection."""

    def __init__(self, sinks: Sequence[Recorder]) -> None:
        self._sinks = tuple(sinks)

    def add(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        for sink in self._sinks:
            sink.add(spec, value, labels)

    def observe(self, spec: MetricSpec, value: float, labels: Labels) -> None:
        for sink in self._sinks:
            sink.observe(spec, value, labels)

    def watch(self, spec: MetricSpec, read: Read) -> None:
        for sink in self._sinks:
            sink.watch(spec, read)


def safely(spec: MetricSpec, read: Read) -> list[Reading]:
    """The readings, or none when reading failed: a broken store must not break a scrape."""
    try:
        return list(read())
    except Exception:
        log.exception("reading %s failed", spec.name)
        return []
