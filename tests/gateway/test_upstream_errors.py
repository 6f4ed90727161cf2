"""Worker errors as clients read them: OpenAI's types, and nothing of the worker's insides."""

from __future__ import annotations

import orjson
import pytest

from spotgate.gateway.upstream_errors import openai_error_body, upstream_status

VLLM_400 = (
    b'{"error": {"message": "This model\'s maximum context length is 2048 tokens.",'
    b' "type": "BadRequestError", "param": "messages", "code": 400}}'
)


def test_a_vllm_client_error_keeps_its_message_under_openais_type() -> None:
    error = orjson.loads(openai_error_body(400, VLLM_400))["error"]
    assert error["type"] == "invalid_request_error"
    assert "maximum context length" in error["message"]
    assert error["param"] == "messages" and error["code"] is None
    assert upstream_status(400) == 400


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, "invalid_request_error"), (422, "invalid_request_error"), (429, "rate_limit_error")],
)
def test_client_statuses_map_to_their_openai_types(status: int, kind: str) -> None:
    error = orjson.loads(openai_error_body(status, b'{"detail": "x"}'))["error"]
    assert error["type"] == kind and upstream_status(status) == status


@pytest.mark.parametrize("status", [401, 403, 500, 503, 307])
def test_worker_side_failures_are_generic_502s(status: int) -> None:
    raw = b'{"error": {"message": "Traceback at /opt/vllm/x.py: CUDA error 10.60.16.4"}}'
    body = openai_error_body(status, raw)
    error = orjson.loads(body)["error"]
    assert upstream_status(status) == 502
    assert error["type"] == "server_error" and error["code"] == "upstream_error"
    assert b"Traceback" not in body and b"10.60" not in body
