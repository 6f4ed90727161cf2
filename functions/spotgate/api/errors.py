"""Every failure leaves the API in OpenAI's error shape, with the right status."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from spotgate.errors import OpenAIError, error_body, error_type_for

log = logging.getLogger("spotgate.api")


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None):
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


def error_response(exc: OpenAIError) -> Response:
    return json_response(exc.body(), exc.status_code, exc.headers)


async def handle_openai_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        message = f"Unknown path: {request.method} {request.url.path}."
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    body = error_body(message, error_type_for(status))
    return json_response(body, status, dict(exc.headers or {}))


def internal_error_body(request_id: str) -> bytes:
    message = f"The gateway failed unexpectedly (request {request_id}); it was logged."
    return orjson.dumps(error_body(message, code="internal_error"))
