"""Worker error bodies rewritten into OpenAI's error shape.

vLLM answers `{"error": {..., "code": 400}}` (an integer code) and older
builds a flat `{"object": "error", ...}`; clients written against OpenAI
expect `code` to be a string or null, so the gateway rewrites, never guesses.
"""

from __future__ import annotations

from typing import Any

import orjson

from spotgate.errors import error_body

_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}


def openai_error_body(status: int, raw: bytes) -> bytes:
    try:
        parsed: Any = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        parsed = {"message": raw[:500].decode("utf-8", "replace")}
    if not isinstance(parsed, dict):
        parsed = {}
    info = parsed.get("error") if isinstance(parsed.get("error"), dict) else parsed
    message = info.get("message") or f"The worker answered HTTP {status}."
    param, code = info.get("param"), info.get("code")
    return orjson.dumps(
        error_body(
            str(message),
            str(info.get("type") or _TYPES.get(status, "server_error")),
            param=param if isinstance(param, str) else None,
            code=code if isinstance(code, str) else None,
        )
    )
