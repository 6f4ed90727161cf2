"""Worker spans: what the recorder writes when a worker goes, live spans, and hours of a span."""

from __future__ import annotations

import logging

import pytest

from spotgate.clock import ManualClock
from spotgate.fleet.journal import InMemoryFleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import LOST_REASON, Worker
from spotgate.fleet.worker_span_recorder import WorkerSpanRecorder, live_spans, spans_between
from spotgate.fleet.worker_spans import WorkerSpan

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
HOUR = 3600.0


def sku_for(pool: str) -> str:
    return {"big": "Standard_ND96"}.get(pool, "local-cpu")


class CountingJournal(InMemoryFleetJournal):
    def __init__(self) -> None:
        super().__init__()
        self.span_writes = 0

    def record_worker_span(self, span: WorkerSpan) -> None:
        self.span_writes += 1
        super().record_worker_span(span)


class BrokenJournal(InMemoryFleetJournal):
    def record_worker_span(self, span: WorkerSpan) -> None:
        raise OSError("disk full")


def fleet() -> tuple[WorkerRegistry, ManualClock, CountingJournal]:
    clock = ManualClock(T0)
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    journal = CountingJournal()
    WorkerSpanRecorder(registry, journal, sku_for, clock=clock)
    return registry, clock, journal


def register(registry: WorkerRegistry, worker_id: str, pool: str = "big", **fields: str) -> None:
    registry.register(
        worker_id, pool=pool, model="m", engine="sim", url=f"http://{worker_id}", **fields
    )


def test_a_gone_worker_is_one_span_from_provisioning_priced_by_its_pools_sku() -> None:
    registry, clock, journal = fleet()
    registry.expect("w1", pool="big", model="m", engine="sim")  # the VM bills from here
    clock.advance(60)
    register(registry, "w1", priority="on-demand", zone="2")
    clock.advance(HOUR)
    registry.mark_gone("w1", "evicted")
    registry.distrust("w1", "bad answers")  # changes the record, not the departure
    assert journal.worker_spans(since=0.0) == [
        WorkerSpan("w1", "big", "on-demand", "Standard_ND96", "2", T0, T0 + 60 + HOUR, "evicted")
    ]
    assert journal.span_writes == 1


def test_two_gateway_instances_seeing_one_worker_go_make_one_span() -> None:
    registry, clock, journal = fleet()
    other = WorkerRegistry(InMemoryWorkerStore(), clock)
    WorkerSpanRecorder(other, journal, sku_for, clock=clock)
    register(registry, "w1")
    clock.advance(HOUR)
    gone = registry.mark_gone("w1", "evicted")
    assert gone is not None
    other.absorb([Worker.from_dict(gone.to_dict())])  # what the shared store tells it
    assert journal.span_writes == 2
    assert [(s.worker_id, s.end) for s in journal.worker_spans(since=0.0)] == [("w1", T0 + HOUR)]


def test_a_lost_worker_bills_until_the_monitor_deletes_it() -> None:
    """A worker declared lost may still run; its span ends when it is deleted."""
    registry, clock, journal = fleet()
    register(registry, "w1", pool="small")
    clock.advance(100)
    assert [w.id for w in registry.expire_stale(heartbeat_timeout_s=30)] == ["w1"]
    assert [(s.end, s.end_reason) for s in journal.worker_spans(0.0)] == [(T0 + 100, LOST_REASON)]
    clock.advance(500)
    registry.retire("w1", "lost")
    [span] = journal.worker_spans(since=0.0)
    assert (span.sku, span.end, span.end_reason) == ("local-cpu", T0 + 600, "deleted: lost")


def test_a_worker_that_came_back_and_went_again_is_one_longer_span() -> None:
    registry, clock, journal = fleet()
    register(registry, "w1")
    registry.drain("w1", "maintenance", event_id="E1", event_type="Reboot")
    clock.advance(100)
    registry.mark_gone("w1", "rebooting")
    clock.advance(100)
    register(registry, "w1")  # a rebooted VM comes back with its registration time
    clock.advance(300)
    registry.mark_gone("w1", "evicted")
    assert [(s.start, s.end) for s in journal.worker_spans(since=0.0)] == [(T0, T0 + 500)]
    assert journal.span_writes == 2


def test_workers_that_went_while_no_gateway_ran_are_recorded_at_start() -> None:
    clock = ManualClock(T0)
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    register(registry, "w1")
    clock.advance(50)
    registry.mark_gone("w1", "evicted")
    journal = InMemoryFleetJournal()
    WorkerSpanRecorder(registry, journal, sku_for, clock=clock)
    assert [(s.worker_id, s.end) for s in journal.worker_spans(since=0.0)] == [("w1", T0 + 50)]


def test_a_journal_that_fails_does_not_stop_a_worker_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = WorkerRegistry(InMemoryWorkerStore(), ManualClock(T0))
    WorkerSpanRecorder(registry, BrokenJournal(), sku_for)
    register(registry, "w1")
    with caplog.at_level(logging.ERROR, logger="spotgate.fleet"):
        registry.mark_gone("w1", "evicted")
    gone = registry.get("w1")
    assert gone is not None and gone.state == "gone"
    assert "could not record the span of worker w1" in caplog.text


def test_live_spans_are_open_spans_of_every_worker_not_gone() -> None:
    registry, _, _ = fleet()
    registry.expect("booting", pool="big", model="m", engine="sim")
    register(registry, "serving", pool="small", zone="1")
    register(registry, "draining")
    registry.drain("draining", "scale down")
    register(registry, "gone")
    registry.mark_gone("gone", "evicted")
    spans = live_spans(registry, sku_for)
    assert [(s.worker_id, s.sku, s.end, s.end_reason) for s in spans] == [
        ("booting", "Standard_ND96", None, None),
        ("draining", "Standard_ND96", None, None),
        ("serving", "local-cpu", None, None),
    ]
    assert all(s.start == T0 for s in spans)


def test_spans_between_is_ended_and_live_once_per_worker() -> None:
    registry, clock, journal = fleet()
    register(registry, "ended")
    register(registry, "back")
    registry.drain("back", "maintenance", event_id="E1", event_type="Reboot")
    clock.advance(100)
    registry.mark_gone("ended", "evicted")
    registry.mark_gone("back", "rebooting")
    clock.advance(100)
    register(registry, "back")
    clock.advance(100)
    register(registry, "new")
    spans = spans_between(journal, registry, sku_for, since=T0, until=T0 + 1000)
    assert [(s.worker_id, s.end) for s in spans] == [
        ("back", None),  # it came back: the live span covers the ended one
        ("ended", T0 + 100),
        ("new", None),
    ]
    later = spans_between(journal, registry, sku_for, since=T0, until=T0 + 250)
    assert [s.worker_id for s in later] == ["back", "ended"]  # `new` started after `until`


def test_a_span_is_split_at_utc_hour_boundaries() -> None:
    hour = 1_699_999_200.0  # 2023-11-14T22:00:00Z
    span = WorkerSpan("w1", "big", "spot", "NC4", None, hour + 1800, hour + 2 * HOUR + 900)
    assert list(span.hours(0.0, 2e9, now=2e9)) == [
        (hour, 1800.0),
        (hour + HOUR, HOUR),
        (hour + 2 * HOUR, 900.0),
    ]
    window = list(span.hours(hour + HOUR + 600, hour + 2 * HOUR + 300, now=2e9))
    assert window == [(hour + HOUR, 3000.0), (hour + 2 * HOUR, 300.0)]
    assert list(span.hours(hour + 3 * HOUR, hour + 4 * HOUR, now=2e9)) == []


def test_a_running_span_counts_until_now() -> None:
    hour = 1_699_999_200.0
    running = WorkerSpan("w1", "big", "spot", "NC4", None, hour + 3000)
    assert list(running.hours(0.0, 2e9, now=hour + HOUR + 60)) == [
        (hour, 600.0),
        (hour + HOUR, 60.0),
    ]
    assert running.seconds_in(0.0, 2e9, now=hour + HOUR) == 600.0


@pytest.mark.parametrize(
    ("since", "until", "now", "seconds"),
    [
        (0.0, 1000.0, 1000.0, 100.0),  # the whole span
        (150.0, 1000.0, 1000.0, 50.0),  # cut at since
        (0.0, 120.0, 1000.0, 20.0),  # cut at until
        (200.0, 1000.0, 1000.0, 0.0),  # ended exactly at since
        (0.0, 100.0, 1000.0, 0.0),  # started exactly at until
        (300.0, 400.0, 1000.0, 0.0),  # after it ended
    ],
)
def test_seconds_in_a_window(since: float, until: float, now: float, seconds: float) -> None:
    span = WorkerSpan("w1", "big", "spot", "NC4", None, 100.0, 200.0)
    assert span.seconds_in(since, until, now) == seconds
    assert sum(s for _, s in span.hours(since, until, now)) == seconds
