"""The queue-depth autoscaler, driven through named load scenarios a user would notice."""

from __future__ import annotations

import json

import pytest

from spotgate.fleet import autoscaler
from spotgate.fleet.autoscaler import (
    CODES,
    Autoscaler,
    AutoscalerConfig,
    AutoscalerState,
    QueueDepth,
)
from spotgate.fleet.signals import PoolSignals, WorkerSignal

T0 = 1_700_000_000.0

# (seconds after T0, gateway in flight, admission queue depth, expected target), or
# (seconds after T0, gateway in flight, admission queue depth, batch lines waiting, expected)
Step = tuple[float, int, int, int] | tuple[float, int, int, int, int]

SCENARIOS: dict[str, tuple[AutoscalerConfig, int, list[Step]]] = {
    "load step up scales in one decision": (
        AutoscalerConfig(min_workers=1, max_workers=10, target_concurrency_per_worker=4),
        1,
        [(0, 2, 0, 1), (10, 16, 4, 5), (20, 16, 4, 5)],
    ),
    "load drop waits for the stabilisation window": (
        AutoscalerConfig(min_workers=1, max_workers=10, target_concurrency_per_worker=4),
        1,
        [(0, 20, 0, 5), (10, 4, 0, 5), (200, 4, 0, 5), (309, 4, 0, 5), (310, 4, 0, 1)],
    ),
    "a burst inside the window sets how far down it goes": (
        AutoscalerConfig(min_workers=1, max_workers=10, target_concurrency_per_worker=4),
        1,
        [
            (0, 20, 0, 5),
            (10, 4, 0, 5),
            (100, 12, 0, 5),
            (310, 4, 0, 3),
            (320, 4, 0, 3),
            (620, 4, 0, 1),
        ],
    ),
    "load back up cancels a pending scale-down": (
        AutoscalerConfig(min_workers=1, max_workers=10, target_concurrency_per_worker=4),
        1,
        [
            (0, 20, 0, 5),
            (10, 4, 0, 5),
            (100, 20, 0, 5),
            (310, 4, 0, 5),
            (609, 4, 0, 5),
            (610, 4, 0, 1),
        ],
    ),
    "idle to zero, then one on the first queued request": (
        AutoscalerConfig(min_workers=0, max_workers=10, target_concurrency_per_worker=4),
        1,
        [
            (0, 3, 0, 1),
            (10, 0, 0, 1),
            (300, 0, 0, 1),
            (609, 0, 0, 1),
            (610, 0, 0, 0),
            (700, 0, 0, 0),
            (701, 0, 1, 1),
        ],
    ),
    "idle pool steps down to one, then to zero": (
        AutoscalerConfig(min_workers=0, max_workers=10, target_concurrency_per_worker=4),
        3,
        [(0, 0, 0, 3), (300, 0, 0, 1), (599, 0, 0, 1), (600, 0, 0, 0)],
    ),
    "min_workers above zero never goes to zero": (
        AutoscalerConfig(min_workers=2, max_workers=10, target_concurrency_per_worker=4),
        2,
        [(0, 0, 0, 2), (5000, 0, 0, 2)],
    ),
    "clamped to max_workers": (
        AutoscalerConfig(min_workers=1, max_workers=10, target_concurrency_per_worker=4),
        1,
        [(0, 1000, 500, 10)],
    ),
    "raised to min_workers at once": (
        AutoscalerConfig(min_workers=3, max_workers=10, target_concurrency_per_worker=4),
        0,
        [(0, 0, 0, 3)],
    ),
    "shrunk to a lowered max_workers at once": (
        AutoscalerConfig(min_workers=0, max_workers=2, target_concurrency_per_worker=4),
        6,
        [(0, 100, 0, 2)],
    ),
    # 4 slots a worker, 2 s a line, 30 minutes to drain: 3,600 lines a worker
    "a batch backlog grows an empty pool, which idles to zero after it": (
        AutoscalerConfig(min_workers=0, max_workers=10, target_concurrency_per_worker=4),
        0,
        [
            (0, 0, 0, 10_000, 3),
            (60, 0, 0, 5_000, 3),
            (400, 0, 0, 5_000, 2),
            (500, 0, 0, 0, 2),
            (800, 0, 0, 0, 1),
            (1099, 0, 0, 0, 1),
            (1100, 0, 0, 0, 0),
        ],
    ),
}


def signals(at: float, in_flight: int, queued: int, live: int, batch: int = 0) -> PoolSignals:
    workers = [WorkerSignal(f"w{i}", state="ready") for i in range(live)]
    return PoolSignals.build(
        "pool-a",
        T0 + at,
        gateway_in_flight=in_flight,
        admission_queue_depth=queued,
        batch_queue_depth=batch,
        workers=workers,
    )


def run(
    config: AutoscalerConfig, live: int, steps: list[Step], *, through_json: bool = False
) -> list[tuple[int, str, str]]:
    """Feed the steps, the fleet following each target, and collect (target, code, reason)."""
    policy = Autoscaler.make("queue-depth", config)
    state: AutoscalerState | None = None
    out = []
    for at, in_flight, queued, *rest in steps:
        batch = int(rest[0]) if len(rest) == 2 else 0
        if through_json and state is not None:
            state = policy.load_state(json.loads(json.dumps(policy.dump_state(state))))
        seen = signals(at, in_flight, queued, live, batch)
        target, code, reason, state = policy.decide(seen, state)
        live = target
        out.append((target, code, reason))
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name: str) -> None:
    config, live, steps = SCENARIOS[name]
    targets = [t for t, *_ in run(config, live, steps)]
    assert targets == [expected for *_, expected in steps]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_state_round_trip_gives_identical_decisions(name: str) -> None:
    config, live, steps = SCENARIOS[name]
    assert run(config, live, steps, through_json=True) == run(config, live, steps)


# each reason code, and a (scenario, step) that answers with it
CODE_EXAMPLES: dict[str, tuple[str, int]] = {
    "steady": ("load step up scales in one decision", 2),
    "scale_up_for_load": ("load step up scales in one decision", 1),
    "scale_up_for_batch": ("a batch backlog grows an empty pool, which idles to zero after it", 0),
    "raised_to_min": ("raised to min_workers at once", 0),
    "clamped_to_max": ("shrunk to a lowered max_workers at once", 0),
    "scale_down_pending": ("load drop waits for the stabilisation window", 1),
    "scale_down_after_window": ("load drop waits for the stabilisation window", 4),
    "idle_hold": ("idle to zero, then one on the first queued request", 1),
    "idle_to_zero": ("idle to zero, then one on the first queued request", 4),
}


def test_every_code_is_documented_and_has_an_example() -> None:
    assert sorted(CODE_EXAMPLES) == sorted(CODES)
    assert all(f"`{code}`" in (autoscaler.__doc__ or "") for code in CODES)


@pytest.mark.parametrize("code", sorted(CODE_EXAMPLES))
def test_codes_say_why(code: str) -> None:
    name, step = CODE_EXAMPLES[code]
    config, live, steps = SCENARIOS[name]
    assert run(config, live, steps)[step][1] == code


def test_codes_follow_a_scale_down() -> None:
    config, live, steps = SCENARIOS["load drop waits for the stabilisation window"]
    codes = [c for _, c, _ in run(config, live, steps)]
    assert codes == [
        "scale_up_for_load",
        "scale_down_pending",
        "scale_down_pending",
        "scale_down_pending",
        "scale_down_after_window",
    ]


def test_reasons_say_why_in_words() -> None:
    """The text an operator reads names the direction, the load and how long is left."""
    config, live, steps = SCENARIOS["load drop waits for the stabilisation window"]
    reasons = [r for *_, r in run(config, live, steps)]
    assert reasons[0].startswith("scale up")
    assert "scale down in 300s" in reasons[1]
    assert reasons[-1].startswith("scale down")


def test_engine_waiting_counts_as_load() -> None:
    config = AutoscalerConfig(min_workers=1, max_workers=10, target_concurrency_per_worker=4)
    busy = [WorkerSignal("w0", running=4, waiting=8)]
    target, *_ = QueueDepth(config).decide(
        PoolSignals.build("pool-a", T0, gateway_in_flight=4, workers=busy)
    )
    assert target == 3


def test_default_and_unknown_names() -> None:
    assert isinstance(Autoscaler.make(), QueueDepth)
    with pytest.raises(ValueError, match="queue-depth"):
        Autoscaler.make("nope")


def test_signals_round_trip() -> None:
    s = PoolSignals.build(
        "pool-a",
        T0,
        admission_queue_depth=2,
        gateway_in_flight=3,
        workers=[WorkerSignal("b", "on-demand", "2", "provisioning"), WorkerSignal("a", zone="1")],
    )
    assert PoolSignals.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.ready == {"spot": 1, "on-demand": 0}
    assert s.provisioning == {"spot": 0, "on-demand": 1}


def test_load_counts_what_the_engines_run_when_other_gateways_send_it() -> None:
    """Several gateway instances: this one sees 2 in flight, the engines run 12."""
    workers = [WorkerSignal(f"w{i}", running=6) for i in range(2)]
    signals = PoolSignals.build("p", 0.0, gateway_in_flight=2, workers=workers)
    scaler = Autoscaler.make("queue-depth", AutoscalerConfig(target_concurrency_per_worker=4))
    assert scaler.demand(signals) == 12
    assert scaler.decide(signals).target == 3
