"""Request metrics, one observation per finished request, plus each request's admission wait.

Counted from the same usage record the meter writes, so the dashboards and
the bill never disagree on what a request was. Labels are bounded: model and
worker come from the catalogue and the registry (never from a client's free
text: an unknown model is counted as "(unknown)"), status is the HTTP code.
"""

from __future__ import annotations

from spotgate.gateway.tenancy.usage import UsageRecord
from spotgate.telemetry.metric_specs import (
    ADMISSION_WAIT,
    CACHE_REQUESTS,
    REQUEST_DURATION,
    REQUESTS,
    SPILLOVER,
    TOKENS,
    TTFT,
)
from spotgate.telemetry.recorder import Recorder

UNKNOWN = "(unknown)"
NONE = "-"


def model_label(record: UsageRecord) -> str:
    """The served model when it resolved (it then has a pool), else "(unknown)"."""
    return record.model if record.pool is not None else UNKNOWN


class RequestMetrics:
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def observe(self, record: UsageRecord) -> None:
        recorder = self._recorder
        model = model_label(record)
        worker = record.worker_id or NONE
        recorder.add(REQUESTS, 1, (model, str(record.status), record.cache, worker))
        recorder.observe(REQUEST_DURATION, record.duration_ms / 1000, (model,))
        if record.status < 400:  # a whole answer's first token comes with the answer
            first_ms = record.ttft_ms if record.ttft_ms is not None else record.duration_ms
            recorder.observe(TTFT, first_ms / 1000, (model,))
        if record.prompt_tokens:
            recorder.add(TOKENS, record.prompt_tokens, ("prompt", model))
        if record.completion_tokens:
            recorder.add(TOKENS, record.completion_tokens, ("completion", model))
        recorder.add(CACHE_REQUESTS, 1, (record.cache,))
        if record.spillover:
            recorder.add(SPILLOVER, 1, (record.spillover,))

    def admitted(self, pool: str, waited_s: float) -> None:
        """A request's wait for a slot ended, granted or timed out."""
        self._recorder.observe(ADMISSION_WAIT, waited_s, (pool,))
