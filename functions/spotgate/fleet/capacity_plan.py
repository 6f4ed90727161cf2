"""The capacity mix's plan for one pool: spot and on-demand targets, placement, drains.

The autoscaler says how many workers; the mix (capacity_mix.py) says which
kind and where, and this is its answer. Like `Decision`, it is computed inside
the orchestrator and then acted on by activities, so it is frozen,
deterministic (zones and drains are sorted) and converts to and from plain
JSON types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NOOP = "noop"
SCALE_UP = "scale_up"
SCALE_DOWN = "scale_down"
REPLACE = "replace"
OPS = (NOOP, SCALE_UP, SCALE_DOWN, REPLACE)


@dataclass(frozen=True)
class CapacityPlan:
    """Targets per priority and zone, plus which workers to drain to get there.

    `per_zone` places spot workers only: on-demand capacity is not at risk of
    eviction, so where it lands does not matter to the policy. `drain` lists
    the workers to retire now; the rest of the change is made by provisioning.
    `reason` is the text an operator reads; `codes` are its stable parts, the
    mix's reason codes (capacity_mix.py lists them), in the order of the text.
    """

    op: str
    spot_target: int
    on_demand_target: int
    per_zone: dict[str, int] = field(default_factory=dict)
    drain: list[str] = field(default_factory=list)
    reason: str = ""
    codes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown scaling op {self.op!r}; known: {', '.join(OPS)}")

    @property
    def total(self) -> int:
        return self.spot_target + self.on_demand_target

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "spot_target": self.spot_target,
            "on_demand_target": self.on_demand_target,
            "per_zone": dict(sorted(self.per_zone.items())),
            "drain": sorted(self.drain),
            "reason": self.reason,
            "codes": list(self.codes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CapacityPlan:
        return cls(
            op=str(data.get("op", NOOP)),
            spot_target=int(data.get("spot_target", 0)),
            on_demand_target=int(data.get("on_demand_target", 0)),
            per_zone={str(k): int(v) for k, v in sorted((data.get("per_zone") or {}).items())},
            drain=sorted(str(w) for w in data.get("drain") or ()),
            reason=str(data.get("reason", "")),
            codes=[str(c) for c in data.get("codes") or ()],
        )
