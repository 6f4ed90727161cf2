"""The Files and Batches endpoints as the official openai client uses them, in-process.

Two static keys stand for two customers: each sees only what it made, and
the other's ids are 404s. The batch's run is a fake starter that records
which batches it was asked to start.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import orjson
import pytest

from spotgate.api.app import create_app
from spotgate.batch.input_file import InputLimits
from spotgate.batch.memory_stores import InMemoryBatchStore, InMemoryFileStore
from spotgate.batch.service import BatchLimits, BatchService
from spotgate.clock import ManualClock
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings

KEY_A, KEY_B = "sk-test-a", "sk-test-b"
CHAT = "/v1/chat/completions"
MAX_FILE_BYTES = 4096


def jsonl(*custom_ids: str) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    lines = (
        orjson.dumps({"custom_id": c, "method": "POST", "url": CHAT, "body": body})
        for c in custom_ids
    )
    return b"\n".join(lines) + b"\n"


class RecordingStarter:
    def __init__(self) -> None:
        self.started: list[str] = []

    async def start(self, batch_id: str) -> None:
        self.started.append(batch_id)


@pytest.fixture
def starter() -> RecordingStarter:
    return RecordingStarter()


def runtime_with(batches: BatchService | None, **overrides: float) -> Runtime:
    settings = Settings(
        api_keys=[KEY_A, KEY_B], capacity_wait_s=0, cache_backend="memory", **overrides
    )
    runtime = build_runtime(settings, InMemoryWorkerStore())
    return dataclasses.replace(runtime, batches=batches)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def transport(starter: RecordingStarter, clock: ManualClock) -> Iterator[httpx.ASGITransport]:
    limits = BatchLimits(input=InputLimits(max_file_bytes=MAX_FILE_BYTES))
    service = BatchService(InMemoryFileStore(), InMemoryBatchStore(), starter, clock, limits)
    yield httpx.ASGITransport(app=create_app(runtime_with(service)))


def client_for(transport: httpx.ASGITransport, key: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=transport)
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key=key, http_client=http, max_retries=0)


@pytest.fixture
async def alice(transport: httpx.ASGITransport) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(transport, KEY_A) as client:
        yield client


@pytest.fixture
async def bob(transport: httpx.ASGITransport) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(transport, KEY_B) as client:
        yield client


@pytest.fixture
async def raw(transport: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_a_file_round_trips_through_the_openai_client(alice: openai.AsyncOpenAI) -> None:
    content = jsonl("a", "b")
    file = await alice.files.create(file=("requests.jsonl", content), purpose="batch")
    assert (file.object, file.purpose, file.bytes) == ("file", "batch", len(content))
    assert file.filename == "requests.jsonl"
    assert (await alice.files.retrieve(file.id)).id == file.id
    assert (await alice.files.content(file.id)).content == content
    assert [f.id for f in (await alice.files.list(purpose="batch")).data] == [file.id]
    deleted = await alice.files.delete(file.id)
    assert (deleted.id, deleted.deleted) == (file.id, True)
    with pytest.raises(openai.NotFoundError):
        await alice.files.retrieve(file.id)


async def test_a_batch_is_created_listed_retrieved_and_cancelled(
    alice: openai.AsyncOpenAI, starter: RecordingStarter, clock: ManualClock
) -> None:
    file = await alice.files.create(file=("in.jsonl", jsonl("a")), purpose="batch")
    batch = await alice.batches.create(
        input_file_id=file.id,
        endpoint=CHAT,
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert (batch.status, batch.input_file_id, batch.metadata) == (
        "validating",
        file.id,
        {"job": "nightly"},
    )
    assert starter.started == [batch.id]
    assert (await alice.batches.retrieve(batch.id)).id == batch.id
    clock.advance(1)
    second = await alice.batches.create(
        input_file_id=file.id, endpoint=CHAT, completion_window="24h"
    )
    page = await alice.batches.list(limit=1)
    assert [b.id for b in page.data] == [second.id] and page.has_more
    assert [b.id async for b in alice.batches.list(limit=1)] == [second.id, batch.id]
    cancelled = await alice.batches.cancel(batch.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at is not None


async def test_another_key_gets_404_for_every_file_and_batch(
    alice: openai.AsyncOpenAI, bob: openai.AsyncOpenAI
) -> None:
    file = await alice.files.create(file=("in.jsonl", jsonl("a")), purpose="batch")
    batch = await alice.batches.create(
        input_file_id=file.id, endpoint=CHAT, completion_window="24h"
    )
    for call in (
        bob.files.retrieve(file.id),
        bob.files.content(file.id),
        bob.files.delete(file.id),
        bob.batches.retrieve(batch.id),
        bob.batches.cancel(batch.id),
        bob.batches.create(input_file_id=file.id, endpoint=CHAT, completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            await call
    assert (await bob.files.list()).data == []
    assert (await bob.batches.list()).data == []
    assert (await alice.files.retrieve(file.id)).id == file.id


async def test_an_oversized_upload_is_413_in_openais_shape(alice: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await alice.files.create(file=("big.jsonl", b"x" * (MAX_FILE_BYTES + 1)), purpose="batch")
    assert caught.value.status_code == 413
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "file_too_large"


async def test_an_upload_without_content_length_is_cut_off_at_the_cap(
    raw: httpx.AsyncClient,
) -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        for _ in range(1000):
            sent.append(1)
            yield b"x" * 1024

    response = await raw.post(
        "/v1/files",
        content=endless(),
        headers={
            "Authorization": f"Bearer {KEY_A}",
            "Content-Type": "multipart/form-data; boundary=b",
        },
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "file_too_large"
    assert len(sent) < 100  # refused at the cap, not after the whole body


async def test_an_upload_with_a_large_declared_length_is_refused_before_reading(
    raw: httpx.AsyncClient,
) -> None:
    headers = {
        "Authorization": f"Bearer {KEY_A}",
        "Content-Type": "multipart/form-data; boundary=b",
        "Content-Length": str(10**9),
    }
    response = await raw.post("/v1/files", content=b"", headers=headers)
    assert response.status_code == 413


async def test_an_upload_that_stalls_is_408(starter: RecordingStarter) -> None:
    service = BatchService(InMemoryFileStore(), InMemoryBatchStore(), starter, ManualClock())
    app = create_app(runtime_with(service, body_timeout_s=0.2))

    async def stalls() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        await asyncio.sleep(5)
        yield b"late"

    headers = {
        "Authorization": f"Bearer {KEY_A}",
        "Content-Type": "multipart/form-data; boundary=b",
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        response = await c.post("/v1/files", content=stalls(), headers=headers)
    assert response.status_code == 408
    assert error_of(response)["code"] == "request_timeout"


async def test_a_bad_purpose_is_400(alice: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.files.create(file=("in.jsonl", jsonl("a")), purpose="fine-tune")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "purpose"


async def test_an_upload_missing_its_file_or_not_multipart_is_400(raw: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {KEY_A}"}
    missing = await raw.post("/v1/files", data={"purpose": "batch"}, files={}, headers=auth)
    assert missing.status_code == 400
    json = await raw.post("/v1/files", json={"purpose": "batch"}, headers=auth)
    assert json.status_code == 400 and error_of(json)["code"] == "invalid_content_type"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"endpoint": "/v1/responses"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
    ],
)
async def test_a_bad_batch_request_is_400_naming_the_field(
    alice: openai.AsyncOpenAI, changes: dict[str, object], param: str
) -> None:
    file = await alice.files.create(file=("in.jsonl", jsonl("a")), purpose="batch")
    arguments: dict[str, object] = {
        "input_file_id": file.id,
        "endpoint": CHAT,
        "completion_window": "24h",
        **changes,
    }
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.batches.create(**arguments)  # type: ignore[arg-type]
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param


async def test_bad_list_parameters_and_bodies_are_400(raw: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {KEY_A}"}
    paths = ["/v1/batches?limit=0", "/v1/batches?limit=101", "/v1/batches?limit=x"]
    paths += ["/v1/files?order=sideways", "/v1/batches?after=batch_unknown"]
    for path in paths:
        response = await raw.get(path, headers=auth)
        assert response.status_code == 400, path
        error_of(response)
    response = await raw.post("/v1/batches", content=b"[1]", headers=auth)
    assert response.status_code == 400 and error_of(response)["type"] == "invalid_request_error"


async def test_no_key_is_401_before_anything_is_read(raw: httpx.AsyncClient) -> None:
    for method, path in (("POST", "/v1/files"), ("GET", "/v1/batches"), ("POST", "/v1/batches")):
        response = await raw.request(method, path)
        assert response.status_code == 401
        error_of(response)


async def test_without_a_batch_service_the_endpoints_do_not_exist() -> None:
    app = create_app(runtime_with(None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        response = await c.get("/v1/batches", headers={"Authorization": f"Bearer {KEY_A}"})
    assert response.status_code == 404
