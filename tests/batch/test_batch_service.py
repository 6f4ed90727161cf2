"""The Files and Batches API behind the routes: ownership, bounds and the batch lifecycle."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from spotgate.batch.input_file import InputLimits
from spotgate.batch.memory_stores import InMemoryBatchStore, InMemoryFileStore
from spotgate.batch.requests import CreateBatch
from spotgate.batch.service import BatchLimits, BatchService
from spotgate.clock import ManualClock
from spotgate.errors import InvalidRequest, NotFound, OpenAIError, PayloadTooLarge

CHAT = "/v1/chat/completions"
LINE = orjson.dumps(
    {"custom_id": "a", "method": "POST", "url": CHAT, "body": {"model": "m", "messages": []}}
)


class RecordingStarter:
    def __init__(self, fail: bool = False) -> None:
        self.started: list[str] = []
        self.fail = fail

    async def start(self, batch_id: str) -> None:
        if self.fail:
            raise RuntimeError("durable runtime down")
        self.started.append(batch_id)


def make(limits: BatchLimits | None = None, starter: RecordingStarter | None = None):
    clock = ManualClock(1_700_000_000.0)
    service = BatchService(
        InMemoryFileStore(), InMemoryBatchStore(), starter or RecordingStarter(), clock, limits
    )
    return service, clock


def request(file_id: str, **changes: Any) -> CreateBatch:
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **changes}
    return CreateBatch.from_body(body)


async def upload(service: BatchService, owner: str = "key-a", content: bytes = LINE) -> str:
    return (await service.create_file(owner, "in.jsonl", "batch", content)).id


async def test_an_uploaded_file_is_the_owners_and_in_openais_shape() -> None:
    service, _ = make()
    file = await service.create_file("key-a", "C:\\work\\in.jsonl", "batch", LINE)
    shape = file.to_openai()
    assert shape["object"] == "file" and shape["purpose"] == "batch"
    assert shape["bytes"] == len(LINE) and shape["filename"] == "in.jsonl"
    assert shape["created_at"] == 1_700_000_000
    assert await service.get_file("key-a", file.id) == file
    assert (await service.file_content("key-a", file.id))[1] == LINE


async def test_another_key_sees_no_such_file() -> None:
    service, _ = make()
    file_id = await upload(service)
    for call in (service.get_file, service.file_content, service.delete_file):
        with pytest.raises(NotFound) as caught:
            await call("key-b", file_id)
        assert caught.value.status_code == 404
    assert (await service.list_files("key-b")).data == []
    assert await service.get_file("key-a", file_id)


@pytest.mark.parametrize("purpose", ["fine-tune", "assistants", "nonsense"])
async def test_only_batch_files_are_taken(purpose: str) -> None:
    service, _ = make()
    with pytest.raises(InvalidRequest) as caught:
        await service.create_file("key-a", "x", purpose, LINE)
    assert (caught.value.param, caught.value.status_code) == ("purpose", 400)


async def test_an_oversized_upload_is_413() -> None:
    service, _ = make(BatchLimits(input=InputLimits(max_file_bytes=len(LINE) - 1)))
    with pytest.raises(PayloadTooLarge) as caught:
        await upload(service)
    assert caught.value.code == "file_too_large"


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"", "empty_file"), (b" \r\n\n", "empty_file"), (b'{"a": "\xff"}', "invalid_file_encoding")],
)
async def test_an_unusable_upload_is_400(content: bytes, code: str) -> None:
    service, _ = make()
    with pytest.raises(InvalidRequest) as caught:
        await upload(service, content=content)
    assert caught.value.code == code


async def test_utf8_beyond_ascii_is_fine_across_the_checkers_slices() -> None:
    service, _ = make()
    content = b'{"x": "' + "日本".encode() * 400_000 + b'"}'
    assert await upload(service, content=content)


async def test_an_owner_holds_a_bounded_number_of_files() -> None:
    service, _ = make(BatchLimits(max_files_per_owner=2))
    await upload(service)
    await upload(service)
    with pytest.raises(InvalidRequest) as caught:
        await upload(service)
    assert caught.value.code == "too_many_files"
    assert await upload(service, owner="key-b")


async def test_files_list_newest_first_with_pages_and_order() -> None:
    service, clock = make()
    ids = []
    for _ in range(3):
        ids.append(await upload(service))
        clock.advance(1)
    page = await service.list_files("key-a", limit=2)
    assert [f.id for f in page.data] == [ids[2], ids[1]] and page.has_more
    rest = await service.list_files("key-a", after=ids[1], limit=2)
    assert [f.id for f in rest.data] == [ids[0]] and not rest.has_more
    ascending = await service.list_files("key-a", order="asc")
    assert [f.id for f in ascending.data] == ids
    assert ascending.to_openai()["first_id"] == ids[0]
    with pytest.raises(InvalidRequest):
        await service.list_files("key-a", after="file-unknown")


async def test_a_batch_starts_validating_with_openais_fields() -> None:
    starter = RecordingStarter()
    service, _ = make(starter=starter)
    file_id = await upload(service)
    batch = await service.create_batch("key-a", request(file_id, metadata={"job": "nightly"}))
    shape = batch.to_openai()
    assert shape["status"] == "validating"
    assert shape["endpoint"] == CHAT and shape["input_file_id"] == file_id
    assert shape["expires_at"] == shape["created_at"] + 86_400
    assert shape["metadata"] == {"job": "nightly"}
    assert starter.started == [batch.id]
    assert await service.get_batch("key-a", batch.id) == batch


async def test_a_batch_on_another_keys_file_is_404_and_never_starts() -> None:
    starter = RecordingStarter()
    service, _ = make(starter=starter)
    file_id = await upload(service, owner="key-b")
    with pytest.raises(NotFound) as caught:
        await service.create_batch("key-a", request(file_id))
    assert caught.value.param == "input_file_id"
    with pytest.raises(NotFound):
        await service.create_batch("key-a", request("file-nope"))
    assert starter.started == []


async def test_an_output_file_is_no_batch_input() -> None:
    service, _ = make()
    file_id = await upload(service)
    file = await service.files.get(file_id)
    assert file is not None
    file.purpose = "batch_output"
    await service.files.create(file, LINE)
    with pytest.raises(InvalidRequest) as caught:
        await service.create_batch("key-a", request(file_id))
    assert caught.value.code == "invalid_file_purpose"


async def test_an_owner_runs_a_bounded_number_of_batches_at_once() -> None:
    service, _ = make(BatchLimits(max_active_batches_per_owner=1))
    file_id = await upload(service)
    first = await service.create_batch("key-a", request(file_id))
    with pytest.raises(InvalidRequest) as caught:
        await service.create_batch("key-a", request(file_id))
    assert caught.value.code == "too_many_active_batches"
    await service.batches.put(first.moved_to("completed", 1))
    assert await service.create_batch("key-a", request(file_id))


async def test_a_batch_that_cannot_start_is_failed_not_left_validating() -> None:
    service, _ = make(starter=RecordingStarter(fail=True))
    file_id = await upload(service)
    with pytest.raises(RuntimeError):
        await service.create_batch("key-a", request(file_id))
    (stuck,) = (await service.list_batches("key-a")).data
    assert stuck.status == "failed"
    assert stuck.errors and stuck.errors[0]["code"] == "start_failed"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"endpoint": "/v1/completions"}, "endpoint"),
        ({"endpoint": 5}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"metadata": ["k"]}, "metadata"),
        ({"input_file_id": None}, "input_file_id"),
        ({"input_file_id": 3}, "input_file_id"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 3600}},
            "output_expires_after",
        ),
        ({"priority": "high"}, "priority"),
    ],
)
def test_a_bad_batch_request_names_its_field(changes: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        request("file-1", **changes)
    assert caught.value.param == param
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


def test_metadata_at_its_bounds_is_fine() -> None:
    metadata = {("k" * 62) + f"{i:02d}": "v" * 512 for i in range(16)}
    assert request("file-1", metadata=metadata).metadata == metadata
    assert request("file-1", metadata=None).metadata is None


async def test_batches_list_newest_first_in_pages_and_only_the_owners() -> None:
    service, clock = make()
    file_id = await upload(service)
    ids = []
    for _ in range(3):
        ids.append((await service.create_batch("key-a", request(file_id))).id)
        clock.advance(1)
    page = await service.list_batches("key-a", limit=2)
    shape = page.to_openai()
    assert [b["id"] for b in shape["data"]] == [ids[2], ids[1]]
    assert (shape["first_id"], shape["last_id"], shape["has_more"]) == (ids[2], ids[1], True)
    rest = await service.list_batches("key-a", after=ids[1], limit=2)
    assert [b.id for b in rest.data] == [ids[0]] and not rest.has_more
    assert (await service.list_batches("key-b")).to_openai()["data"] == []
    with pytest.raises(InvalidRequest):
        await service.list_batches("key-b", after=ids[0])
    with pytest.raises(NotFound):
        await service.get_batch("key-b", ids[0])


async def test_cancelling_a_running_batch_and_again() -> None:
    service, clock = make()
    batch = await service.create_batch("key-a", request(await upload(service)))
    clock.advance(5)
    cancelling = await service.cancel_batch("key-a", batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at == batch.created_at + 5
    assert await service.cancel_batch("key-a", batch.id) == cancelling
    assert (await service.get_batch("key-a", batch.id)).status == "cancelling"
    with pytest.raises(NotFound):
        await service.cancel_batch("key-b", batch.id)


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled", "finalizing"])
async def test_a_batch_that_ended_or_is_finishing_cannot_be_cancelled(status: str) -> None:
    service, _ = make()
    batch = await service.create_batch("key-a", request(await upload(service)))
    await service.batches.put(batch.moved_to(status, 1))
    with pytest.raises(InvalidRequest) as caught:
        await service.cancel_batch("key-a", batch.id)
    assert caught.value.code == "batch_not_cancellable"
    assert status in caught.value.message


async def test_a_running_batchs_input_cannot_be_deleted_until_it_ends() -> None:
    service, _ = make()
    file_id = await upload(service)
    batch = await service.create_batch("key-a", request(file_id))
    with pytest.raises(InvalidRequest) as caught:
        await service.delete_file("key-a", file_id)
    assert caught.value.code == "file_in_use"
    await service.batches.put(batch.moved_to("completed", 1))
    assert await service.delete_file("key-a", file_id) == {
        "id": file_id,
        "object": "file",
        "deleted": True,
    }
    with pytest.raises(NotFound):
        await service.get_file("key-a", file_id)


async def test_a_huge_id_is_not_found_without_echoing_it_whole() -> None:
    service, _ = make()
    with pytest.raises(OpenAIError) as caught:
        await service.get_batch("key-a", "batch_" + "x" * 10_000)
    assert caught.value.status_code == 404
    assert len(caught.value.message) < 300
