"""Batch and interactive margin apart: the cheaper batch price against the GPU time it used.

One spot worker runs one hour at $0.60 and serves 1,200 tokens: an
interactive request (300 tokens, sold for $1.00) and two batch lines of two
batches (600 and 300 tokens, sold at the batch price for $0.30 and $0.15).
The hour's cost is shared by tokens: $0.15, $0.30 and $0.15.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from spotgate.costs.report import GROUPINGS, UsageReport, usage_report
from spotgate.usage_command import render_report
from tests.costs.scenario import REGION, T0, TABLE, H, record, span

SPANS = [span("w1", "spot", T0, T0 + H)]
RECORDS = [
    record("chat", T0 + 100, worker_id="w1", prompt_tokens=100, completion_tokens=200,
           revenue_usd=1.00),
    record("line-a", T0 + 200, worker_id="w1", prompt_tokens=200, completion_tokens=400,
           revenue_usd=0.30, batch_id="batch_a"),
    record("line-b", T0 + 300, worker_id="w1", prompt_tokens=100, completion_tokens=200,
           revenue_usd=0.15, batch_id="batch_b"),
]  # fmt: skip


def report(by: str) -> UsageReport:
    return usage_report(
        RECORDS, SPANS, TABLE, by=by, since=T0, until=T0 + H, region=REGION, now=T0 + H
    )


def rows(by: str) -> dict[str, dict[str, Any]]:
    return {row["group"]: row for row in report(by).rows}


def test_by_kind_shows_batch_and_interactive_margin_apart() -> None:
    got = rows("kind")
    assert list(got) == ["batch", "interactive"]
    assert got["batch"]["requests"] == 2
    assert got["batch"]["revenue_usd"] == pytest.approx(0.45)
    assert got["batch"]["cost_usd"] == pytest.approx(0.45)
    assert got["batch"]["margin_usd"] == pytest.approx(0.0)
    assert got["interactive"]["margin_usd"] == pytest.approx(1.00 - 0.15)


def test_by_batch_shows_each_batch_and_interactive_as_none() -> None:
    got = rows("batch")
    assert list(got) == ["(none)", "batch_a", "batch_b"]
    assert got["batch_a"]["margin_usd"] == pytest.approx(0.30 - 0.30)
    assert got["batch_b"]["cost_usd"] == pytest.approx(0.15)
    assert got["(none)"]["revenue_usd"] == pytest.approx(1.00)


@pytest.mark.parametrize("by", GROUPINGS)
def test_every_view_adds_up_to_the_same_totals(by: str) -> None:
    totals = report(by).totals
    assert totals["revenue_usd"] == pytest.approx(1.45)
    assert totals["cost_usd"] == pytest.approx(0.60)


def test_the_cli_shows_a_kind_report_without_gpu_hours() -> None:
    out = io.StringIO()
    render_report(Console(file=out, width=200), report("kind").to_dict(), {})
    text = out.getvalue()
    assert "usage by kind" in text and "interactive" in text and "batch" in text
    assert "gpu_hours" not in text
