"""What the fleet monitor concluded in one tick, and what it will do about it, as one value.

A decision is computed inside the orchestrator, so it must be a pure function
of the observation and the monitor's state: no clock, no I/O. It is then
acted on by activities, written to the journal and shown in the custom
status, which is why it converts to and from plain JSON types. `reason` is
the sentence an operator reads first: the autoscaler's why, the mix's why,
the actions, and what happened to the pool since the last tick. Its wording
is for people and may change; `codes` are the stable reasons behind it, for
programs and tests, in the order of the text: the autoscaler's code (one of
`autoscaler.CODES`), the capacity mix's codes (`capacity_mix.CODES`), then one
per kind of deletion (`planner.DELETE_CODES`). A decision written before
codes existed reads back with none.

The JSON keeps the shape the monitor has always written (custom status,
journal, orchestration history): `provision` entries are
`{"priority", "zone", "count", "pool"}` and `delete` entries
`{"worker_id", "why"}`, which is also what the activities receive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from spotgate.fleet.compute import ProvisionRequest
from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.worker import WorkerState

_COUNTS = (WorkerState.READY, WorkerState.DRAINING, WorkerState.PROVISIONING)
_NAMES = ("drain", "expired", "evicting", "new_evictions", "changes", "codes")
"""The list fields that hold plain strings."""


@dataclass(frozen=True)
class DeleteRequest:
    """One worker the monitor deletes this tick, and why (the registry keeps the why)."""

    worker_id: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"worker_id": self.worker_id, "why": self.why}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeleteRequest:
        return cls(worker_id=str(data["worker_id"]), why=str(data.get("why") or ""))


@dataclass(frozen=True)
class Decision:
    pool: str
    tick: int
    action: str
    reason: str
    observed_at: float
    desired: int
    actual: int
    ready: int = 0
    draining: int = 0
    provisioning: int = 0
    gone: int = 0
    load: float = 0.0
    spot_target: int = 0
    on_demand_target: int = 0
    per_zone: dict[str, int] = field(default_factory=dict)
    provision: list[ProvisionRequest] = field(default_factory=list)
    drain: list[str] = field(default_factory=list)
    delete: list[DeleteRequest] = field(default_factory=list)
    dry_run: bool = False
    expired: list[str] = field(default_factory=list)
    evicting: list[str] = field(default_factory=list)
    new_evictions: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["provision"] = [p.to_dict() for p in self.provision]  # their wire shape
        data["delete"] = [d.to_dict() for d in self.delete]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        known = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in known}
        pool = values.get("pool")
        values["provision"] = [
            ProvisionRequest.from_dict({"pool": pool, **p}) for p in values.get("provision") or []
        ]
        values["delete"] = [DeleteRequest.from_dict(d) for d in values.get("delete") or []]
        for name in _NAMES:
            values[name] = list(values.get(name) or [])
        values["per_zone"] = dict(values.get("per_zone") or {})
        return cls(**values)


def describe_changes(
    observation: PoolObservation, previous: Decision | None
) -> tuple[list[str], list[str]]:
    """(new evictions, change lines) relative to the last decision, so a reader sees events.

    Evictions are compared with the previous decision because a draining
    worker stays `evicting` for several ticks; only its first sighting is news.
    Expiries, vanished and adopted workers are news by construction: the
    observation reports each once.
    """
    seen = set(previous.evicting) if previous else set()
    new_evictions = [w for w in observation.evicting if w not in seen]
    changes = [f"expired {w}" for w in observation.expired]
    changes += [f"instance gone {w}" for w in observation.vanished]
    changes += [f"adopted {w}" for w in observation.adopted]
    changes += [f"eviction notice {w}" for w in new_evictions]
    for name in _COUNTS:
        now = observation.count(name)
        before = getattr(previous, name) if previous else 0
        if now != before:
            changes.append(f"{name} {before}->{now}")
    return new_evictions, changes
