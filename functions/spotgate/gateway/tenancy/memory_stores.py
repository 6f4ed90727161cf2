"""The tenancy stores in memory: what tests of the core run against, and a single-process stand-in.

They keep the ports' contracts exactly (tests/adapters/test_tenancy_store_contract.py
runs the same suite against these, SQLite and Cosmos DB), so a core test that
passes here says something about production. Each method finishes without
awaiting anything, so on one event loop every call is atomic by construction:
that is the counter's atomicity here, and why there is no lock.

Records are copied in and out: a caller that mutates a key after `put` (or a
record it got back) must not change what the store holds, as it could not
with a real database.
"""

from __future__ import annotations

from collections.abc import Mapping

from spotgate.clock import Clock, SystemClock
from spotgate.gateway.tenancy.keys import ApiKey
from spotgate.gateway.tenancy.usage import UsageRecord

SWEEP_EVERY_S = 60.0
"""How often (by the store's clock) `InMemoryCounterStore` drops expired counters."""


def check_ttl(ttl_s: float) -> None:
    """Every counter store refuses a TTL that would forget the change as it is made."""
    if not ttl_s > 0:
        raise ValueError(f"a counter's ttl_s must be positive, not {ttl_s!r}")


def apply_change(
    fields: Mapping[str, float],
    deltas: Mapping[str, float],
    stamps: Mapping[str, float] | None,
) -> dict[str, float]:
    """A counter's fields after one `add`: deltas first, then stamps (a stamp wins over a
    delta on the same field). One definition, shared by the SQLite and Cosmos DB stores."""
    changed = {name: float(value) for name, value in fields.items()}
    for name, delta in deltas.items():
        changed[name] = changed.get(name, 0.0) + float(delta)
    for name, value in (stamps or {}).items():
        changed[name] = float(value)
    return changed


class InMemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}

    async def put(self, key: ApiKey) -> None:
        self._keys[key.id] = _copy_key(key)

    async def get(self, key_id: str) -> ApiKey | None:
        key = self._keys.get(key_id)
        return _copy_key(key) if key is not None else None

    async def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, ordered by id (as every store orders them)."""
        return [_copy_key(self._keys[key_id]) for key_id in sorted(self._keys)]

    async def close(self) -> None:
        return None


class InMemoryUsageStore:
    def __init__(self) -> None:
        self._records: dict[str, UsageRecord] = {}

    async def append(self, records: list[UsageRecord]) -> None:
        """The first record stored under a request id stands, as with a primary key."""
        for record in records:
            if record.request_id not in self._records:
                self._records[record.request_id] = UsageRecord.from_dict(record.to_dict())

    async def query(self, since: float, until: float | None = None) -> list[UsageRecord]:
        """`since <= at < until`, ordered by (at, request_id): ties in the same order everywhere."""
        found = [
            record
            for record in self._records.values()
            if record.at >= since and (until is None or record.at < until)
        ]
        found.sort(key=lambda record: (record.at, record.request_id))
        return [UsageRecord.from_dict(record.to_dict()) for record in found]

    async def close(self) -> None:
        return None


class InMemoryCounterStore:
    """Counters that expire `ttl_s` after their last change, by the injected clock."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._counters: dict[str, tuple[dict[str, float], float]] = {}
        self._next_sweep = float("-inf")

    async def add(
        self,
        counter_id: str,
        deltas: Mapping[str, float],
        *,
        ttl_s: float,
        stamps: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        check_ttl(ttl_s)
        now = self._clock.now()
        self._sweep(now)
        current = self._counters.get(counter_id)
        fields = current[0] if current is not None and current[1] > now else {}
        changed = apply_change(fields, deltas, stamps)
        self._counters[counter_id] = (changed, now + ttl_s)
        return dict(changed)

    def _sweep(self, now: float) -> None:
        """Drop expired counters now and then, so that one-off ids do not pile up forever."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY_S
        for counter_id in [i for i, (_, expires) in self._counters.items() if expires <= now]:
            del self._counters[counter_id]

    def __len__(self) -> int:
        """Counters held, expired ones not yet swept included (for tests of the sweep)."""
        return len(self._counters)

    async def close(self) -> None:
        return None


def _copy_key(key: ApiKey) -> ApiKey:
    return ApiKey.from_dict(key.to_dict())
