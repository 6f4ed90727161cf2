"""Batch input and output files in Azure Blob Storage: the `FileStore` on Azure.

One container (`spotgate-files`, Bicep creates it) holds two blobs a file:
  - `files/{file_id}`: the content, with the `FileObject` in its metadata,
    so `get` is one properties call and `read_range` one ranged download
    of a single batch line, never the whole file;
  - `owners/{sha256(owner)}/{file_id}`: empty, the same metadata. `list`
    lists this prefix with metadata included: it reads neither another
    owner's files nor any content. The hash keeps any key id a valid,
    fixed-length name part.
Why a marker and not blob index tags: a tag query is eventually
consistent (a file uploaded a moment ago may be missing from the list a
client asks for next), and tags need permissions beyond reading blobs.

The content blob is written first and the marker second; deleting goes
the other way. So a failure half way never lists a file whose content is
gone: at worst a content blob without a marker, which `get` still finds
and `delete` still removes.

Metadata values travel as HTTP headers, ASCII only: strings (a filename
may be anything) are percent-encoded and decoded on read. A file id becomes a
blob name only when it looks like one (`file-` and letters, digits, `_`,
`-`): a crafted id names nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any
from urllib.parse import quote, unquote

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobClient, ContainerClient

from spotgate.adapters.azure.queue_depth import Credential
from spotgate.batch.objects import FileObject

FILES_CONTAINER = "spotgate-files"
_CONTENT = "files/"
_OWNERS = "owners/"
_INT_FIELDS = ("bytes", "created_at", "expires_at")
_RANGE_NOT_SATISFIABLE = 416
_FILE_ID = re.compile(r"file-[A-Za-z0-9_-]{1,64}")
"""Ids that may become a blob name: `../x` or `a/b` must name no other blob."""


def owner_prefix(owner: str) -> str:
    return f"{_OWNERS}{hashlib.sha256(owner.encode('utf-8')).hexdigest()[:32]}/"


def _metadata(file: FileObject) -> dict[str, str]:
    return {
        name: str(value) if name in _INT_FIELDS else quote(str(value), safe="")
        for name, value in file.to_dict().items()
        if value is not None
    }


def _file(metadata: dict[str, str]) -> FileObject:
    values: dict[str, Any] = {}
    for name, value in metadata.items():
        key = name.lower()
        values[key] = int(value) if key in _INT_FIELDS else unquote(value)
    return FileObject.from_dict(values)


class BlobFileStore:
    """A `FileStore` on one blob container; the container is made on first write if missing.

    Build it with the blob endpoint and a credential (managed identity on
    Azure), or `from_connection_string` (Azurite). `close()` closes the
    client; a credential passed in stays the caller's to close.
    """

    def __init__(
        self,
        account_url: str | None = None,
        credential: Credential | None = None,
        *,
        container: str = FILES_CONTAINER,
        connection_string: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        """`client_kwargs` go to the ContainerClient (e.g. `transport`, `retry_total`)."""
        if (account_url is None) == (connection_string is None):
            raise ValueError("give either account_url (with a credential) or connection_string")
        if connection_string is not None:
            self._client = ContainerClient.from_connection_string(
                connection_string, container, **client_kwargs
            )
        else:
            assert account_url is not None
            self._client = ContainerClient(
                account_url, container, credential=credential, **client_kwargs
            )

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, container: str = FILES_CONTAINER, **client_kwargs: Any
    ) -> BlobFileStore:
        return cls(connection_string=connection_string, container=container, **client_kwargs)

    def _content(self, file_id: str) -> BlobClient | None:
        if not _FILE_ID.fullmatch(file_id):
            return None
        return self._client.get_blob_client(_CONTENT + file_id)

    async def create(self, file: FileObject, content: bytes) -> None:
        """Replaces a file of the same id (a retried writer of an output file)."""
        blob = self._content(file.id)
        if blob is None:
            raise ValueError(f"not a file id: {file.id[:80]!r}")
        metadata = _metadata(file)
        try:
            await blob.upload_blob(content, metadata=metadata, overwrite=True)
        except ResourceNotFoundError:  # no container yet (the emulator, or a fresh account)
            with contextlib.suppress(ResourceExistsError):
                await self._client.create_container()
            await blob.upload_blob(content, metadata=metadata, overwrite=True)
        marker = self._client.get_blob_client(owner_prefix(file.owner) + file.id)
        try:
            await marker.upload_blob(b"", metadata=metadata, overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                await blob.delete_blob()
            raise

    async def get(self, file_id: str) -> FileObject | None:
        blob = self._content(file_id)
        if blob is None:
            return None
        try:
            properties = await blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        return _file(properties.metadata)

    async def read(self, file_id: str) -> bytes:
        blob = self._content(file_id)
        if blob is None:
            raise KeyError(file_id)
        try:
            download = await blob.download_blob()
        except ResourceNotFoundError:
            raise KeyError(file_id) from None
        return bytes(await download.readall())

    async def read_range(self, file_id: str, offset: int, length: int) -> bytes:
        """Past the end reads short (or empty), as slicing does."""
        blob = self._content(file_id)
        if blob is None:
            raise KeyError(file_id)
        if length <= 0 or offset < 0:
            if await self.get(file_id) is None:
                raise KeyError(file_id)
            return b""
        try:
            download = await blob.download_blob(offset=offset, length=length)
            return bytes(await download.readall())
        except ResourceNotFoundError:
            raise KeyError(file_id) from None
        except HttpResponseError as error:
            if error.status_code == _RANGE_NOT_SATISFIABLE:
                return b""
            raise

    async def delete(self, file_id: str) -> bool:
        file = await self.get(file_id)
        if file is None:
            return False
        with contextlib.suppress(ResourceNotFoundError):
            await self._client.get_blob_client(owner_prefix(file.owner) + file_id).delete_blob()
        try:
            await self._client.get_blob_client(_CONTENT + file_id).delete_blob()
        except ResourceNotFoundError:
            return False  # another caller deleted it meanwhile
        return True

    async def list(self, owner: str, *, purpose: str | None = None) -> list[FileObject]:
        """Newest first; ties (same second) by id, so pages of a listing are stable."""
        found: list[FileObject] = []
        try:
            blobs = self._client.list_blobs(
                name_starts_with=owner_prefix(owner), include=["metadata"]
            )
            async for blob in blobs:
                file = _file(blob.metadata or {})
                if file.owner == owner and (purpose is None or file.purpose == purpose):
                    found.append(file)
        except ResourceNotFoundError:  # no container: nobody uploaded anything yet
            return []
        found.sort(key=lambda f: (f.created_at, f.id), reverse=True)
        return found

    async def close(self) -> None:
        await self._client.close()
