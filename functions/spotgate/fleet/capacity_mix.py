"""Which kind of capacity makes up a pool's size: spot where it can be had, on-demand where not.

Spot GPUs cost a fraction of on-demand ones but can be refused or taken back.
A mix policy splits the autoscaler's total into spot and on-demand targets,
places spot across zones, and names the workers to drain when the pool shrinks
or swaps on-demand back for spot. It is pure, like the autoscaler: time comes
from the signals and its memory is a small JSON-able `CapacityMixState`.
`spot-first` (the default) lives here with the helpers every mix shares (how
spot refusals are read, zone placement, make-before-break drains, the plan's
head); `on-demand-only`, `spot-only` and `spot-hedge` are in capacity_mixes.py.

Its plan (`CapacityPlan`) says why in two forms: `reason`, the text an
operator reads in the monitor's `why` (its wording may change), which always
opens with the head "spot a->b, on-demand c->d", and `codes`, one stable code
per further part of that text, in the same order. The codes are a contract:

- `spot_refused`: spot was refused in some zones; the others are still tried.
  Text: "spot refused in zone 1 (sku_not_available)".
- `spot_refused_all_zones`: every zone refused spot; on-demand fills the gap.
  Text: "spot refused in all zones, on-demand fills 1".
- `eviction_burst`: evictions came in a burst; on-demand fills the gap.
- `on_demand_kept`: spot is healthy (spot-hedge: ready) again, on-demand is kept.
- `releasing_on_demand`: on-demand the pool no longer needs goes: spot has been
  healthy (spot-hedge: ready) for the cool-down, the pool shrank, or the policy
  takes none above the base (spot-only).
- `overprovision_for_risk`: extra spot is asked for while evictions are frequent.
- `releasing_spot`: the policy takes no spot (on-demand-only); spot is drained
  as on-demand comes up ready. Text: "on-demand only, releasing 2 spot".
- `spot_refused_no_fallback`: every zone refused spot and the policy takes no
  on-demand (spot-only), so the pool runs short until spot returns.
  Text: "spot refused in all zones, 2 short (no on-demand fallback)".
- `on_demand_covers_gap`: fewer spot workers are ready than the pool needs
  (preempted, refused, or still coming up); on-demand covers the gap at once
  (spot-hedge). Text: "spot ready 1 of 3, on-demand covers 2".
- `overprovision_hedge`: spot beyond the pool's size, asked for always, not
  only under eviction risk (spot-hedge). Text: "+1 spot hedge".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from spotgate.fleet.capacity_plan import NOOP, REPLACE, SCALE_DOWN, SCALE_UP, CapacityPlan
from spotgate.fleet.signals import ON_DEMAND, SPOT, CapacityFailure, PoolSignals, WorkerSignal
from spotgate.fleet.worker import WorkerState
from spotgate.named_policy import NamedPolicy

SPOT_REFUSED = "spot_refused"
SPOT_REFUSED_ALL_ZONES = "spot_refused_all_zones"
EVICTION_BURST = "eviction_burst"
ON_DEMAND_KEPT = "on_demand_kept"
RELEASING_ON_DEMAND = "releasing_on_demand"
OVERPROVISION_FOR_RISK = "overprovision_for_risk"
RELEASING_SPOT = "releasing_spot"
SPOT_REFUSED_NO_FALLBACK = "spot_refused_no_fallback"
ON_DEMAND_COVERS_GAP = "on_demand_covers_gap"
OVERPROVISION_HEDGE = "overprovision_hedge"
CODES = (
    SPOT_REFUSED,
    SPOT_REFUSED_ALL_ZONES,
    EVICTION_BURST,
    ON_DEMAND_KEPT,
    RELEASING_ON_DEMAND,
    OVERPROVISION_FOR_RISK,
    RELEASING_SPOT,
    SPOT_REFUSED_NO_FALLBACK,
    ON_DEMAND_COVERS_GAP,
    OVERPROVISION_HEDGE,
)
"""Every code a capacity mix may give (see the module docstring)."""


@dataclass(frozen=True)
class CapacityMixConfig:
    """Tunables any mix policy may read; windows are in seconds of signal time."""

    zones: tuple[str, ...] = ("1", "2", "3")
    base_on_demand: int = 0
    spot_failure_window_s: float = 600.0
    eviction_window_s: float = 600.0
    eviction_burst_threshold: int = 3
    overprovision_eviction_threshold: int = 3
    overprovision_spot: int = 0
    spot_healthy_cooldown_s: float = 900.0
    zone_cooldown_s: float = 900.0
    spot_ready_cooldown_s: float = 120.0
    """spot-hedge: how long ready spot must cover the pool before its on-demand goes."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["zones"] = list(self.zones)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CapacityMixConfig:
        fields = cls.__dataclass_fields__
        values = {k: v for k, v in (data or {}).items() if k in fields}
        if "zones" in values:
            values["zones"] = tuple(str(z) for z in values["zones"])
        return cls(**values)


@dataclass(frozen=True)
class CapacityMixState:
    """`last_trouble_at`: when spot last failed or burst; on-demand stays until a cool-down after.

    Kept in state, not only derived from the signals, because the signals carry
    recent events only and the cool-down may outlast what they remember.
    """

    last_trouble_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CapacityMixState:
        value = (data or {}).get("last_trouble_at")
        return cls(last_trouble_at=None if value is None else float(value))


class MixResult(NamedTuple):
    plan: CapacityPlan
    state: CapacityMixState


class CapacityMix(NamedPolicy, family="capacity mix"):
    """Splits a desired total into spot and on-demand, by zone, and picks workers to drain.

    `CapacityMix.make(name, config)` builds the one registered as `name` (default: spot-first).
    """

    def __init__(self, config: CapacityMixConfig | None = None) -> None:
        self.config = config or CapacityMixConfig()

    def decide(
        self, desired: int, signals: PoolSignals, state: CapacityMixState | None = None
    ) -> MixResult:
        raise NotImplementedError

    @staticmethod
    def dump_state(state: CapacityMixState) -> dict[str, Any]:
        return state.to_dict()

    @staticmethod
    def load_state(data: Mapping[str, Any] | None) -> CapacityMixState:
        return CapacityMixState.from_dict(data)


class SpotFirst(CapacityMix, name="spot-first", default=True):
    """Spot by default; on-demand fills in while spot is refused or being evicted in bursts.

    On-demand taken as a fallback is sticky until spot has been trouble-free
    for `spot_healthy_cooldown_s`, so a single quiet tick does not flap the pool
    between the two. Spot is spread over the allowed zones, avoiding zones that
    evicted or refused spot recently, since those are the likeliest to do it again.

    Spot counts as refused once every zone has refused it within
    `spot_failure_window_s`: exactly when placement has no zone left to try.
    The two must use one definition, or the pool livelocks: with "refused"
    meaning "every zone failed" but placement also shunning cooling zones, a
    pool whose last untried zone had just evicted was sent back each tick to a
    zone that had already refused, and on-demand never came.

    A zone that is cooling but has not refused still counts as one to try
    (last, after zones neither cooling nor refused). An eviction says the zone
    had spot and took some back, not that it has none: treating it as refused
    would send the pool to on-demand, sticky for the whole healthy cool-down,
    without asking a zone that may well say yes, and eviction trouble has its
    own trigger (the burst threshold). The price is one more refused request
    per cooling zone; since no zone is asked twice while its refusal is recent,
    on-demand comes at most one tick per zone after the first refusal. A zone
    both cooling and refused counts as refused: the refusal is the stronger
    news about whether spot can be had there now.
    """

    def decide(
        self, desired: int, signals: PoolSignals, state: CapacityMixState | None = None
    ) -> MixResult:
        cfg = self.config
        now = signals.now
        state = state or CapacityMixState()
        desired = max(0, desired)
        live = [w for w in signals.workers if w.live]
        spot_live = [w for w in live if w.priority == SPOT]
        od_live = sum(1 for w in live if w.priority == ON_DEMAND)

        market = read_spot_market(signals, cfg)
        failures, spot_refused = market.failures, market.refused_everywhere
        recent = [e for e in signals.evictions if now - e.at <= cfg.eviction_window_s]
        burst = len(recent) >= cfg.eviction_burst_threshold
        at_risk = len(recent) >= cfg.overprovision_eviction_threshold

        trouble_at = state.last_trouble_at
        if spot_refused:
            trouble_at = max(trouble_at or 0.0, max(f.at for f in failures))
        if burst:
            trouble_at = max(trouble_at or 0.0, max(e.at for e in recent))
        new_state = CapacityMixState(last_trouble_at=trouble_at)
        fallback = trouble_at is not None and now - trouble_at < cfg.spot_healthy_cooldown_s

        base = min(cfg.base_on_demand, desired)
        reasons: list[tuple[str, str]] = []  # (code, text)
        if fallback:
            gap = max(0, desired - base - len(spot_live))
            on_demand = min(desired, max(base + gap, od_live))
            if spot_refused:
                fills = f"spot refused in all zones, on-demand fills {on_demand - base}"
                reasons.append((SPOT_REFUSED_ALL_ZONES, fills))
            if burst:
                burst_text = f"{len(recent)} evictions in {cfg.eviction_window_s:g}s"
                reasons.append((EVICTION_BURST, burst_text))
            if not (spot_refused or burst):
                left = cfg.spot_healthy_cooldown_s - (now - (trouble_at or now))
                kept = f"spot healthy again, on-demand kept {left:.0f}s more"
                reasons.append((ON_DEMAND_KEPT, kept))
        else:
            on_demand = base
            if od_live > base:
                releasing = "spot healthy for the cool-down, releasing on-demand"
                reasons.append((RELEASING_ON_DEMAND, releasing))
        if failures and not spot_refused:
            reasons.insert(0, (SPOT_REFUSED, refused_where(failures)))
        spot = desired - on_demand
        if at_risk and not spot_refused and desired > 0 and cfg.overprovision_spot > 0:
            spot += cfg.overprovision_spot
            extra = f"+{cfg.overprovision_spot} spot for eviction risk"
            reasons.append((OVERPROVISION_FOR_RISK, extra))

        per_zone = place_spot(cfg.zones, spot, spot_live, market.refused_zones, market.cooling)
        drain = drain_workers(live, spot, on_demand, per_zone, spot_healthy=not fallback)
        return MixResult(make_plan(live, spot, on_demand, per_zone, drain, reasons), new_state)


class SpotMarket(NamedTuple):
    """Where spot may be had, read one way for every mix: placement and "refused in every
    zone" must agree, or a pool livelocks (see `SpotFirst`).

    `failures`: spot refusals within `spot_failure_window_s`; `refused_everywhere`:
    no zone is left to ask; `cooling`: zones that evicted within `zone_cooldown_s`.
    """

    failures: list[CapacityFailure]
    refused_zones: set[str]
    refused_everywhere: bool
    cooling: set[str]


def read_spot_market(signals: PoolSignals, cfg: CapacityMixConfig) -> SpotMarket:
    now = signals.now
    failures = [
        f
        for f in signals.capacity_failures
        if f.priority == SPOT and now - f.at <= cfg.spot_failure_window_s
    ]
    failed_zones = {f.zone for f in failures}
    untried = [z for z in cfg.zones if z not in failed_zones]
    everywhere = bool(failures) and (None in failed_zones or not untried)
    cooling = {e.zone for e in signals.evictions if e.zone and now - e.at < cfg.zone_cooldown_s}
    refused_zones = {z for z in failed_zones if z is not None}
    return SpotMarket(failures, refused_zones, everywhere, cooling)


def place_spot(
    zones: tuple[str, ...],
    spot: int,
    spot_live: list[WorkerSignal],
    refused: set[str],
    cooling: set[str],
) -> dict[str, int]:
    """Keep spot where it runs, add it where it is likeliest to be had, cut risky zones first.

    New spot never goes to a zone that refused it while another has not:
    asking again there is what livelocked a pool. Among the rest a zone
    that is not cooling wins over an emptier one that is, since spreading
    is worth less than not being evicted again; a cooling zone is still
    used when nothing better is left. Only when every zone refused (the
    caller then wants no new spot) does the least loaded zone take it.
    """
    counts = {z: sum(1 for w in spot_live if w.zone == z) for z in zones}
    candidates = [z for z in zones if z not in refused] or list(zones)
    while sum(counts.values()) < spot and zones:
        zone = min(candidates, key=lambda z: (z in cooling, counts[z], z))
        counts[zone] += 1
    avoid = refused | cooling

    def lightest(zone: str) -> float:
        return min((w.in_flight for w in spot_live if w.zone == zone), default=0.0)

    while sum(counts.values()) > spot:
        # cut cooling zones first, then the fullest, then where a worker is idle
        zone = max(
            (z for z in zones if counts[z] > 0),
            key=lambda z: (z in avoid, counts[z], -lightest(z), z),
        )
        counts[zone] -= 1
    return {z: counts[z] for z in sorted(zones)}


def drain_workers(
    live: list[WorkerSignal],
    spot: int,
    on_demand: int,
    per_zone: dict[str, int],
    *,
    spot_healthy: bool,
    keep_ready: int | None = None,
) -> list[str]:
    """Workers to retire now, make-before-break: never below `keep_ready` ready ones.

    `keep_ready` defaults to `spot + on_demand`; spot-hedge passes the pool's
    size, or its spare spot, still coming up, would hold back on-demand that
    ready spot already replaces. Idle workers go first (never one serving requests while an idle one
    will do), then on-demand while spot is healthy (it costs more), then
    the least loaded. Provisioning workers carry no load, so they may
    always go; a ready one only while enough other ready workers remain.
    """
    floor = spot + on_demand if keep_ready is None else keep_ready
    excess: dict[tuple[str, str | None], int] = {}
    od_have = sum(1 for w in live if w.priority == ON_DEMAND)
    excess[(ON_DEMAND, None)] = max(0, od_have - on_demand)
    spot_workers = [w for w in live if w.priority == SPOT]
    for zone in sorted({w.zone or "" for w in spot_workers}):
        have = sum(1 for w in spot_workers if (w.zone or "") == zone)
        excess[(SPOT, zone)] = max(0, have - per_zone.get(zone, 0))

    def key(w: WorkerSignal) -> tuple[str, str | None]:
        return (ON_DEMAND, None) if w.priority == ON_DEMAND else (SPOT, w.zone or "")

    first = ON_DEMAND if spot_healthy else SPOT
    order = sorted(
        live,
        key=lambda w: (
            w.in_flight > 0,
            w.priority != first,
            w.state != WorkerState.PROVISIONING,
            w.in_flight,
            w.kv_cache_usage,
            w.worker_id,
        ),
    )
    ready_left = sum(1 for w in live if w.state == WorkerState.READY)
    drain: list[str] = []
    for worker in order:
        if excess.get(key(worker), 0) <= 0:
            continue
        if worker.state == WorkerState.READY:
            if ready_left - 1 < floor:
                continue
            ready_left -= 1
        excess[key(worker)] -= 1
        drain.append(worker.worker_id)
    return sorted(drain)


def make_plan(
    live: list[WorkerSignal],
    spot: int,
    on_demand: int,
    per_zone: dict[str, int],
    drain: list[str],
    reasons: list[tuple[str, str]],
) -> CapacityPlan:
    """The plan with its op and the head "spot a->b, on-demand c->d", then `reasons` in order.

    Shared so every mix names the same change the same way: the op and the
    head are what an operator compares across pools, whatever their mix.
    """
    spot_have = sum(1 for w in live if w.priority == SPOT)
    od_have = sum(1 for w in live if w.priority == ON_DEMAND)
    wanted, have = spot + on_demand, spot_have + od_have
    if (spot - spot_have) * (on_demand - od_have) < 0 or (wanted == have and drain):
        op = REPLACE
    elif wanted > have:
        op = SCALE_UP
    elif wanted < have:
        op = SCALE_DOWN
    else:
        op = NOOP
    head = f"spot {spot_have}->{spot}, on-demand {od_have}->{on_demand}"
    return CapacityPlan(
        op=op,
        spot_target=spot,
        on_demand_target=on_demand,
        per_zone=per_zone,
        drain=drain,
        reason="; ".join([head, *(text for _, text in reasons)]),
        codes=[code for code, _ in reasons],
    )


def refused_where(failures: list[CapacityFailure]) -> str:
    """Where spot was refused and why, e.g. "spot refused in zone 1 (sku_not_available)".

    Said while other zones are still being tried, so an operator sees the
    trouble coming before the pool falls back to on-demand.
    """
    why: dict[str, set[str]] = {}
    for failure in failures:
        why.setdefault(failure.zone or "", set()).add(failure.reason or "refused")
    where = ", ".join(
        f"zone {zone} ({', '.join(sorted(reasons))})" for zone, reasons in sorted(why.items())
    )
    return f"spot refused in {where}"


# Last, once every name above exists: the other mixes register wherever CapacityMix is
# imported, so no `CapacityMix.make(name)` depends on which module a caller imported.
from spotgate.fleet import capacity_mixes  # noqa: E402, F401
