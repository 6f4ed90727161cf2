"""StorageQueueDepth against a real Azurite queue service."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.queue.aio import QueueClient

from spotgate.adapters.azure.queue_depth import StorageQueueDepth, batch_queue_name
from tests.adapters.azure.conftest import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteQueue

_QUEUE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]")


def _pool() -> str:
    """Azurite lives all session and each test runs on two loops: every test gets fresh pools."""
    return f"pool-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def queues(azurite_queue: AzuriteQueue) -> AsyncIterator[StorageQueueDepth]:
    store = StorageQueueDepth.from_connection_string(azurite_queue.connection_string)
    try:
        yield store
    finally:
        await store.close()


async def test_a_queue_never_created_is_empty(queues: StorageQueueDepth) -> None:
    assert await queues.depth(_pool()) == 0


async def test_depth_counts_enqueued_and_forgets_deleted(
    queues: StorageQueueDepth, azurite_queue: AzuriteQueue
) -> None:
    pool = _pool()
    for n in range(5):
        await queues.enqueue(pool, f'{{"job": {n}}}')
    assert await queues.depth(pool) == 5

    async with QueueClient.from_connection_string(
        azurite_queue.connection_string, batch_queue_name(pool)
    ) as worker:
        taken = [m async for m in worker.receive_messages(max_messages=2, visibility_timeout=60)]
        assert len(taken) == 2
        assert await queues.depth(pool) == 5  # received but not done: still backlog
        for message in taken:
            await worker.delete_message(message)
    assert await queues.depth(pool) == 3


async def test_pools_do_not_mix(queues: StorageQueueDepth) -> None:
    a, b = _pool(), _pool()
    for _ in range(2):
        await queues.enqueue(a, "x")
    await queues.enqueue(b, "y")
    assert (await queues.depth(a), await queues.depth(b)) == (2, 1)


async def test_account_url_and_key_credential(azurite_queue: AzuriteQueue) -> None:
    store = StorageQueueDepth(
        azurite_queue.queue_endpoint, AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
    )
    try:
        pool = f"Odd Pool/{uuid.uuid4().hex[:8]}"  # sanitised and hashed into a queue name
        await store.enqueue(pool, "z")
        assert await store.depth(pool) == 1
    finally:
        await store.close()


@pytest.mark.parametrize(
    "pool",
    ["a", "pool-a", "Pool_A", "pool--a", "-x-", "ÜBER pool", "", "p" * 48, "p" * 49, "x" * 300],
)
def test_queue_names_follow_the_storage_rules(pool: str) -> None:
    name = batch_queue_name(pool)
    assert name.startswith("spotgate-batch-")
    assert 3 <= len(name) <= 63
    assert _QUEUE_NAME.fullmatch(name), name


def test_queue_names_keep_valid_pools_and_separate_the_rest() -> None:
    assert batch_queue_name("pool-a") == "spotgate-batch-pool-a"
    names = {batch_queue_name(p) for p in ["pool-a", "Pool_A", "pool_a", "POOL-A", "pool a"]}
    assert len(names) == 5
    assert batch_queue_name("p" * 48) == "spotgate-batch-" + "p" * 48
    assert batch_queue_name("p" * 49) != batch_queue_name("p" * 50)


def test_constructor_wants_exactly_one_way_in() -> None:
    with pytest.raises(ValueError):
        StorageQueueDepth()
    with pytest.raises(ValueError):
        StorageQueueDepth("http://127.0.0.1:1/x", connection_string="UseDevelopmentStorage=true")
