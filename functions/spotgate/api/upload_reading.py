"""Reads a multipart file upload (`POST /v1/files`) under a size cap and timeouts.

The openai client sends `file` and `purpose` as multipart/form-data. The
cap is checked on the declared Content-Length and again on every chunk as
it arrives, so an oversized upload is refused (413) once the cap is passed,
never read whole first; the multipart parser spools the file part to a
temporary file past 1 MiB, so memory holds one copy of the content, at the
end. A client that stalls gets a 408, as with any other body.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from spotgate.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from spotgate.settings import Settings

FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for the multipart framing and the `purpose` field around the file itself."""
MAX_FIELD_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str | None
    purpose: str
    content: bytes


class _BoundedReceive:
    """The request's `receive`, refusing past `limit` bytes and after `silence_s` quiet."""

    def __init__(self, request: Request, limit: int, silence_s: float, deadline_s: float) -> None:
        self._receive = request.receive
        self._limit = limit
        self._silence_s = silence_s
        self._deadline_s = deadline_s
        self._deadline = asyncio.get_running_loop().time() + deadline_s
        self._size = 0

    async def __call__(self) -> Message:
        left = self._deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(0.0, min(self._silence_s, left))):
                message = await self._receive()
        except TimeoutError:
            if left <= self._silence_s:
                raise RequestTimeout(
                    f"The upload did not arrive within {self._deadline_s:g} s."
                ) from None
            raise RequestTimeout(
                f"The upload stopped arriving for {self._silence_s:g} s."
            ) from None
        self._size += len(message.get("body", b""))
        if self._size > self._limit:
            raise _too_large(self._limit)
        return message


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The upload is larger than {limit} bytes.", param="file", code="file_too_large"
    )


async def read_upload(request: Request, limit: int) -> Upload:
    """The `file` and `purpose` fields; `limit` bounds the whole request body."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidRequest(
            "Upload files as multipart/form-data with the fields 'file' and 'purpose'.",
            code="invalid_content_type",
        )
    settings: Settings = request.app.state.runtime.settings
    receive = _BoundedReceive(
        request, limit, settings.server.body_timeout_s, settings.server.body_deadline_s
    )
    bounded = Request(request.scope, receive)
    async with bounded.form(max_files=1, max_fields=4, max_part_size=MAX_FIELD_BYTES) as form:
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, UploadFile):
            raise _missing("file", "the file to upload")
        if not isinstance(purpose, str):
            raise _missing("purpose", "'batch'")
        return Upload(file.filename, purpose, await file.read())


def _missing(name: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{name}' ({what}).",
        param=name,
        code="missing_required_parameter",
    )
