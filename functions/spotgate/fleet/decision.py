"""What the fleet monitor concluded from one observation, as a value that survives replay.

A decision is computed inside the orchestrator, so it must be a pure function
of the observation and the previous decision: no clock, no I/O. It is then
written out by an activity and carried in the orchestration state, which is
why it converts to and from plain JSON types. For now the only action is
"observe": the monitor records what changed; scaling policies come later and
will fill in `desired` and other actions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spotgate.fleet.observation import PoolObservation

OBSERVE = "observe"

_COUNTS = ("ready", "draining", "provisioning")


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
    total: int = 0
    expired: list[str] = field(default_factory=list)
    evicting: list[str] = field(default_factory=list)
    new_evictions: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        fields = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in fields}
        for name in ("expired", "evicting", "new_evictions", "changes"):
            values[name] = list(values.get(name) or [])
        return cls(**values)


def decide(observation: PoolObservation, previous: Decision | None, tick: int) -> Decision:
    """Describe the pool relative to the last decision, so a reader sees events, not just levels.

    Evictions are compared with the previous decision because a draining
    worker stays in `evicting` for several ticks; only its first sighting is
    news. Expiries are news by construction: observe_pool reports each once.
    """
    seen = set(previous.evicting) if previous else set()
    new_evictions = [w for w in observation.evicting if w not in seen]
    changes = [f"expired {w}" for w in observation.expired]
    changes += [f"eviction notice {w}" for w in new_evictions]
    for name in _COUNTS:
        now = getattr(observation, name)
        before = getattr(previous, name) if previous else 0
        if now != before:
            changes.append(f"{name} {before}->{now}")
    reason = "; ".join(changes) if changes else "no change"
    return Decision(
        pool=observation.pool,
        tick=tick,
        action=OBSERVE,
        reason=reason,
        observed_at=observation.observed_at,
        desired=observation.actual,
        actual=observation.actual,
        ready=observation.ready,
        draining=observation.draining,
        provisioning=observation.provisioning,
        gone=observation.gone,
        total=observation.total,
        expired=list(observation.expired),
        evicting=list(observation.evicting),
        new_evictions=new_evictions,
        changes=changes,
    )
