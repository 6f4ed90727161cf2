"""OpenAI's Files and Batches endpoints: check the key, parse, call the batch service.

Only registered when the runtime has a batch service. The key is checked
before any body is read, and the caller's key id is the owner every call is
scoped to (another key's file or batch is a 404).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from spotgate.api.auth import bearer
from spotgate.api.errors import json_response
from spotgate.api.request_reading import read_request_body
from spotgate.api.upload_reading import FORM_OVERHEAD_BYTES, read_upload
from spotgate.batch.requests import BATCH_PAGE, FILE_PAGE, CreateBatch, page_limit, sort_order
from spotgate.batch.service import BatchService
from spotgate.errors import NotFound
from spotgate.gateway import request_body
from spotgate.runtime import Runtime


def _service(request: Request) -> tuple[BatchService, str]:
    """The batch service and the caller's key id, once the key checks out."""
    runtime: Runtime = request.app.state.runtime
    caller = runtime.tenancy.authority.authenticate(bearer(request))
    if runtime.batches is None:
        raise NotFound("The Batch API is not enabled on this gateway.")
    return runtime.batches, caller.key_id


def _query(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


async def create_file(request: Request) -> Response:
    service, owner = _service(request)
    limit = service.limits.max_file_bytes + FORM_OVERHEAD_BYTES
    upload = await read_upload(request, limit)
    file = await service.create_file(owner, upload.filename, upload.purpose, upload.content)
    return json_response(file.to_openai())


async def list_files(request: Request) -> Response:
    service, owner = _service(request)
    page = await service.list_files(
        owner,
        purpose=_query(request, "purpose"),
        after=_query(request, "after"),
        limit=page_limit(_query(request, "limit"), FILE_PAGE),
        order=sort_order(_query(request, "order")),
    )
    return json_response(page.to_openai())


async def get_file(request: Request) -> Response:
    service, owner = _service(request)
    file = await service.get_file(owner, request.path_params["file_id"])
    return json_response(file.to_openai())


async def file_content(request: Request) -> Response:
    service, owner = _service(request)
    _, content = await service.file_content(owner, request.path_params["file_id"])
    return Response(content, media_type="application/octet-stream")


async def delete_file(request: Request) -> Response:
    service, owner = _service(request)
    return json_response(await service.delete_file(owner, request.path_params["file_id"]))


async def create_batch(request: Request) -> Response:
    service, owner = _service(request)
    body = request_body.parse_body(await read_request_body(request))
    batch = await service.create_batch(owner, CreateBatch.from_body(body))
    return json_response(batch.to_openai())


async def list_batches(request: Request) -> Response:
    service, owner = _service(request)
    limit = page_limit(_query(request, "limit"), BATCH_PAGE)
    page = await service.list_batches(owner, after=_query(request, "after"), limit=limit)
    return json_response(page.to_openai())


async def get_batch(request: Request) -> Response:
    service, owner = _service(request)
    batch = await service.get_batch(owner, request.path_params["batch_id"])
    return json_response(batch.to_openai())


async def cancel_batch(request: Request) -> Response:
    service, owner = _service(request)
    batch = await service.cancel_batch(owner, request.path_params["batch_id"])
    return json_response(batch.to_openai())


routes = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", get_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches", list_batches, methods=["GET"]),
    Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
]
