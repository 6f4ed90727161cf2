from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from spotgate.costs.price_table import PRICE_COLUMNS, PriceTable

HEADER = ",".join(PRICE_COLUMNS)
DATED = f"""{HEADER}
2026-01-01,eastus,gpu-a,1,0.50,2.00,test
2026-06-01,eastus,gpu-a,1,0.40,1.80,test
2026-03-01,westeurope,gpu-a,1,0.60,2.40,test
2026-09-01,westeurope,gpu-a,1,0.70,2.60,test
"""
AZURE_SKUS = {
    "Standard_NC4as_T4_v3": 1,
    "Standard_NC8as_T4_v3": 1,
    "Standard_NC24ads_A100_v4": 1,
    "Standard_NC48ads_A100_v4": 2,
    "Standard_NC40ads_H100_v5": 1,
    "Standard_ND96isr_H100_v5": 8,
    "Standard_NV36ads_A10_v5": 1,
}


def at(year: int, month: int, day: int, hour: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, 0, second, tzinfo=UTC).timestamp()


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.parse(DATED, "dated.csv")


def test_a_price_dated_after_the_time_is_not_used(table: PriceTable) -> None:
    quote = table.hourly("gpu-a", "spot", "eastus", at(2026, 5, 31, 23, 59))
    assert quote is not None
    assert quote.usd_per_hour == 0.50
    assert quote.exact_region


def test_a_price_applies_from_the_start_of_its_day(table: PriceTable) -> None:
    quote = table.hourly("gpu-a", "on-demand", "eastus", at(2026, 6, 1))
    assert quote is not None
    assert (quote.usd_per_hour, quote.row.date.isoformat()) == (1.80, "2026-06-01")


def test_no_price_before_the_first_row(table: PriceTable) -> None:
    assert table.hourly("gpu-a", "spot", "eastus", at(2025, 12, 31, 23, 59)) is None


def test_a_region_without_the_sku_borrows_the_newest_price_and_says_so(
    table: PriceTable,
) -> None:
    july = table.hourly("gpu-a", "spot", "swedencentral", at(2026, 7, 1))
    october = table.hourly("gpu-a", "spot", "swedencentral", at(2026, 10, 1))
    assert july is not None and october is not None
    assert (july.usd_per_hour, july.row.region, july.exact_region) == (0.40, "eastus", False)
    assert (october.usd_per_hour, october.row.region) == (0.70, "westeurope")


def test_a_region_with_its_own_row_is_not_overridden_by_a_newer_one_elsewhere(
    table: PriceTable,
) -> None:
    quote = table.hourly("gpu-a", "spot", "westeurope", at(2026, 7, 1))
    assert quote is not None
    assert (quote.usd_per_hour, quote.exact_region) == (0.60, True)


def test_an_unknown_sku_has_no_price(table: PriceTable) -> None:
    assert table.hourly("gpu-z", "spot", "eastus", at(2026, 7, 1)) is None
    assert not table.knows("gpu-z")


def test_priority_must_be_spot_or_on_demand(table: PriceTable) -> None:
    with pytest.raises(ValueError, match="priority"):
        table.hourly("gpu-a", "reserved", "eastus", at(2026, 7, 1))


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("2026-13-01,eastus,gpu-b,1,0.5,2.0,x", "date"),
        ("2026-01-01,eastus,gpu-b,0,0.5,2.0,x", "gpus"),
        ("2026-01-01,eastus,gpu-b,two,0.5,2.0,x", "gpus"),
        ("2026-01-01,eastus,gpu-b,1,-0.5,2.0,x", "spot_hourly_usd"),
        ("2026-01-01,eastus,gpu-b,1,0.5,nan,x", "on_demand_hourly_usd"),
        ("2026-01-01,eastus,gpu-b,1,0.5,2.0,", "source"),
        ("2026-01-01,,gpu-b,1,0.5,2.0,x", "region"),
        ("2026-01-01,eastus,gpu-b,1,0.5,2.0,x,extra", "more values"),
        ("2026-01-01,eastus,gpu-a,1,0.5,2.0,x", "already priced on line 2"),
    ],
)
def test_a_bad_row_names_the_file_and_line(tmp_path: Path, line: str, complaint: str) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(f"{HEADER}\n2026-01-01,eastus,gpu-a,1,0.5,2.0,x\n{line}\n")
    with pytest.raises(ValueError, match=complaint) as raised:
        PriceTable.load(path)
    assert f"{path}:3" in str(raised.value)


def test_a_missing_column_is_refused() -> None:
    with pytest.raises(ValueError, match="spot_hourly_usd"):
        PriceTable.parse("date,region,sku,gpus,on_demand_hourly_usd,source\n", "short.csv")


def test_a_table_from_a_path_replaces_the_packaged_one(tmp_path: Path) -> None:
    path = tmp_path / "own.csv"
    path.write_text(f"{HEADER}\n2020-01-01,local,local-cpu,1,0.01,0.02,mine\n")
    quote = PriceTable.load(path).hourly("local-cpu", "on-demand", "local", at(2026, 1, 1))
    assert quote is not None
    assert (quote.usd_per_hour, quote.row.source) == (0.02, "mine")


def test_the_csv_ships_inside_the_package() -> None:
    assert resources.files("spotgate.costs").joinpath("gpu_prices.csv").is_file()


def test_the_packaged_table_prices_the_documented_skus_in_every_region() -> None:
    table = PriceTable.load()
    day = at(2026, 12, 1)
    for region in ("eastus", "westeurope", "swedencentral"):
        for sku, gpus in AZURE_SKUS.items():
            quote = table.hourly(sku, "on-demand", region, day)
            assert quote is not None and quote.exact_region, (sku, region)
            assert quote.row.gpus == gpus, sku
            assert quote.row.source.startswith("estimate:"), sku


def test_every_packaged_row_is_plausible_and_says_where_it_came_from() -> None:
    rows = PriceTable.load().rows
    assert len(rows) == 3 + 3 * len(AZURE_SKUS)  # three local (notional) rows
    for row in rows:
        assert 0 < row.spot_hourly_usd < row.on_demand_hourly_usd, row
        if row.region == "local":
            assert row.source.startswith("notional:"), row
        else:
            assert "not fetched" in row.source, row


def test_a_laptop_run_has_a_price_for_the_local_skus() -> None:
    table = PriceTable.load()
    for sku in ("local-cpu", "local-sim"):
        for priority in ("spot", "on-demand"):
            quote = table.hourly(sku, priority, "local", at(2026, 3, 2))
            assert quote is not None and quote.exact_region, (sku, priority)
