"""The tenancy's storage ports: keys, usage records, shared counters (SQLite, Cosmos DB).

Every store may fail or be slow: callers bound what they wait for, and the
request path reads keys from memory (`KeyDirectory`) and writes usage in the
background (`UsageRecorder`). Counters are the one store the request path
waits on, because limits across gateway instances need one atomic count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from spotgate.gateway.tenancy.keys import ApiKey
from spotgate.gateway.tenancy.usage import UsageRecord


class KeyStore(Protocol):
    async def put(self, key: ApiKey) -> None:
        """Create or replace (by id)."""
        ...

    async def get(self, key_id: str) -> ApiKey | None: ...

    async def all(self) -> list[ApiKey]:
        """Every key, revoked ones included (a revocation must reach every instance)."""
        ...

    async def close(self) -> None: ...


class UsageStore(Protocol):
    async def append(self, records: list[UsageRecord]) -> None:
        """Store a batch; a record whose request id is stored already is not stored twice."""
        ...

    async def query(self, since: float, until: float | None = None) -> list[UsageRecord]:
        """Records with `since <= at < until`, oldest first."""
        ...

    async def close(self) -> None: ...


class CounterStore(Protocol):
    async def add(
        self,
        counter_id: str,
        deltas: Mapping[str, float],
        *,
        ttl_s: float,
        stamps: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Atomically add `deltas` to the named fields of one counter (missing fields and
        counters start at 0), set `stamps` fields to their values, and return every field
        after the change. The counter may be forgotten `ttl_s` after its last change."""
        ...

    async def close(self) -> None: ...
