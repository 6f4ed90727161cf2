"""How many batch jobs wait for a pool, read from the pool's Azure Storage queue.

Batch jobs are put on a queue per pool (`spotgate-batch-{pool}`) and taken off
by workers; the fleet monitor only needs the backlog to size the pool. A
Storage queue reports it as `approximate_message_count` in one metadata-only
call, without reading any message. The count is approximate (messages being
processed, i.e. invisible, still count until deleted), which is what a scaler
wants: a job in progress still needs its worker.

Queue names must be 3-63 characters of lowercase letters, digits and single
hyphens, starting and ending with a letter or digit. A pool name that already
fits is used as is; any other is squeezed into that alphabet and suffixed
with a hash of the original, so two pools (`Pool_A`, `pool-a`) can never
share a queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any, Self

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

QUEUE_PREFIX = "spotgate-batch-"
_MAX_QUEUE_NAME = 63
_HASH_CHARS = 8
_VALID_PART = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

Credential = str | AzureNamedKeyCredential | AzureSasCredential | AsyncTokenCredential


def batch_queue_name(pool: str) -> str:
    """The Storage queue that holds `pool`'s batch jobs: a valid queue name, one per pool."""
    room = _MAX_QUEUE_NAME - len(QUEUE_PREFIX)
    if len(pool) <= room and _VALID_PART.fullmatch(pool):
        return QUEUE_PREFIX + pool
    digest = hashlib.sha256(pool.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    squeezed = re.sub(r"[^a-z0-9]+", "-", pool.lower()).strip("-")
    squeezed = squeezed[: room - _HASH_CHARS - 1].strip("-")
    return QUEUE_PREFIX + (f"{squeezed}-{digest}" if squeezed else digest)


class StorageQueueDepth:
    """Backlog of each pool's batch queue, on one storage account.

    Build it with an account URL and a credential (managed identity on Azure),
    or with a connection string (Azurite's `UseDevelopmentStorage=true`, or an
    explicit one with the emulator's well-known key). Queue clients are made
    lazily, one per pool, and all closed by `close()`.
    """

    def __init__(
        self,
        account_url: str | None = None,
        credential: Credential | None = None,
        *,
        connection_string: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        """`client_kwargs` go to every QueueClient (e.g. `transport`, `retry_total`)."""
        if (account_url is None) == (connection_string is None):
            raise ValueError("give either account_url (with a credential) or connection_string")
        self._account_url = account_url
        self._credential = credential
        self._connection_string = connection_string
        self._client_kwargs = client_kwargs
        self._clients: dict[str, QueueClient] = {}

    @classmethod
    def from_connection_string(cls, connection_string: str, **client_kwargs: Any) -> Self:
        return cls(connection_string=connection_string, **client_kwargs)

    def _client(self, pool: str) -> QueueClient:
        name = batch_queue_name(pool)
        client = self._clients.get(name)
        if client is None:
            if self._connection_string is not None:
                client = QueueClient.from_connection_string(
                    self._connection_string, name, **self._client_kwargs
                )
            else:
                assert self._account_url is not None
                client = QueueClient(
                    self._account_url, name, credential=self._credential, **self._client_kwargs
                )
            self._clients[name] = client
        return client

    async def depth(self, pool: str) -> int:
        """Messages waiting or in progress on the pool's queue; a queue never created is 0.

        Other failures (auth, network) raise: the queue is spotgate's own
        resource, so failing to read it is an outage for the caller to see,
        not an absent signal to paper over with a zero.
        """
        try:
            properties = await self._client(pool).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(properties.approximate_message_count or 0)

    async def enqueue(self, pool: str, body: str) -> str:
        """Put one job on the pool's queue (created on first use); returns the message id."""
        client = self._client(pool)
        try:
            message = await client.send_message(body)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):  # another instance made it meanwhile
                await client.create_queue()
            message = await client.send_message(body)
        return str(message.id)

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
