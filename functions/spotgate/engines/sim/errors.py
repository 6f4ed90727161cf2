"""Request failures in OpenAI's error shape, the one the gateway passes on unchanged."""

from __future__ import annotations

import orjson
from starlette.responses import Response


class SimError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type_

    def response(self) -> Response:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return Response(orjson.dumps(body), self.status, media_type="application/json")


def invalid(message: str, param: str | None = None) -> SimError:
    return SimError(message, param=param)


def model_not_found(model: str, served: str) -> SimError:
    return SimError(
        f"The model `{model}` does not exist. Valid aliases: {served}.",
        status=404,
        param="model",
        code="model_not_found",
    )
