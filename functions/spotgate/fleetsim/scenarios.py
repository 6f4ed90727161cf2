"""What the spot market does to a fleet in a simulation: evictions, bursts, refusals.

Evictions strike each running spot VM independently at `evictions_per_hour`
(per VM-hour, per zone where `zone_rates` says so), and correlated bursts
strike a whole zone at `bursts_per_hour`, taking `burst_share` of its spot
VMs at once, as capacity reclaims do. Each comes with `notice_s` of warning
(Azure gives at least 30 s). Refusals are windows in which a zone (or every
zone) answers a spot request with no capacity.

The presets are assumptions, not measurements: Azure publishes no eviction
rates, only that they vary by SKU, region and time. They span what operators
report, from a quiet week to a bad day, so a policy is judged across them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Refusal:
    start_s: float
    end_s: float
    zone: str | None = None
    """None: every zone refuses spot."""


@dataclass(frozen=True)
class Scenario:
    name: str
    evictions_per_hour: float = 0.0
    zone_rates: dict[str, float] = field(default_factory=dict)
    bursts_per_hour: float = 0.0
    burst_share: float = 0.5
    notice_s: float = 30.0
    refusals: tuple[Refusal, ...] = ()
    description: str = ""

    def rate_in(self, zone: str | None) -> float:
        return self.zone_rates.get(zone or "", self.evictions_per_hour)

    def refused(self, zone: str | None, at_s: float) -> bool:
        return any(
            r.start_s <= at_s < r.end_s and (r.zone is None or r.zone == zone)
            for r in self.refusals
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("calm", description="no evictions, no refusals"),
        Scenario(
            "typical",
            evictions_per_hour=0.05,
            description="one eviction per 20 spot VM-hours, no bursts",
        ),
        Scenario(
            "bad-day",
            evictions_per_hour=0.3,
            zone_rates={"1": 0.6},
            bursts_per_hour=0.5,
            burst_share=0.6,
            description="frequent evictions, zone 1 worst, a zone-wide burst every ~2 h",
        ),
        Scenario(
            "spot-drought",
            evictions_per_hour=0.1,
            refusals=(Refusal(900.0, 2700.0),),
            description="spot refused in every zone from minute 15 to 45",
        ),
    )
}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"no scenario {name!r}: one of {', '.join(SCENARIOS)}") from None
