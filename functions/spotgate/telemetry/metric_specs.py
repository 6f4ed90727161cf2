"""Every metric spotgate emits, named once: `/metrics` and Application Insights read these.

A spec's `name` is what a query sees: the Prometheus sample name on
`/metrics` and the `name` column of Application Insights' `customMetrics`
(the alerts, the workbook and the fleet monitor's load query filter on it
and on `labels`, which arrive as `customDimensions`). Both sinks build their
instruments from these specs, so the two cannot name a metric differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    """Pushed increments (`Recorder.add`), or a running total read at collection (`watch`)."""
    HISTOGRAM = "histogram"
    GAUGE = "gauge"
    """A level read at collection (`watch`)."""


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    unit: str = ""
    buckets: tuple[float, ...] = ()
    """Prometheus buckets; Application Insights keeps sum, count, min and max instead."""


LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
FLEET_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)

# --- per request (the usage record the meter writes) ---
REQUESTS = MetricSpec(
    "spotgate_requests_total",
    Kind.COUNTER,
    "Requests finished, by model, HTTP status, cache result and worker.",
    ("model", "status", "cache", "worker"),
)
REQUEST_DURATION = MetricSpec(
    "spotgate_request_duration_seconds",
    Kind.HISTOGRAM,
    "Time from request received to the last byte (streams: to the stream's end).",
    ("model",),
    "s",
    LATENCY_BUCKETS,
)
TTFT = MetricSpec(
    "spotgate_ttft_seconds",
    Kind.HISTOGRAM,
    "Time from request received to the first token (first SSE event or the answer).",
    ("model",),
    "s",
    TTFT_BUCKETS,
)
TOKENS = MetricSpec(
    "spotgate_tokens_total",
    Kind.COUNTER,
    "Tokens processed, by direction (prompt or completion) and model.",
    ("direction", "model"),
)
CACHE_REQUESTS = MetricSpec(
    "spotgate_cache_requests_total",
    Kind.COUNTER,
    "Requests by response-cache result: HIT, MISS or BYPASS.",
    ("result",),
)
SPILLOVER = MetricSpec(
    "spotgate_spillover_total",
    Kind.COUNTER,
    "Requests sent to a spillover endpoint, by target.",
    ("target",),
)
ADMISSION_WAIT = MetricSpec(
    "spotgate_admission_wait_seconds",
    Kind.HISTOGRAM,
    "Time a request waited for a worker slot in its pool (0 when one was free; timeouts too).",
    ("pool",),
    "s",
    WAIT_BUCKETS,
)

# --- this instance's load, per pool (the fleet monitor's pool-load query reads these) ---
QUEUE_DEPTH = MetricSpec(
    "spotgate_admission_queue_depth",
    Kind.GAUGE,
    "Requests waiting for a worker slot, per pool (this instance).",
    ("pool",),
)
GATEWAY_IN_FLIGHT = MetricSpec(
    "spotgate_gateway_in_flight",
    Kind.GAUGE,
    "Requests holding a worker slot (sent to a worker, streams until their end), per pool "
    "(this instance).",
    ("pool",),
)
BREAKER_OPEN = MetricSpec(
    "spotgate_breaker_open",
    Kind.GAUGE,
    "1 for each worker whose circuit breaker is open (taken out after failures).",
    ("worker",),
)

# --- the fleet (shared registry and journal: every instance reports the same) ---
POOL_WORKERS = MetricSpec(
    "spotgate_pool_workers",
    Kind.GAUGE,
    "Workers per pool by priority, zone and state (desired: the monitor's last target).",
    ("pool", "priority", "zone", "state"),
)
EVICTIONS = MetricSpec(
    "spotgate_evictions_total",
    Kind.COUNTER,
    "Spot eviction notices recorded in the fleet journal since this process started.",
    ("pool", "zone"),
)
SCALING_DECISIONS = MetricSpec(
    "spotgate_scaling_decisions_total",
    Kind.COUNTER,
    "Fleet monitor decisions recorded in the journal since this process started.",
    ("pool", "action"),
)
PROVISIONING = MetricSpec(
    "spotgate_provisioning_seconds",
    Kind.HISTOGRAM,
    "From asking the cloud for a worker to the worker registered ready.",
    ("pool", "priority"),
    "s",
    FLEET_BUCKETS,
)
NOTICE_TO_DRAIN = MetricSpec(
    "spotgate_eviction_notice_to_drain_seconds",
    Kind.HISTOGRAM,
    "From a spot eviction notice to the worker drained and gone (its requests finished or "
    "the platform took it).",
    ("pool",),
    "s",
    FLEET_BUCKETS,
)
NOTICE_TO_REPLACEMENT = MetricSpec(
    "spotgate_eviction_notice_to_replacement_seconds",
    Kind.HISTOGRAM,
    "From a spot eviction notice to the next worker of the same pool registered ready.",
    ("pool",),
    "s",
    FLEET_BUCKETS,
)
MONITOR_TICKS = MetricSpec(
    "spotgate_monitor_ticks_total",
    Kind.COUNTER,
    "Fleet monitor ticks run by this process, by pool and outcome (ok or failed).",
    ("pool", "outcome"),
)

ALL = (
    REQUESTS,
    REQUEST_DURATION,
    TTFT,
    TOKENS,
    CACHE_REQUESTS,
    SPILLOVER,
    ADMISSION_WAIT,
    QUEUE_DEPTH,
    GATEWAY_IN_FLIGHT,
    BREAKER_OPEN,
    POOL_WORKERS,
    EVICTIONS,
    SCALING_DECISIONS,
    PROVISIONING,
    NOTICE_TO_DRAIN,
    NOTICE_TO_REPLACEMENT,
    MONITOR_TICKS,
)
