"""How the fleet journal's Cosmos DB items read back as the fleet's records.

Items outlive the code that wrote them (an older instance, a TTL of weeks),
so a missing optional field reads as its default rather than failing a pull;
`at` and `pool` every item has. Kept apart from `cosmos_fleet_journal.py`,
which is about keeping the window in step with Cosmos, not about fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from spotgate.fleet.journal import CapacityFailureRecord, EvictionRecord
from spotgate.fleet.signals import CapacityFailure, EvictionSignal
from spotgate.fleet.worker_spans import WorkerSpan

Item = dict[str, Any]
Window = dict[str, dict[str, Item]]
"""pool -> item id -> item"""


def item_order(item: Item) -> tuple[int, str, str]:
    """The order entries were recorded in, across instances (up to clock skew)."""
    return (int(item.get("seq") or 0), str(item.get("writer") or ""), str(item["id"]))


def time_order(item: Item) -> tuple[float, int, str, str]:
    return (float(item["at"]), *item_order(item))


def newest(items: Iterable[Item], n: int) -> dict[str, Item]:
    """The newest `n` as recorded, by id."""
    kept = sorted(items, key=item_order)[-n:]
    return {str(item["id"]): item for item in kept}


def clean(item: Item) -> Item:
    """The item without Cosmos's system properties (`_rid`, `_etag`, `_ts`, ...)."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


def eviction_record(item: Item) -> EvictionRecord:
    return EvictionRecord(
        str(item["pool"]), str(item.get("worker_id") or ""), item.get("zone"), float(item["at"])
    )


def eviction_signal(item: Item) -> EvictionSignal:
    return EvictionSignal(zone=item.get("zone"), at=float(item["at"]))


def capacity_failure_record(item: Item) -> CapacityFailureRecord:
    failure = capacity_failure(item)
    return CapacityFailureRecord(
        str(item["pool"]), failure.priority, failure.zone, failure.reason, failure.at
    )


def capacity_failure(item: Item) -> CapacityFailure:
    return CapacityFailure(
        str(item.get("priority", "spot")),
        item.get("zone"),
        str(item.get("reason", "")),
        float(item["at"]),
    )


def worker_span(item: Item) -> WorkerSpan:
    return WorkerSpan.from_dict(item["span"])
