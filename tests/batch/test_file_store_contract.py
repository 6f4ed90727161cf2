"""One contract for batch files: in memory, a local folder and Azure Blob Storage (Azurite).

/v1/files serves what is tested here: a file reads back byte for byte with
the metadata it was uploaded with; the runner reads one line of it by
offset; a caller lists only their own files, newest first; a deleted file
is gone. Each Azure test gets a container of its own on the session's
Azurite blob service.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spotgate.adapters.azure.blob_file_store import BlobFileStore
from spotgate.adapters.local.disk_file_store import DiskFileStore
from spotgate.batch.memory_stores import InMemoryFileStore
from spotgate.batch.objects import FileObject
from spotgate.batch.ports import FileStore
from tests.adapters.azure.conftest import AzuriteBlob

LINES = [
    b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n',
    b'{"custom_id": "b\xc3\xa9", "method": "POST", "url": "/v1/embeddings", "body": {}}\n',
    b'{"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n',
]
CONTENT = b"".join(LINES)


@pytest.fixture(params=["memory", "disk", "blob"])
async def files(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStore]:
    if request.param == "memory":
        yield InMemoryFileStore()
        return
    store: FileStore
    if request.param == "disk":
        store = DiskFileStore(tmp_path / "files")
    else:
        azurite: AzuriteBlob = request.getfixturevalue("azurite_blob")
        container = f"files-{uuid.uuid4().hex[:12]}"
        store = BlobFileStore.from_connection_string(azurite.connection_string, container=container)
    try:
        yield store
    finally:
        await store.close()


def a_file(
    n: int, owner: str = "key_alice", *, created_at: int = 1_700_000_000, purpose: str = "batch"
) -> FileObject:
    return FileObject(
        id=f"file-{n:024x}",
        owner=owner,
        bytes=len(CONTENT),
        created_at=created_at,
        filename="requests.jsonl",
        purpose=purpose,
    )


async def test_a_file_reads_back_as_uploaded(files: FileStore) -> None:
    uploaded = FileObject(
        id="file-abc123",
        owner="key_alice",
        bytes=len(CONTENT),
        created_at=1_700_000_123,
        filename="requêtes du 1er mai, v2 (final).jsonl",
        purpose="batch",
        expires_at=1_702_592_123,
    )
    await files.create(uploaded, CONTENT)
    assert await files.get(uploaded.id) == uploaded
    assert await files.read(uploaded.id) == CONTENT


async def test_read_range_returns_exactly_one_line(files: FileStore) -> None:
    await files.create(a_file(1), CONTENT)
    offset = 0
    for line in LINES:
        assert await files.read_range(a_file(1).id, offset, len(line)) == line
        offset += len(line)
    assert await files.read_range(a_file(1).id, offset - 5, 100) == LINES[-1][-5:], "short at end"
    assert await files.read_range(a_file(1).id, offset + 10, 100) == b""


async def test_an_empty_file_is_a_file(files: FileStore) -> None:
    empty = FileObject("file-empty", "key_alice", 0, 1_700_000_000, "none.jsonl", "batch")
    await files.create(empty, b"")
    assert await files.get(empty.id) == empty
    assert await files.read(empty.id) == b""


async def test_a_missing_file_is_absent_everywhere(files: FileStore) -> None:
    for file_id in ("file-nothere", "file-../../etc/passwd", "../index.sqlite3", "files/x"):
        assert await files.get(file_id) is None
        with pytest.raises(KeyError):
            await files.read(file_id)
        with pytest.raises(KeyError):
            await files.read_range(file_id, 0, 10)
        assert await files.delete(file_id) is False
    assert await files.list("key_alice") == []


async def test_a_deleted_file_is_gone(files: FileStore) -> None:
    await files.create(a_file(1), CONTENT)
    await files.create(a_file(2), CONTENT)
    assert await files.delete(a_file(1).id) is True
    assert await files.get(a_file(1).id) is None
    with pytest.raises(KeyError):
        await files.read(a_file(1).id)
    assert [f.id for f in await files.list("key_alice")] == [a_file(2).id]
    assert await files.delete(a_file(1).id) is False
    assert await files.read(a_file(2).id) == CONTENT


async def test_writing_an_id_again_replaces_the_file(files: FileStore) -> None:
    await files.create(a_file(1), b"first\n")
    rewritten = FileObject(a_file(1).id, "key_alice", 7, 1_700_000_000, "again.jsonl", "batch")
    await files.create(rewritten, b"second\n")
    assert await files.get(rewritten.id) == rewritten
    assert await files.read(rewritten.id) == b"second\n"
    assert await files.list("key_alice") == [rewritten]


async def test_an_owner_lists_only_their_files_newest_first(files: FileStore) -> None:
    await files.create(a_file(1, created_at=100), CONTENT)
    await files.create(a_file(2, created_at=300), CONTENT)
    await files.create(a_file(3, created_at=200, purpose="batch_output"), CONTENT)
    await files.create(a_file(4, "key_bob", created_at=400), CONTENT)
    await files.create(a_file(5, created_at=300), CONTENT)
    alice = [f.id for f in await files.list("key_alice")]
    assert alice == [a_file(n).id for n in (5, 2, 3, 1)], "newest first, ties by id"
    assert [f.id for f in await files.list("key_bob")] == [a_file(4).id]
    assert await files.list("key_carol") == []
    outputs = await files.list("key_alice", purpose="batch_output")
    assert outputs == [a_file(3, created_at=200, purpose="batch_output")]


async def test_owners_whose_ids_are_alike_or_odd_stay_apart(files: FileStore) -> None:
    owners = ["key_a", "key_a/", "key_ab", "ключ ✓", "key a&b=c"]
    for n, owner in enumerate(owners):
        await files.create(a_file(n, owner), CONTENT)
    for n, owner in enumerate(owners):
        assert [f.owner for f in await files.list(owner)] == [owner]
        assert (await files.get(a_file(n).id)) == a_file(n, owner)
