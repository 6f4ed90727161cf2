"""Retail Prices API items -> GPU price rows: the meters chosen, the pages followed, refusals."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from spotgate.adapters.http_retail_prices import RetailPricesClient, RetailPricesError
from spotgate.costs.price_snapshot import to_csv
from spotgate.costs.price_table import GpuPrice, PriceTable
from spotgate.costs.retail_prices import GPUS_BY_SKU, price_filter, rows_from_items
from tests.costs.retail_recording import EMPTY_PAGE, recorded_items, recorded_transport

DAY = date(2026, 12, 2)
A100, T4 = "Standard_NC24ads_A100_v4", "Standard_NC4as_T4_v3"
TWO = {A100: 1, T4: 1}
EAST = ("retail_prices_eastus", "retail_prices_eastus_page2")
# the Linux meters in the recordings, by hand from the JSON files
A100_EAST_SPOT = "a4e7b019-2d8c-5f63-9e1b-7c5d0a3f8e42"
A100_EAST_PAYG = "3f2d8c61-5b0e-5c47-9a13-d84e0b6f7a25"
T4_EAST_SPOT = "f38a2e6d-0b95-5c1f-9d4e-8a6b3c7f2e01"
T4_EAST_PAYG = "c2b8f6e3-7a41-5d09-b6c2-19e8d4a7f350"
A100_WEST_SPOT = "2b8d0c57-a4f1-5e96-8c3b-6e1f9a2d4c80"
A100_WEST_PAYG = "1e6f9b24-8d3a-5c70-b5e9-f2a4c8d1e736"


def source(spot: str, payg: str) -> str:
    return f"Azure Retail Prices API, fetched 2026-12-02, meters {spot}/{payg}"


def east_rows(extra: list[dict[str, Any]] | None = None) -> tuple[list[GpuPrice], list[str]]:
    return rows_from_items([*recorded_items(*EAST), *(extra or [])], DAY, TWO, ["eastus"])


def test_the_filter_asks_one_region_for_each_sku_with_the_or_bracketed() -> None:
    assert price_filter("eastus", [A100, T4, A100]) == (
        "serviceName eq 'Virtual Machines' and armRegionName eq 'eastus' and "
        f"(armSkuName eq '{A100}' or armSkuName eq '{T4}')"
    )


@pytest.mark.parametrize(
    ("region", "skus"),
    [("east'us", [A100]), ("eastus", ["x' or armSkuName eq 'y"]), ("eastus", [])],
)
def test_a_name_that_could_break_out_of_the_filter_is_refused(region: str, skus: list[str]) -> None:
    with pytest.raises(ValueError):
        price_filter(region, skus)


def test_the_recordings_give_the_linux_spot_and_pay_as_you_go_prices() -> None:
    items = recorded_items(*EAST, "retail_prices_westeurope")
    rows, warnings = rows_from_items(items, DAY, TWO, ["eastus", "westeurope"])
    assert rows == [
        GpuPrice(DAY, "eastus", A100, 1, 0.6912, 3.673, source(A100_EAST_SPOT, A100_EAST_PAYG)),
        GpuPrice(DAY, "eastus", T4, 1, 0.1578, 0.526, source(T4_EAST_SPOT, T4_EAST_PAYG)),
        GpuPrice(DAY, "westeurope", A100, 1, 0.8715, 4.15, source(A100_WEST_SPOT, A100_WEST_PAYG)),
    ]
    # westeurope's T4 has a Windows spot meter but no Linux one
    assert warnings == [f"{T4} in westeurope: no usable Linux spot price, no row"]


def test_gpus_come_from_the_table_given() -> None:
    rows, _ = rows_from_items(recorded_items(*EAST), DAY, {A100: 3}, ["eastus"])
    assert [(r.sku, r.gpus) for r in rows] == [(A100, 3)]
    assert GPUS_BY_SKU["Standard_ND96isr_H100_v5"] == 8


def linux_payg_a100() -> dict[str, Any]:
    [item] = [
        i
        for i in recorded_items(*EAST)
        if i["meterId"] == A100_EAST_PAYG and i["type"] == "Consumption"
    ]
    return item


@pytest.mark.parametrize(
    "change",
    [
        {"type": "DevTestConsumption"},
        {"type": "Reservation", "reservationTerm": "1 Year"},
        {"productName": "Virtual Machines NCads A100 v4 Series Windows"},
        {"productName": "NCads A100 v4 Series Cloud Services"},
        {"skuName": "NC24ads A100 v4 Low Priority", "meterName": "NC24ads A100 v4 Low Priority"},
        {"currencyCode": "EUR"},
        {"unitOfMeasure": "1/Month"},
        {"tierMinimumUnits": 100.0},
        {"serviceName": "Virtual Machines Licenses"},
        {"effectiveStartDate": "2026-12-03T00:00:00Z"},  # not in effect on the day yet
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_an_item_that_is_not_a_linux_workers_hourly_price_is_ignored(
    change: dict[str, Any],
) -> None:
    decoy = copy.deepcopy(linux_payg_a100())
    decoy.update(
        meterId="00000000-0000-5000-8000-000000000000",
        retailPrice=999.0,
        effectiveStartDate="2026-11-15T00:00:00Z",  # newer: it would win if it counted
    )
    decoy.update(change)
    rows, warnings = east_rows([decoy])
    assert [(r.sku, r.on_demand_hourly_usd) for r in rows] == [(A100, 3.673), (T4, 0.526)]
    assert warnings == []


def test_the_newest_meter_in_effect_wins() -> None:
    newer = copy.deepcopy(linux_payg_a100())
    newer.update(meterId="11111111-1111-5111-8111-111111111111", retailPrice=3.5)
    newer.update(effectiveStartDate="2026-12-01T00:00:00Z")
    rows, _ = east_rows([newer])
    assert rows[0].on_demand_hourly_usd == 3.5
    assert rows[0].source.endswith("/11111111-1111-5111-8111-111111111111")


def test_two_prices_from_the_same_day_are_refused_as_ambiguous() -> None:
    twin = copy.deepcopy(linux_payg_a100())
    twin.update(meterId="22222222-2222-5222-8222-222222222222", retailPrice=3.7)
    rows, warnings = east_rows([twin])
    assert [r.sku for r in rows] == [T4]
    assert any("ambiguous" in w and A100 in w for w in warnings), warnings
    assert f"{A100} in eastus: no usable Linux on-demand price, no row" in warnings


@pytest.mark.parametrize("price", [0, -1.0, "3.6", None, True])
def test_an_item_without_a_usable_price_is_reported_not_used(price: object) -> None:
    bad = copy.deepcopy(linux_payg_a100())
    bad.update(meterId="33333333-3333-5333-8333-333333333333", retailPrice=price)
    bad.update(effectiveStartDate="2026-12-01T00:00:00Z")
    rows, warnings = east_rows([bad])
    assert rows[0].on_demand_hourly_usd == 3.673
    assert warnings == [
        f"meter 33333333-3333-5333-8333-333333333333: retailPrice {price!r} is not a price, ignored"
    ]


def test_a_sku_or_region_with_no_items_is_reported_both_ways() -> None:
    rows, warnings = rows_from_items([], DAY, {A100: 1}, ["swedencentral"])
    assert rows == []
    assert warnings == [
        f"{A100} in swedencentral: no usable Linux spot and on-demand price, no row"
    ]


def test_the_client_follows_next_page_link_to_the_end() -> None:
    seen: list[httpx.Request] = []
    with RetailPricesClient(transport=recorded_transport(seen)) as client:
        pages: list[tuple[int, int]] = []
        items = client.items(price_filter("eastus", [A100, T4]), on_page=lambda *p: pages.append(p))
    assert pages == [(1, 11), (2, 4)]
    assert T4_EAST_SPOT in {i["meterId"] for i in items}  # only on page 2
    assert len(seen) == 2
    assert seen[0].url.params["api-version"] == "2023-01-01-preview"
    assert seen[0].url.params["$filter"] == price_filter("eastus", [A100, T4])
    assert seen[1].url.params["$skip"] == "1000"


def endless(request: httpx.Request) -> httpx.Response:
    skip = int(request.url.params.get("$skip", "0")) + 1000
    link = f"https://prices.azure.com:443/api/retail/prices?$filter=x&$skip={skip}"
    return httpx.Response(200, json={**EMPTY_PAGE, "NextPageLink": link})


def test_the_page_cap_stops_an_endless_answer_with_an_error() -> None:
    client = RetailPricesClient(transport=httpx.MockTransport(endless), max_pages=3)
    with client, pytest.raises(RetailPricesError, match="more than 3 pages"):
        client.items("x")


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (httpx.Response(503, text="busy"), "HTTP 503"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json={"items": []}), "without an Items list"),
        (httpx.Response(200, json={**EMPTY_PAGE, "Items": [1]}), "not objects"),
        (
            httpx.Response(200, json={**EMPTY_PAGE, "NextPageLink": "https://elsewhere.test/p"}),
            r"leaves prices\.azure\.com",
        ),
    ],
)
def test_an_answer_short_of_a_price_page_raises(answer: httpx.Response, complaint: str) -> None:
    client = RetailPricesClient(transport=httpx.MockTransport(lambda request: answer))
    with client, pytest.raises(RetailPricesError, match=complaint):
        client.items("x")


def test_no_connection_raises_a_retail_prices_error() -> None:
    def offline(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Name or service not known", request=request)

    client = RetailPricesClient(transport=httpx.MockTransport(offline))
    with client, pytest.raises(RetailPricesError, match=r"could not reach prices\.azure\.com"):
        client.items("x")


def test_rows_round_trip_through_the_csv_into_a_price_table(tmp_path: Path) -> None:
    rows, _ = rows_from_items(
        recorded_items(*EAST, "retail_prices_westeurope"), DAY, TWO, ["eastus", "westeurope"]
    )
    path = tmp_path / "prices.csv"
    path.write_text(to_csv(rows))
    table = PriceTable.load(path)
    assert sorted(table.rows, key=lambda r: (r.region, r.sku)) == rows
    noon = datetime(2026, 12, 2, 12, tzinfo=UTC).timestamp()
    quote = table.hourly(A100, "spot", "westeurope", noon)
    assert quote is not None and (quote.usd_per_hour, quote.exact_region) == (0.8715, True)


def test_the_recordings_are_shaped_like_the_api() -> None:
    """Every recorded item carries the API's fields; the envelope counts its page."""
    fields = {
        "currencyCode", "tierMinimumUnits", "retailPrice", "unitPrice", "armRegionName",
        "location", "effectiveStartDate", "meterId", "meterName", "productId", "skuId",
        "productName", "skuName", "serviceName", "serviceId", "serviceFamily", "unitOfMeasure",
        "type", "isPrimaryMeterRegion", "armSkuName",
    }  # fmt: skip
    types = set()
    for path in sorted((Path(__file__).parent / "recorded").glob("*.json")):
        body = json.loads(path.read_text())
        assert set(body) == set(EMPTY_PAGE), path.name
        assert body["Count"] == len(body["Items"]), path.name
        for item in body["Items"]:
            assert fields <= set(item), (path.name, fields - set(item))
            assert ("reservationTerm" in item) == (item["type"] == "Reservation")
            assert item["skuId"].startswith(item["productId"] + "/")
            types.add(item["type"])
    assert types == {"Consumption", "Reservation", "DevTestConsumption"}
