"""The price CSV as a history: merge keeps old days, replaces the same day, flags stale prices."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from importlib import resources

from spotgate.costs.price_snapshot import (
    changes,
    current,
    merge,
    overriding_rows,
    percent_change,
    rows_in_file_order,
    staleness,
    to_csv,
)
from spotgate.costs.price_table import PRICE_COLUMNS, GpuPrice, PriceTable

A100 = "Standard_NC24ads_A100_v4"
NOV, DEC = date(2026, 11, 1), date(2026, 12, 2)
OLD = GpuPrice(NOV, "eastus", A100, 1, 0.735, 3.673, "estimate")
SAME_DAY = GpuPrice(DEC, "eastus", A100, 1, 0.70, 3.673, "an earlier fetch today")
OTHER = GpuPrice(NOV, "local", "local-cpu", 1, 0.35, 1.10, "notional")
FRESH = GpuPrice(DEC, "eastus", A100, 1, 0.6912, 3.673, "fetched")
NEW_SKU = GpuPrice(DEC, "eastus", "Standard_NC4as_T4_v3", 1, 0.1578, 0.526, "fetched")


def at(day: date) -> float:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp()


def test_merge_keeps_older_days_replaces_the_same_day_in_place_and_appends_the_rest() -> None:
    merged = merge([OLD, SAME_DAY, OTHER], [FRESH, NEW_SKU])
    assert merged == [OLD, FRESH, OTHER, NEW_SKU]
    table = PriceTable.parse(to_csv(merged))
    before = table.hourly(A100, "spot", "eastus", at(date(2026, 11, 20)))
    after = table.hourly(A100, "spot", "eastus", at(DEC))
    assert before is not None and before.usd_per_hour == 0.735  # last month is not re-costed
    assert after is not None and after.usd_per_hour == 0.6912


def test_changes_compare_with_the_row_in_force_on_the_fetch_day() -> None:
    later = GpuPrice(date(2027, 1, 1), "eastus", A100, 1, 0.9, 4.0, "future")
    found = changes([OLD, OTHER, later], [FRESH, NEW_SKU])
    assert [(c.new, c.old, c.replaces) for c in found] == [
        (FRESH, OLD, False),
        (NEW_SKU, None, False),
    ]
    assert changes([OLD, SAME_DAY], [FRESH])[0].replaces
    pct = percent_change(0.735, 0.6912)
    assert pct is not None and round(pct, 3) == round((0.6912 / 0.735 - 1) * 100, 3)
    assert percent_change(0.0, 1.0) is None


def test_a_row_dated_after_the_fetch_is_named_because_it_will_override_it() -> None:
    later = GpuPrice(date(2027, 1, 1), "eastus", A100, 1, 0.9, 4.0, "estimate: typed by hand")
    [warning] = overriding_rows([OLD, later], [FRESH])
    assert "2027-01-01" in warning and "estimate: typed by hand" in warning and A100 in warning
    assert overriding_rows([OLD], [FRESH]) == []


def test_the_packaged_csv_reads_back_row_for_row_in_its_own_order() -> None:
    text = resources.files("spotgate.costs").joinpath("gpu_prices.csv").read_text()
    rows = rows_in_file_order(text)
    file_keys = [(r["date"], r["region"], r["sku"]) for r in csv.DictReader(io.StringIO(text))]
    assert [(r.date.isoformat(), r.region, r.sku) for r in rows] == file_keys
    assert rows_in_file_order(to_csv(rows)) == rows
    assert to_csv(rows).splitlines()[0] == ",".join(PRICE_COLUMNS)


def test_prices_are_written_exactly() -> None:
    odd = GpuPrice(DEC, "eastus", A100, 1, 0.1 + 0.2, 1e-7, "x, with a comma")
    [row] = PriceTable.parse(to_csv([odd])).rows
    assert (row.spot_hourly_usd, row.on_demand_hourly_usd, row.source) == (
        0.1 + 0.2,
        1e-7,
        odd.source,
    )


def test_current_is_the_newest_row_on_or_before_the_day_per_region_and_sku() -> None:
    later = GpuPrice(date(2027, 1, 1), "eastus", A100, 1, 0.9, 4.0, "future")
    rows = [OLD, FRESH, later, OTHER, NEW_SKU]
    assert current(rows, DEC) == [FRESH, NEW_SKU, OTHER]
    assert current(rows, date(2026, 11, 30)) == [OLD, OTHER]
    assert current(rows, DEC, region="eastus", sku=A100) == [FRESH]


def test_staleness_is_about_the_newest_azure_row_and_ignores_notional_ones() -> None:
    assert staleness([OLD], date(2026, 12, 1)) is None  # 30 days
    warning = staleness([OLD, OTHER], date(2026, 12, 2))
    assert warning is not None and "2026-11-01" in warning and "31 days" in warning
    assert staleness([OLD, FRESH], date(2026, 12, 2)) is None
    assert staleness([OTHER], date(2030, 1, 1)) is None
