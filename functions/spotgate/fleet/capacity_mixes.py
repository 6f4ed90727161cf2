"""The mixes a fleet simulator weighs against spot-first: both extremes, and SkyServe's SpotHedge.

`on-demand-only` is the baseline a saving is measured from, `spot-only` the
cheapest and riskiest bound, and `spot-hedge` the published policy that claims
most of the saving at close to on-demand availability. Each is a small class
in the `CapacityMix` registry (capacity_mix.py imports this module, so the
names resolve wherever `CapacityMix` does), reads the same `CapacityMixConfig`
and reuses spot-first's helpers, so a difference a simulator measures between
two mixes comes from the policy and not from two readings of the same signals:
refusals and cooling zones (`read_spot_market`), zone placement (`place_spot`),
make-before-break drains (`drain_workers`) and the plan's head (`make_plan`).
Their reason codes are in capacity_mix.py's list, which is the contract.
"""

from __future__ import annotations

from spotgate.fleet.capacity_mix import (
    ON_DEMAND_COVERS_GAP,
    ON_DEMAND_KEPT,
    OVERPROVISION_FOR_RISK,
    OVERPROVISION_HEDGE,
    RELEASING_ON_DEMAND,
    RELEASING_SPOT,
    SPOT_REFUSED,
    SPOT_REFUSED_ALL_ZONES,
    SPOT_REFUSED_NO_FALLBACK,
    CapacityMix,
    CapacityMixState,
    MixResult,
    drain_workers,
    make_plan,
    place_spot,
    read_spot_market,
    refused_where,
)
from spotgate.fleet.signals import ON_DEMAND, SPOT, PoolSignals, WorkerSignal
from spotgate.fleet.worker import WorkerState

HEDGE_SPOT_DEFAULT = 1
"""spot-hedge's spare spot (the paper's N_extra) when `overprovision_spot` is left at 0.

One, because at zone level the usual loss is one worker at a time: a single
spare keeps the pool at its size through one preemption while the replacement
comes up, for the price of one spot VM, a fraction of the on-demand one the
fallback would otherwise launch for that window. A second spare pays only when
preemptions come together, and those cluster in a zone, which the spread
across zones already hedges. The paper leaves N_extra to the operator; a pool
that sees correlated losses raises `overprovision_spot`.
"""


def _live(signals: PoolSignals) -> tuple[list[WorkerSignal], list[WorkerSignal], int]:
    live = [w for w in signals.workers if w.live]
    return live, [w for w in live if w.priority == SPOT], sum(w.priority == ON_DEMAND for w in live)


class OnDemandOnly(CapacityMix, name="on-demand-only"):
    """Every worker on-demand, whatever spot does: the cost and availability others are held to.

    Reads no spot signal and remembers nothing (the state passes through, so a
    pool switched back to a spot mix keeps that mix's memory). Spot left by a
    previous mix is drained make-before-break, most of all here: a spot worker
    goes only once an on-demand one is ready in its place, so switching a pool
    to the baseline never shrinks it. Config read: `zones` (to name them in
    `per_zone`, all at 0).
    """

    def decide(
        self, desired: int, signals: PoolSignals, state: CapacityMixState | None = None
    ) -> MixResult:
        desired = max(0, desired)
        live, spot_live, _ = _live(signals)
        per_zone = dict.fromkeys(sorted(self.config.zones), 0)
        drain = drain_workers(live, 0, desired, per_zone, spot_healthy=False)
        reasons: list[tuple[str, str]] = []
        if spot_live:
            reasons.append((RELEASING_SPOT, f"on-demand only, releasing {len(spot_live)} spot"))
        plan = make_plan(live, 0, desired, per_zone, drain, reasons)
        return MixResult(plan, state or CapacityMixState())


class SpotOnly(CapacityMix, name="spot-only"):
    """Spot in every zone and never on-demand beyond `base_on_demand`: the cheapest, the riskiest.

    When spot is refused or evicted the pool simply has fewer workers until spot
    comes back; that shortfall is what a simulator weighs against the saving.
    Replacements go where spot-first would send them (away from zones that
    refused or just evicted), and while every zone is refusing no zone is asked
    again until its refusal ages out of `spot_failure_window_s`, as in spot-first.
    Extra spot under eviction risk is kept (`overprovision_spot`, default 0):
    it buys no on-demand, and an operator who set it for the pool means it.
    On-demand above the base (left by a previous mix) is drained make-before-break.

    Config read: `zones`, `base_on_demand`, `spot_failure_window_s`,
    `zone_cooldown_s`, `eviction_window_s`, `overprovision_eviction_threshold`,
    `overprovision_spot`. No memory: the state passes through.
    """

    def decide(
        self, desired: int, signals: PoolSignals, state: CapacityMixState | None = None
    ) -> MixResult:
        cfg = self.config
        desired = max(0, desired)
        live, spot_live, od_live = _live(signals)
        market = read_spot_market(signals, cfg)
        base = min(cfg.base_on_demand, desired)
        spot = desired - base
        reasons: list[tuple[str, str]] = []
        if market.refused_everywhere:
            spot = min(spot, len(spot_live))
            short = f"{desired - base - spot} short (no on-demand fallback)"
            reasons.append((SPOT_REFUSED_NO_FALLBACK, f"spot refused in all zones, {short}"))
        elif market.failures:
            reasons.append((SPOT_REFUSED, refused_where(market.failures)))
        if od_live > base:
            reasons.append((RELEASING_ON_DEMAND, "spot only, releasing on-demand"))
        recent = [e for e in signals.evictions if signals.now - e.at <= cfg.eviction_window_s]
        at_risk = len(recent) >= cfg.overprovision_eviction_threshold
        if at_risk and not market.refused_everywhere and spot > 0 and cfg.overprovision_spot > 0:
            spot += cfg.overprovision_spot
            extra = f"+{cfg.overprovision_spot} spot for eviction risk"
            reasons.append((OVERPROVISION_FOR_RISK, extra))
        per_zone = place_spot(cfg.zones, spot, spot_live, market.refused_zones, market.cooling)
        drain = drain_workers(live, spot, base, per_zone, spot_healthy=True)
        plan = make_plan(live, spot, base, per_zone, drain, reasons)
        return MixResult(plan, state or CapacityMixState())


class SpotHedge(CapacityMix, name="spot-hedge"):
    """SpotHedge from SkyServe (Mao et al., "SkyServe: Serving AI Models across Regions and
    Clouds with Spot Instances", EuroSys 2025, arXiv:2411.01438), at zone level.

    Its three parts, as here:

    - spread: spot goes across zones, new workers away from zones that just
      preempted or refused (spot-first's placement, `place_spot`);
    - overprovision: always `desired + N_extra` spot (N_extra is
      `overprovision_spot`, or `HEDGE_SPOT_DEFAULT` when that is 0), not only
      under eviction risk as spot-first does; the spare is never needed ready
      before on-demand may go (`drain_workers(keep_ready=desired)`);
    - dynamic fallback: whenever fewer than the pool's spot are READY
      (preempted, refused, or still coming up, a scale-up included, since a
      request that will never come up looks like a slow one until it fails),
      on-demand is launched for the gap at once, and goes again make-before-break
      once enough spot is ready.

    Where this simplifies the paper: failure domains are the zones of one
    region, not regions and clouds, so a region-wide spot shortage is not
    hedged; a zone counts as preempted while it is cooling or refused (time
    windows from the signals) rather than moving between active and preempted
    sets on each launch; zones are taken as equally priced; and on-demand has no
    placement of its own.

    Where it adds to it: SkyServe's implementation sizes on-demand as target
    minus ready spot at every evaluation, so a worker that flickers ready and
    is preempted again launches and kills an on-demand VM each time. Here
    on-demand standing in for spot is kept until the gap has stayed below it
    for `spot_ready_cooldown_s` (default 120 s), then shrinks to the gap. Two
    minutes is 24 monitor ticks and four Azure eviction notices: a spot worker
    that survives it has outlived the likeliest early loss, and the price is at
    most two minutes of the on-demand VMs, well under the minutes a GPU VM
    takes to boot and load a model if it had to be launched again. It is
    short next to spot-first's 900 s because here the spare spot, not the
    on-demand, absorbs the next preemption.

    Memory: `last_trouble_at` is the last tick the gap needed all the
    on-demand standing in (or more). Config read: `zones`, `base_on_demand`
    (kept on-demand, as in spot-first; the fallback covers only the spot part),
    `spot_failure_window_s`, `zone_cooldown_s`, `overprovision_spot`,
    `spot_ready_cooldown_s`.
    """

    @property
    def spare(self) -> int:
        return self.config.overprovision_spot or HEDGE_SPOT_DEFAULT

    def decide(
        self, desired: int, signals: PoolSignals, state: CapacityMixState | None = None
    ) -> MixResult:
        cfg = self.config
        now = signals.now
        desired = max(0, desired)
        live, spot_live, od_live = _live(signals)
        market = read_spot_market(signals, cfg)
        base = min(cfg.base_on_demand, desired)
        need = desired - base  # spot the pool must have ready: the paper's N_tar
        ready = sum(1 for w in spot_live if w.state == WorkerState.READY)
        gap = max(0, need - ready)
        held = max(0, od_live - base)  # on-demand standing in for spot now

        trouble_at = (state or CapacityMixState()).last_trouble_at
        if gap > 0 and gap >= held:
            trouble_at = now
        cooling = trouble_at is not None and now - trouble_at < cfg.spot_ready_cooldown_s
        on_demand = min(desired, base + (max(gap, held) if cooling else gap))
        spot = need + self.spare if need > 0 else 0
        if market.refused_everywhere:  # ask no zone again while its refusal is recent
            spot = min(spot, len(spot_live))

        reasons: list[tuple[str, str]] = []
        if market.refused_everywhere:
            reasons.append(
                (SPOT_REFUSED_ALL_ZONES, f"spot refused in all zones, on-demand fills {gap}")
            )
        else:
            if market.failures:
                reasons.append((SPOT_REFUSED, refused_where(market.failures)))
            if gap > 0:
                covers = f"spot ready {ready} of {need}, on-demand covers {gap}"
                reasons.append((ON_DEMAND_COVERS_GAP, covers))
        if on_demand > base + gap:
            left = cfg.spot_ready_cooldown_s - (now - (trouble_at or now))
            reasons.append((ON_DEMAND_KEPT, f"spot ready again, on-demand kept {left:.0f}s more"))
        if od_live > on_demand:  # in the cool-down only when the pool itself shrank
            why = "pool smaller" if cooling else "spot ready for the cool-down"
            reasons.append((RELEASING_ON_DEMAND, f"{why}, releasing on-demand"))
        if spot > need:
            reasons.append((OVERPROVISION_HEDGE, f"+{spot - need} spot hedge"))

        per_zone = place_spot(cfg.zones, spot, spot_live, market.refused_zones, market.cooling)
        drain = drain_workers(
            live, spot, on_demand, per_zone, spot_healthy=True, keep_ready=desired
        )
        plan = make_plan(live, spot, on_demand, per_zone, drain, reasons)
        return MixResult(plan, CapacityMixState(last_trouble_at=trouble_at))
