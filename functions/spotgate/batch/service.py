"""The Files and Batches API as one object the routes call: who may see what, and bounds.

A file or batch belongs to the key that made it (`owner`, the caller's key
id); every lookup is scoped to it, and another key's id reads as "no such
object" (404), so ids cannot be probed. Output and error files are written
by the batch's orchestration with purpose `batch_output` and the batch's
owner, and are read through the same calls.

The input is validated when the batch runs (status `validating`), as OpenAI
does, so creating a batch answers at once; an upload is only refused here
for what no batch could use: another purpose, too large, empty, or not
UTF-8. Each owner holds a bounded number of files and running batches (the
check reads then writes, so racing requests may pass it by a few).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from spotgate.batch.input_file import InputLimits, batch_error
from spotgate.batch.objects import (
    BATCH_PURPOSE,
    CANCELLING,
    COMPLETION_WINDOW_S,
    IN_PROGRESS,
    TERMINAL,
    VALIDATING,
    BatchObject,
    FileObject,
    new_batch_id,
    new_file_id,
)
from spotgate.batch.ports import BatchStore, FileStore
from spotgate.batch.requests import MAX_ID_CHARS, CreateBatch
from spotgate.batch.validation import failed
from spotgate.clock import Clock
from spotgate.errors import InvalidRequest, NotFound, PayloadTooLarge

OPENAI_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_NOT_BLANK = re.compile(rb"\S")
_FILENAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_UTF8_CHUNK = 1 << 20


class BatchStarter(Protocol):
    """Starts the durable run of a stored `validating` batch (the host's orchestration)."""

    async def start(self, batch_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchLimits:
    input: InputLimits = field(default_factory=InputLimits)
    max_files_per_owner: int = 1000
    max_active_batches_per_owner: int = 100
    max_filename_chars: int = 255

    @property
    def max_file_bytes(self) -> int:
        return self.input.max_file_bytes


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list in OpenAI's shape (`first_id`, `last_id`, `has_more`)."""

    data: list[FileObject] | list[BatchObject]
    has_more: bool

    def to_openai(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [item.to_openai() for item in self.data],
            "first_id": self.data[0].id if self.data else None,
            "last_id": self.data[-1].id if self.data else None,
            "has_more": self.has_more,
        }


class BatchService:
    def __init__(
        self,
        files: FileStore,
        batches: BatchStore,
        starter: BatchStarter,
        clock: Clock,
        limits: BatchLimits | None = None,
    ) -> None:
        self.files = files
        self.batches = batches
        self.limits = limits or BatchLimits()
        self._starter = starter
        self._clock = clock

    async def create_file(
        self, owner: str, filename: str | None, purpose: str, content: bytes
    ) -> FileObject:
        if purpose != BATCH_PURPOSE:
            raise _bad_purpose(purpose)
        if len(content) > self.limits.max_file_bytes:
            raise PayloadTooLarge(
                f"The file is {len(content)} bytes; at most {self.limits.max_file_bytes} "
                "bytes are accepted.",
                param="file",
                code="file_too_large",
            )
        if _NOT_BLANK.search(content) is None:
            raise InvalidRequest("The file is empty.", param="file", code="empty_file")
        if not _is_utf8(content):
            raise InvalidRequest(
                "The file is not valid UTF-8 text; a batch input is JSONL in UTF-8.",
                param="file",
                code="invalid_file_encoding",
            )
        if len(await self.files.list(owner)) >= self.limits.max_files_per_owner:
            raise InvalidRequest(
                f"This key already holds {self.limits.max_files_per_owner} files, the most "
                "it may; delete some first.",
                param="file",
                code="too_many_files",
            )
        name = _clean_filename(filename, self.limits.max_filename_chars)
        file = FileObject(new_file_id(), owner, len(content), self._now(), name, purpose)
        await self.files.create(file, content)
        return file

    async def get_file(self, owner: str, file_id: str) -> FileObject:
        file = await self.files.get(file_id) if _plausible(file_id) else None
        if file is None or file.owner != owner:
            raise _no_file(file_id, "file_id")
        return file

    async def list_files(
        self,
        owner: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10_000,
        order: str = "desc",
    ) -> Page:
        files = await self.files.list(owner, purpose=purpose)
        if order == "asc":
            files.reverse()
        return _page(files, after, limit)

    async def file_content(self, owner: str, file_id: str) -> tuple[FileObject, bytes]:
        file = await self.get_file(owner, file_id)
        return file, await self.files.read(file.id)

    async def delete_file(self, owner: str, file_id: str) -> dict[str, Any]:
        """Refused while a running batch of the owner reads it: its lines are read from it."""
        file = await self.get_file(owner, file_id)
        for batch in await self.batches.active():
            if batch.owner == owner and batch.input_file_id == file.id:
                raise InvalidRequest(
                    f"File {file.id} is the input of batch {batch.id}, which is {batch.status}; "
                    "cancel the batch or let it finish first.",
                    param="file_id",
                    code="file_in_use",
                )
        await self.files.delete(file.id)
        return {"id": file.id, "object": "file", "deleted": True}

    async def create_batch(self, owner: str, request: CreateBatch) -> BatchObject:
        """Stores the batch as `validating` and starts its run; validation happens there."""
        file = await self.files.get(request.input_file_id)
        if file is None or file.owner != owner:
            raise _no_file(request.input_file_id, "input_file_id")
        if file.purpose != BATCH_PURPOSE:
            raise InvalidRequest(
                f"File {file.id} has purpose '{file.purpose}'; a batch's input must be "
                f"uploaded with purpose '{BATCH_PURPOSE}'.",
                param="input_file_id",
                code="invalid_file_purpose",
            )
        active = [b for b in await self.batches.active() if b.owner == owner]
        if len(active) >= self.limits.max_active_batches_per_owner:
            raise InvalidRequest(
                f"This key already runs {len(active)} batches, the most it may at once; "
                "wait for one to finish or cancel one.",
                code="too_many_active_batches",
            )
        now = self._now()
        batch = BatchObject(
            id=new_batch_id(),
            owner=owner,
            endpoint=request.endpoint,
            input_file_id=file.id,
            completion_window=request.completion_window,
            created_at=now,
            expires_at=int(now + COMPLETION_WINDOW_S),
            metadata=request.metadata,
        )
        await self.batches.put(batch)
        try:
            await self._starter.start(batch.id)
        except Exception:
            error = batch_error("start_failed", "The batch could not be started; create it again.")
            await self.batches.put(failed(batch, [error], self._clock.now()))
            raise
        return batch

    async def get_batch(self, owner: str, batch_id: str) -> BatchObject:
        batch = await self.batches.get(batch_id) if _plausible(batch_id) else None
        if batch is None or batch.owner != owner:
            message = f"No such Batch object: {_shown(batch_id)}."
            raise NotFound(message, param="batch_id", code="batch_not_found")
        return batch

    async def list_batches(self, owner: str, *, after: str | None = None, limit: int = 20) -> Page:
        if after is not None:
            await self._cursor(owner, after)
        batches = await self.batches.list(owner, after=after, limit=limit + 1)
        return Page(batches[:limit], has_more=len(batches) > limit)

    async def cancel_batch(self, owner: str, batch_id: str) -> BatchObject:
        """`cancelling` at once; the batch's run stops its lines and makes it `cancelled`."""
        batch = await self.get_batch(owner, batch_id)
        if batch.status == CANCELLING:
            return batch
        if batch.status not in (VALIDATING, IN_PROGRESS):
            ending = "has ended" if batch.status in TERMINAL else "is being finalized"
            raise InvalidRequest(
                f"Batch {batch.id} is {batch.status} and cannot be cancelled: it {ending}.",
                param="batch_id",
                code="batch_not_cancellable",
            )
        cancelling = batch.moved_to(CANCELLING, self._clock.now())
        await self.batches.put(cancelling)
        return cancelling

    async def _cursor(self, owner: str, after: str) -> None:
        cursor = await self.batches.get(after) if _plausible(after) else None
        if cursor is None or cursor.owner != owner:
            message = f"No such Batch object to list after: {_shown(after)}."
            raise InvalidRequest(message, param="after", code="invalid_value")

    def _now(self) -> int:
        return int(self._clock.now())


def _page(items: list[FileObject], after: str | None, limit: int) -> Page:
    if after is not None:
        ids = [item.id for item in items]
        if after not in ids:
            message = f"No such File object to list after: {_shown(after)}."
            raise InvalidRequest(message, param="after", code="invalid_value")
        items = items[ids.index(after) + 1 :]
    return Page(items[:limit], has_more=len(items) > limit)


def _no_file(file_id: str, param: str) -> NotFound:
    message = f"No such File object: {_shown(file_id)}."
    return NotFound(message, param=param, code="file_not_found")


def _bad_purpose(purpose: str) -> InvalidRequest:
    if purpose in OPENAI_PURPOSES:
        message = f"Purpose '{purpose}' is not supported here: only 'batch' files are kept."
    else:
        message = f"Invalid value for 'purpose': {_shown(purpose)}. Supported values are: 'batch'."
    return InvalidRequest(message, param="purpose", code="invalid_value")


def _is_utf8(content: bytes) -> bool:
    """Checked in slices, so a large upload is never decoded into one large string."""
    if content.isascii():
        return True
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(content), _UTF8_CHUNK):
            decoder.decode(content[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _clean_filename(filename: str | None, most: int) -> str:
    name = _FILENAME_UNSAFE.sub("", (filename or "").replace("\\", "/").rsplit("/", 1)[-1])
    return name[:most] or "upload.jsonl"


def _plausible(object_id: str) -> bool:
    return 0 < len(object_id) <= MAX_ID_CHARS


def _shown(object_id: str) -> str:
    """An id echoed back to a client, cut short: it is whatever the client sent."""
    return repr(object_id[:MAX_ID_CHARS])
