"""Errors in OpenAI's shape, raised by the core and rendered by the API layer.

The core raises these instead of framework exceptions so that the same
failure reads the same to a client whether it came from validation, routing
or an upstream worker.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
"""OpenAI's error `type` for each client-error status; anything else is a server_error."""


def error_type_for(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error")


def error_body(
    message: str,
    type_: str = "server_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class OpenAIError(Exception):
    status_code = 500
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, param=self.param, code=self.code)


class InvalidRequest(OpenAIError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(OpenAIError):
    status_code = 401
    error_type = "invalid_request_error"

    def __init__(self, message: str = "Missing or invalid API key.") -> None:
        super().__init__(message, code="invalid_api_key")


class PermissionDenied(OpenAIError):
    """The caller is known but may not do this (a model its key does not cover)."""

    status_code = 403
    error_type = "permission_error"


class NotFound(OpenAIError):
    status_code = 404
    error_type = "invalid_request_error"


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


class PayloadTooLarge(OpenAIError):
    status_code = 413
    error_type = "invalid_request_error"


class RequestTimeout(OpenAIError):
    """The client stopped sending its request; 408 and close, as RFC 9110 suggests."""

    status_code = 408
    error_type = "invalid_request_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="request_timeout", headers={"Connection": "close"})


class RateLimited(OpenAIError):
    status_code = 429
    error_type = "rate_limit_error"


class UpstreamError(OpenAIError):
    """A worker answered badly or not at all, after retries."""

    status_code = 502
    error_type = "server_error"


class NoCapacity(OpenAIError):
    """No ready worker serves the model right now."""

    status_code = 503
    error_type = "server_error"
