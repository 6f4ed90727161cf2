"""Every gateway instance's queue reaches the fleet monitor through the Cosmos journal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from spotgate.adapters.azure.cosmos_fleet_journal import JOURNAL_CONTAINER
from spotgate.adapters.azure.shared_demand import SharedDemand
from spotgate.clock import ManualClock
from spotgate.fleet.observation import PoolDemand
from tests.adapters.azure.test_cosmos_fleet_stores import FAST, Cosmos, fresh_database
from tests.adapters.conftest import CosmosServer


@dataclass
class Counts:
    now: PoolDemand

    async def of(self, pool: str) -> PoolDemand:
        return self.now if pool == "default" else PoolDemand()


@pytest.fixture
async def cosmos(cosmos_server: CosmosServer) -> AsyncIterator[Cosmos]:
    async with fresh_database(cosmos_server) as database:
        yield database


def instance(cosmos: Cosmos, name: str, counts: Counts, clock: ManualClock) -> SharedDemand:
    return SharedDemand(
        cosmos.db.get_container_client(JOURNAL_CONTAINER),
        counts,
        ["default"],
        instance_id=name,
        clock=clock,
        max_age_s=10,
        options=FAST,
    )


async def test_the_monitor_sees_the_sum_of_every_instances_queue(cosmos: Cosmos) -> None:
    clock = ManualClock()
    a_counts, b_counts = Counts(PoolDemand(5, 16)), Counts(PoolDemand(2, 16))
    a, b = instance(cosmos, "a", a_counts, clock), instance(cosmos, "b", b_counts, clock)
    await a.start()
    await b.start()
    try:
        await a.publish()
        await b.publish()
        await a._writes.flush(5)
        await b._writes.flush(5)

        assert await a.of("default") == PoolDemand(7, 32)
        b_counts.now = PoolDemand(0, 3)  # b's own view is live, a's comes from Cosmos
        assert await b.of("default") == PoolDemand(5, 19)
        assert await a.of("other") == PoolDemand(0, 0)  # pools do not mix

        clock.advance(11)  # b stopped publishing (scaled in): its last counts age out
        assert await a.of("default") == PoolDemand(5, 16)
    finally:
        await a.close()
        await b.close()
