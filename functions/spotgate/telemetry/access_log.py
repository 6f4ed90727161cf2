"""One JSON line per request, keyed by the request id the client saw.

The line is the request's usage record cut to what an on-call engineer greps
for: who (key id, never the key), what (model, path), where (worker, pool,
priority, cache), how it went (status, error code, tokens, TTFT, duration).
It carries no request or answer content and no credential: a record has none,
and the fields are chosen, not copied.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from spotgate.gateway.tenancy.usage import UsageRecord

ACCESS_LOGGER = "spotgate.access"
FIELDS = (
    "request_id",
    "key_id",
    "model",
    "path",
    "status",
    "error_code",
    "worker_id",
    "pool",
    "priority",
    "cache",
    "spillover",
    "prompt_tokens",
    "completion_tokens",
    "estimated",
    "ttft_ms",
    "duration_ms",
    "batch_id",
)

log = logging.getLogger(ACCESS_LOGGER)


def access_line(record: UsageRecord) -> dict[str, Any]:
    line: dict[str, Any] = {"at": round(record.at, 6), "event": "request"}
    for name in FIELDS:
        line[name] = getattr(record, name)
    return line


def write_access_line(record: UsageRecord) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(orjson.dumps(access_line(record)).decode())


class JsonLineFormatter(logging.Formatter):
    """The message as is when it is already a JSON object, else wrapped in one.

    Every line a JSON object, so a log pipeline (Log Analytics, `jq`) parses
    the access lines and the other records alike.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == ACCESS_LOGGER and message.startswith("{"):
            return message
        line: dict[str, Any] = {
            "at": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()
