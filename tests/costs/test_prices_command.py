"""`spotgate prices refresh` and `show` against the recorded Retail Prices API (no network)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from spotgate import prices_command
from spotgate.adapters.http_retail_prices import RetailPricesClient
from spotgate.cli import app
from spotgate.costs.price_table import PRICE_COLUMNS, PriceTable
from tests.costs.retail_recording import recorded_transport

A100, T4 = "Standard_NC24ads_A100_v4", "Standard_NC4as_T4_v3"
HEADER = ",".join(PRICE_COLUMNS)
BEFORE = f"""{HEADER}
2024-01-01,local,local-cpu,1,0.35,1.10,"notional: local dev stack, not a real price"
2026-11-01,eastus,{A100},1,0.735,3.673,"estimate: not fetched"
2026-12-02,westeurope,{A100},1,0.9,4.2,"an earlier refresh today"
"""
TWO_REGIONS = ["--regions", "eastus,westeurope", "--skus", f"{A100},{T4}"]


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    monkeypatch.setattr(
        prices_command,
        "make_client",
        lambda: RetailPricesClient(transport=recorded_transport(seen)),
    )
    monkeypatch.setattr(prices_command, "today", lambda: date(2026, 12, 2))
    return seen


def prices(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["prices", *args])
    return result.exit_code, result.output


def line_of(output: str, *words: str) -> str:
    [line] = [x for x in output.splitlines() if all(w in x for w in words)]
    return line


def test_refresh_merges_the_fetched_rows_and_shows_each_change(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    out = tmp_path / "prices.csv"
    out.write_text(BEFORE)
    code, output = prices("refresh", "--out", str(out), *TWO_REGIONS)
    assert code == 0, output
    assert len(requests) == 3  # eastus two pages, westeurope one
    rows = {(r.date.isoformat(), r.region, r.sku): r for r in PriceTable.load(out).rows}
    assert sorted(rows) == [
        ("2024-01-01", "local", "local-cpu"),
        ("2026-11-01", "eastus", A100),  # history kept
        ("2026-12-02", "eastus", A100),
        ("2026-12-02", "eastus", T4),
        ("2026-12-02", "westeurope", A100),  # same day: replaced
    ]
    east = rows[("2026-12-02", "eastus", A100)]
    assert (east.spot_hourly_usd, east.on_demand_hourly_usd) == (0.6912, 3.673)
    assert east.source.startswith("Azure Retail Prices API, fetched 2026-12-02, meters ")
    assert rows[("2026-12-02", "westeurope", A100)].on_demand_hourly_usd == 4.15
    spot_pct = (0.6912 - 0.735) / 0.735 * 100
    assert f"0.7350 → 0.6912 ({spot_pct:+.1f}%)" in line_of(output, "eastus", A100)
    assert "3.6730 → 3.6730 (+0.0%)" in line_of(output, "eastus", A100)
    assert "new 0.1578" in line_of(output, "eastus", T4)
    assert "2026-12-02 (replaced)" in line_of(output, "westeurope", A100)
    assert "no usable Linux spot price" in line_of(output, "warning", T4, "westeurope")
    assert "wrote 3 rows (2 new, 1 replaced)" in output


def test_refresh_into_a_new_file_writes_only_what_was_fetched(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    out = tmp_path / "new" / "prices.csv"
    code, output = prices("refresh", "--out", str(out), "--regions", "eastus")
    assert code == 0, output
    assert {(r.region, r.sku) for r in PriceTable.load(out).rows} == {
        ("eastus", A100),
        ("eastus", T4),
    }
    assert output.count("no usable Linux spot and on-demand price") == 5  # the other GPU SKUs


def test_dry_run_shows_the_changes_and_writes_nothing(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    out = tmp_path / "prices.csv"
    out.write_text(BEFORE)
    code, output = prices("refresh", "--out", str(out), "--dry-run", *TWO_REGIONS)
    assert code == 0, output
    assert "0.7350 → 0.6912" in output and "not written" in output
    assert out.read_text() == BEFORE


def test_offline_refresh_exits_1_and_leaves_the_file_alone(
    requests: list[httpx.Request], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def offline(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    monkeypatch.setattr(
        prices_command,
        "make_client",
        lambda: RetailPricesClient(transport=httpx.MockTransport(offline)),
    )
    out = tmp_path / "prices.csv"
    out.write_text(BEFORE)
    code, output = prices("refresh", "--out", str(out), *TWO_REGIONS)
    assert code == 1, output
    assert "could not reach prices.azure.com" in output and "nothing was changed" in output
    assert out.read_text() == BEFORE
    assert list(tmp_path.iterdir()) == [out]


def test_a_refresh_that_prices_nothing_exits_1_and_writes_nothing(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    out = tmp_path / "prices.csv"
    code, output = prices("refresh", "--out", str(out), "--regions", "swedencentral")
    assert code == 1, output
    assert "no price could be read" in output and not out.exists()


def test_an_sku_without_a_known_gpu_count_is_refused_before_fetching(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    code, output = prices("refresh", "--out", str(tmp_path / "p.csv"), "--skus", "Standard_D2s_v5")
    assert code == 2 and "Standard_D2s_v5" in output
    code, output = prices("refresh", "--out", str(tmp_path / "p.csv"), "--regions", "east'us")
    assert code == 2
    assert requests == []


def test_without_out_the_checkout_csv_is_the_target_else_out_is_required(
    requests: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert prices_command.checkout_csv() == repo / "functions/spotgate/costs/gpu_prices.csv"
    monkeypatch.setattr(prices_command, "checkout_csv", lambda: None)
    code, output = prices("refresh", "--dry-run")
    assert code == 2 and "--out" in output
    assert requests == []


def test_show_lists_the_prices_in_force_with_date_and_source(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(BEFORE)
    code, output = prices("show", "--file", str(path))
    assert code == 0, output
    row = line_of(output, "eastus", A100)
    assert all(part in row for part in ("0.7350", "3.6730", "2026-11-01", "estimate: not fetched"))
    assert "2026-12-02" in line_of(output, "westeurope", A100)
    assert "local-cpu" in output
    assert "warning" not in output  # the newest Azure row is from today
    code, output = prices("show", "--file", str(path), "--region", "westeurope", "--sku", A100)
    assert code == 0 and "eastus" not in output and "local-cpu" not in output


def test_show_warns_when_the_newest_azure_price_is_over_30_days_old(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    path = tmp_path / "old.csv"
    path.write_text(f"{HEADER}\n2026-01-15,eastus,{A100},1,0.7,3.6,hand\n")
    code, output = prices("show", "--file", str(path))
    assert code == 0, output
    age = (date(2026, 12, 2) - date(2026, 1, 15)).days
    assert f"the newest Azure price is from 2026-01-15, {age} days ago" in output
    recent = tmp_path / "recent.csv"
    recent.write_text(f"{HEADER}\n2026-11-20,eastus,{A100},1,0.7,3.6,fetched\n")
    code, output = prices("show", "--file", str(recent))
    assert code == 0 and "warning" not in output
