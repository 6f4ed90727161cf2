"""What the fleet monitor concluded in one tick, and what it will do about it, as one value.

A decision is computed inside the orchestrator, so it must be a pure function
of the observation and the monitor's state: no clock, no I/O. It is then
acted on by activities, written to the journal and shown in the custom
status, which is why it converts to and from plain JSON types. `reason` is
the sentence an operator reads first: the autoscaler's why, the mix's why,
and what happened to the pool since the last tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from spotgate.fleet.observation import PoolObservation
from spotgate.fleet.worker import WorkerState

_COUNTS = (WorkerState.READY, WorkerState.DRAINING, WorkerState.PROVISIONING)
_LISTS = ("provision", "drain", "delete", "expired", "evicting", "new_evictions", "changes")


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
    provision: list[dict[str, Any]] = field(default_factory=list)
    drain: list[str] = field(default_factory=list)
    delete: list[dict[str, str]] = field(default_factory=list)
    dry_run: bool = False
    expired: list[str] = field(default_factory=list)
    evicting: list[str] = field(default_factory=list)
    new_evictions: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        fields = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in fields}
        for name in _LISTS:
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
