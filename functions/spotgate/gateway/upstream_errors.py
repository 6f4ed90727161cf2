"""Worker error bodies rewritten into OpenAI's error shape.

vLLM answers `{"error": {"type": "BadRequestError", "code": 400, ...}}` (an
exception class name for a type, an integer code) and older builds a flat
`{"object": "error", ...}`; clients written against OpenAI switch on `type`
and expect `code` to be a string or null. So the type always comes from the
status, as OpenAI's own API sets it. A 4xx is about the client's request, so
its message (e.g. "maximum context length is 2048 tokens") is passed on; a
worker's 5xx, or a 401/403 (the worker refusing the gateway, not the client),
is the gateway's problem: the client gets a generic message and the log the
worker's.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from spotgate.errors import error_body, error_type_for

log = logging.getLogger("spotgate.upstream")

# a worker's 401/403/405/408 is about the gateway's request to it, not the client's
_CLIENT_STATUSES = frozenset({400, 404, 409, 413, 415, 422, 429})


def upstream_status(status: int) -> int:
    """The status the client gets for a worker's: the worker's own for client errors,
    502 for anything that is the gateway's or the worker's fault."""
    return status if status in _CLIENT_STATUSES else 502


def openai_error_body(status: int, raw: bytes) -> bytes:
    try:
        parsed: Any = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        parsed = {"message": raw[:500].decode("utf-8", "replace")}
    if not isinstance(parsed, dict):
        parsed = {}
    info = parsed.get("error") if isinstance(parsed.get("error"), dict) else parsed
    message = info.get("message")
    if status not in _CLIENT_STATUSES:
        log.warning("worker answered HTTP %d: %s", status, str(message)[:500])
        return orjson.dumps(
            error_body(
                "The model's worker could not answer this request. Retry shortly.",
                "server_error",
                code="upstream_error",
            )
        )
    param, code = info.get("param"), info.get("code")
    return orjson.dumps(
        error_body(
            str(message or f"The worker rejected the request (HTTP {status})."),
            error_type_for(status),
            param=param if isinstance(param, str) else None,
            code=code if isinstance(code, str) else None,
        )
    )
