"""Azure Retail Prices API items -> dated GPU price rows: which meter is a worker's price.

The API (https://prices.azure.com/api/retail/prices, api-version
2023-01-01-preview, public and unauthenticated) answers a `$filter` with pages
of items, one per meter and price type. A single VM size in a single region
comes back as a dozen or so items, and only two of them are what a Linux GPU
worker is billed. An item is used only when all of these hold:

- `serviceName` is "Virtual Machines" and `armSkuName`/`armRegionName` are a
  SKU and region asked for;
- `type` is "Consumption": "Reservation" items are 1- or 3-year commitments
  whose `retailPrice` is the whole term's price even though `unitOfMeasure`
  still says "1 Hour", and "DevTestConsumption" is a Dev/Test subscription
  rate that a production worker does not get;
- `productName` starts with "Virtual Machines" and does not contain "Windows":
  Windows items add the licence, and "<family> Series Cloud Services" items,
  which share the VM's skuName, price the classic Cloud Services role;
- `skuName` does not end in " Low Priority": those are the old Batch
  low-priority meters, not spot VMs;
- `currencyCode` is "USD" (the currency Azure prices in; other currencies are
  converted for reference), `unitOfMeasure` is "1 Hour" and
  `tierMinimumUnits` is 0;
- `effectiveStartDate` is on or before the day of the refresh.

What is left is the spot price (`skuName` ends in " Spot") and the
pay-as-you-go price (no suffix), each `retailPrice`, the list price with no
discount. Where one kind still has more than one item, the newest
`effectiveStartDate` wins, and two different prices from the same day are
refused as ambiguous. A SKU and region that lack either price get no row at
all and a warning says which: a row needs both prices, and a guessed one
would be costed as if it were real.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any

from spotgate.costs.price_table import GpuPrice

DEFAULT_REGIONS: tuple[str, ...] = ("eastus", "westeurope", "swedencentral")
GPUS_BY_SKU: Mapping[str, int] = MappingProxyType(
    {
        "Standard_NC4as_T4_v3": 1,
        "Standard_NC8as_T4_v3": 1,
        "Standard_NC24ads_A100_v4": 1,
        "Standard_NC48ads_A100_v4": 2,
        "Standard_NC40ads_H100_v5": 1,
        "Standard_ND96isr_H100_v5": 8,
        "Standard_NV36ads_A10_v5": 1,
    }
)
DEFAULT_SKUS: tuple[str, ...] = tuple(GPUS_BY_SKU)

SPOT = "spot"
ON_DEMAND = "on-demand"
_VM_SERVICE = "Virtual Machines"
_SPOT_SUFFIX = " Spot"
_LOW_PRIORITY_SUFFIX = " Low Priority"
# names go inside OData string literals; anything else could end the literal
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def price_filter(region: str, skus: Iterable[str]) -> str:
    """One region's `$filter`: a request per region keeps the filter short."""
    names = list(dict.fromkeys(skus))
    if not names:
        raise ValueError("no SKUs to ask for")
    for name in (region, *names):
        if not _SAFE_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a region or SKU name")
    # the brackets stop `and` binding tighter than `or` and dropping the region
    either = " or ".join(f"armSkuName eq '{sku}'" for sku in names)
    return f"serviceName eq '{_VM_SERVICE}' and armRegionName eq '{region}' and ({either})"


@dataclass(frozen=True)
class _Meter:
    meter_id: str
    usd: float
    since: date


def meter_kind(item: Mapping[str, Any]) -> str | None:
    """SPOT, ON_DEMAND, or None for an item that is not a Linux worker's hourly price."""
    product = _text(item, "productName")
    sku_name = _text(item, "skuName")
    if (
        _text(item, "serviceName") != _VM_SERVICE
        or _text(item, "type") != "Consumption"
        or not product.startswith(_VM_SERVICE)
        or "Windows" in product
        or sku_name.endswith(_LOW_PRIORITY_SUFFIX)
        or _text(item, "currencyCode") != "USD"
        or _text(item, "unitOfMeasure") != "1 Hour"
        or item.get("tierMinimumUnits", 0) not in (0, 0.0)
    ):
        return None
    return SPOT if sku_name.endswith(_SPOT_SUFFIX) else ON_DEMAND


def rows_from_items(
    items: Iterable[Mapping[str, Any]],
    day: date,
    gpus_by_sku: Mapping[str, int],
    regions: Iterable[str],
) -> tuple[list[GpuPrice], list[str]]:
    """A row dated `day` for each region x SKU priced both ways, and what was left out and why.

    Rows come in the order of `regions`, then of `gpus_by_sku`.
    """
    wanted_regions = list(dict.fromkeys(regions))
    found: dict[tuple[str, str, str], list[_Meter]] = {}
    warnings: list[str] = []
    for item in items:
        region, sku = _text(item, "armRegionName"), _text(item, "armSkuName")
        kind = meter_kind(item)
        if kind is None or sku not in gpus_by_sku or region not in wanted_regions:
            continue
        meter = _meter(item, warnings)
        if meter is not None and meter.since <= day:
            found.setdefault((region, sku, kind), []).append(meter)
    rows: list[GpuPrice] = []
    for region in wanted_regions:
        for sku, gpus in gpus_by_sku.items():
            spot = _one(found.get((region, sku, SPOT), []), f"{sku} in {region}", SPOT, warnings)
            regular = _one(
                found.get((region, sku, ON_DEMAND), []), f"{sku} in {region}", ON_DEMAND, warnings
            )
            if spot is None or regular is None:
                missing = " and ".join(
                    kind for kind, meter in ((SPOT, spot), (ON_DEMAND, regular)) if meter is None
                )
                warnings.append(f"{sku} in {region}: no usable Linux {missing} price, no row")
                continue
            rows.append(
                GpuPrice(
                    date=day,
                    region=region,
                    sku=sku,
                    gpus=gpus,
                    spot_hourly_usd=spot.usd,
                    on_demand_hourly_usd=regular.usd,
                    source=(
                        f"Azure Retail Prices API, fetched {day.isoformat()}, "
                        f"meters {spot.meter_id}/{regular.meter_id}"
                    ),
                )
            )
    return rows, warnings


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    return value if isinstance(value, str) else ""


def _meter(item: Mapping[str, Any], warnings: list[str]) -> _Meter | None:
    meter_id = _text(item, "meterId") or "?"
    price = item.get("retailPrice")
    if isinstance(price, bool) or not isinstance(price, int | float):
        usd = math.nan
    else:
        usd = float(price)
    if not math.isfinite(usd) or usd <= 0:
        warnings.append(f"meter {meter_id}: retailPrice {price!r} is not a price, ignored")
        return None
    try:
        since = datetime.fromisoformat(_text(item, "effectiveStartDate")).date()
    except ValueError:
        warnings.append(f"meter {meter_id}: effectiveStartDate is not a date, ignored")
        return None
    return _Meter(meter_id, usd, since)


def _one(meters: list[_Meter], what: str, kind: str, warnings: list[str]) -> _Meter | None:
    if not meters:
        return None
    newest = max(m.since for m in meters)
    current = sorted((m for m in meters if m.since == newest), key=lambda m: m.meter_id)
    prices = sorted({m.usd for m in current})
    if len(prices) > 1:
        ids = ", ".join(m.meter_id for m in current)
        warnings.append(f"{what}: {kind} meters {ids} disagree ({prices}), ambiguous")
        return None
    return current[0]
