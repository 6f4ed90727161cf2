"""The admin API: keys and usage. Every route needs the admin role (admin key or Entra token).

A key's secret appears once, in the answer to its creation; afterwards the
API shows everything about a key but that.
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.auth import require_admin
from spotgate.api.errors import json_response
from spotgate.api.request_reading import read_request_body
from spotgate.errors import InvalidRequest
from spotgate.gateway.request_body import parse_body
from spotgate.gateway.tenancy.key_spec import parse_key_changes, parse_new_key
from spotgate.runtime import Runtime
from spotgate.time_window import parse_since

DEFAULT_WINDOW = "30d"
MAX_RECORDS_WINDOW_S = 86_400.0 + 1.0


async def create_key(request: Request) -> Response:
    runtime = await require_admin(request)
    name, fields = parse_new_key(parse_body(await read_request_body(request) or b"{}"))
    key, secret = await runtime.tenancy.directory.create(name, **fields)
    return json_response({**key.public(), "key": secret}, 201)


async def list_keys(request: Request) -> Response:
    runtime = await require_admin(request)
    keys = [key.public() for key in runtime.tenancy.directory.all()]
    return json_response({"object": "list", "data": keys})


async def get_key(request: Request) -> Response:
    runtime = await require_admin(request)
    return json_response(runtime.tenancy.directory.find(request.path_params["key"]).public())


async def update_key(request: Request) -> Response:
    runtime = await require_admin(request)
    changes = parse_key_changes(parse_body(await read_request_body(request) or b"{}"))
    key = await runtime.tenancy.directory.update(request.path_params["key"], changes)
    return json_response(key.public())


async def revoke_key(request: Request) -> Response:
    runtime = await require_admin(request)
    key = await runtime.tenancy.directory.revoke(request.path_params["key"])
    return json_response(key.public())


def _moment(text: str, name: str, now: float) -> float:
    """A query parameter as unix seconds: a number, a duration before now ("24h"), or an
    ISO date; 400 naming the parameter otherwise."""
    try:
        value = float(text)
    except ValueError:
        try:
            return parse_since(text, now)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param=name) from None
    if not math.isfinite(value):
        raise InvalidRequest(f"'{name}' must be a finite number.", param=name)
    return value


def _window(request: Request, runtime: Runtime, default: str) -> tuple[float, float]:
    now = runtime.clock.now()
    since = _moment(request.query_params.get("since", default), "since", now)
    until_text = request.query_params.get("until")
    return since, now if until_text is None else _moment(until_text, "until", now)


async def usage(request: Request) -> Response:
    """The usage report: `by` key|model|day|worker|pool over [since, until)."""
    runtime = await require_admin(request)
    since, until = _window(request, runtime, DEFAULT_WINDOW)
    by = request.query_params.get("by", "model")
    report = await runtime.usage_reports.report(by, since, until)
    return json_response(report.to_dict())


async def usage_records(request: Request) -> Response:
    """The raw records over [since, until), at most a day's worth per call (exports page)."""
    runtime = await require_admin(request)
    since, until = _window(request, runtime, "1d")
    if until - since > MAX_RECORDS_WINDOW_S:
        raise InvalidRequest("Ask for at most one day of records per call.", param="until")
    records = await runtime.usage_reports.records(since, until)
    return json_response({"object": "list", "data": [r.to_dict() for r in records]})


routes = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key}", get_key, methods=["GET"]),
    Route("/admin/keys/{key}", update_key, methods=["PATCH"]),
    Route("/admin/keys/{key}", revoke_key, methods=["DELETE"]),
    Route("/admin/usage", usage, methods=["GET"]),
    Route("/admin/usage/records", usage_records, methods=["GET"]),
]
