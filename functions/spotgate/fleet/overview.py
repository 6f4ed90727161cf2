"""The fleet as an operator reads it (`GET /fleet`, `spotgate fleet`): pools, workers, events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from spotgate.fleet.worker import Worker


def worker_view(worker: Worker, in_flight: int) -> dict[str, Any]:
    """A worker's record without its credential digest, plus what the gateway runs on it."""
    data = worker.to_dict()
    del data["credential"]
    data["in_flight"] = in_flight
    return data


def fleet_overview(
    pools: Sequence[str],
    workers: Sequence[Worker],
    in_flight: Callable[[str], int],
    monitor_statuses: Sequence[dict[str, Any] | None],
    decisions: list[dict[str, Any]],
) -> dict[str, Any]:
    """`monitor_statuses[i]` is pool i's monitor in Durable's status shape (or None)."""
    views = [worker_view(w, in_flight(w.id)) for w in workers]
    summaries = []
    for pool, status in zip(pools, monitor_statuses, strict=True):
        members = [w for w in views if w["pool"] == pool]
        custom = (status or {}).get("customStatus")
        monitor = custom or {}
        summaries.append(
            {
                "name": pool,
                "desired": monitor.get("desired"),
                "actual": monitor.get("actual"),
                "workers": len(members),
                "ready": sum(1 for w in members if w["state"] == "ready"),
                "draining": sum(1 for w in members if w["state"] == "draining"),
                "provisioning": sum(1 for w in members if w["state"] == "provisioning"),
                "monitor": custom,
            }
        )
    evictions = [{"worker": w["id"], **w["eviction"]} for w in views if w.get("eviction")]
    return {"pools": summaries, "workers": views, "decisions": decisions, "evictions": evictions}
