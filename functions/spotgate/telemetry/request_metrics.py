"""Request metrics, one observation per finished request, in Prometheus' names and shapes.

Counted from the same usage record the meter writes, so the dashboards and
the bill never disagree on what a request was. Labels are bounded: model and
worker come from the catalogue and the registry (never from a client's free
text: an unknown model is counted as "(unknown)"), status is the HTTP code.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from spotgate.gateway.tenancy.usage import UsageRecord

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
UNKNOWN = "(unknown)"
NONE = "-"


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "spotgate_requests",
            "Requests finished, by model, HTTP status, cache result and worker.",
            ("model", "status", "cache", "worker"),
            registry=registry,
        )
        self.duration = Histogram(
            "spotgate_request_duration_seconds",
            "Time from request received to the last byte (streams: to the stream's end).",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "spotgate_ttft_seconds",
            "Time from request received to the first token (first SSE event or the answer).",
            ("model",),
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "spotgate_tokens",
            "Tokens processed, by direction (prompt or completion) and model.",
            ("direction", "model"),
            registry=registry,
        )
        self.cache = Counter(
            "spotgate_cache_requests",
            "Requests by response-cache result: HIT, MISS or BYPASS.",
            ("result",),
            registry=registry,
        )
        self.spillover = Counter(
            "spotgate_spillover",
            "Requests sent to a spillover endpoint, by target.",
            ("target",),
            registry=registry,
        )

    def observe(self, record: UsageRecord) -> None:
        # a model that resolved has a pool; anything else is what a client typed
        model = record.model if record.pool is not None else UNKNOWN
        worker = record.worker_id or NONE
        self.requests.labels(model, str(record.status), record.cache, worker).inc()
        self.duration.labels(model).observe(record.duration_ms / 1000)
        if record.status < 400:  # a whole answer's first token comes with the answer
            first_ms = record.ttft_ms if record.ttft_ms is not None else record.duration_ms
            self.ttft.labels(model).observe(first_ms / 1000)
        if record.prompt_tokens:
            self.tokens.labels("prompt", model).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.tokens.labels("completion", model).inc(record.completion_tokens)
        self.cache.labels(record.cache).inc()
        if record.spillover:
            self.spillover.labels(record.spillover).inc()
