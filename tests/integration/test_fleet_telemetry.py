"""The fleet's timings on /metrics after a spot eviction, on a sim stack run as a user runs it.

`spotgate dev --engine sim`: workers are provisioned by the fleet monitor
through the local compute provider, an eviction arrives through the fake
Scheduled Events endpoint, the agent drains and acknowledges, the platform
takes the worker, the monitor's replacement registers. An operator then
reads how long each step took from the scrape.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ADMIN_KEY, Stack, sim_stack, wait_until
from tests.integration.test_fleet_chaos import evict

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

NOTICE_S = 2.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(stack: Stack) -> Samples:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    reply = httpx.get(f"{stack.url}/metrics", headers=headers, timeout=5)
    assert reply.status_code == 200, reply.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = {"pool": "default", **labels}.items()
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= set(found))


def test_an_eviction_shows_its_drain_and_replacement_times(tmp_path: Path) -> None:
    with sim_stack(tmp_path, workers=2) as stack:
        started = scrape(stack)
        assert total(started, "spotgate_provisioning_seconds_count") == 2
        assert total(started, "spotgate_monitor_ticks_total") > 0

        victim = stack.workers("ready")[0]["id"]
        noticed_at = time.time()
        evict(stack, victim, notice_s=NOTICE_S)
        wait_until(
            lambda: {w["id"]: w["state"] for w in stack.workers()}.get(victim) in (None, "gone"),
            20,
            "the evicted worker to be gone",
        )
        wait_until(
            lambda: len([w for w in stack.workers("ready") if w["id"] != victim]) == 2,
            30,
            "the replacement to be ready",
        )
        elapsed = time.time() - noticed_at
        samples = scrape(stack)

    assert total(samples, "spotgate_evictions_total") == 1
    assert total(samples, "spotgate_eviction_notice_to_drain_seconds_count") == 1
    drained = total(samples, "spotgate_eviction_notice_to_drain_seconds_sum")
    assert 0 <= drained <= elapsed
    assert total(samples, "spotgate_eviction_notice_to_replacement_seconds_count") == 1
    replaced = total(samples, "spotgate_eviction_notice_to_replacement_seconds_sum")
    assert 0 < replaced <= elapsed
    assert total(samples, "spotgate_provisioning_seconds_count") == 3
    ok_ticks = total(samples, "spotgate_monitor_ticks_total", outcome="ok")
    assert ok_ticks > total(started, "spotgate_monitor_ticks_total", outcome="ok")
    assert total(samples, "spotgate_scaling_decisions_total") > 0
