"""Hourly GPU VM prices by date, region and SKU: what a worker's GPU time is costed at.

The packaged table (`gpu_prices.csv`) is a starting point, not a price list to
trust. Its `local` rows are notional, so a laptop run shows numbers at all; its
Azure rows are estimates of the retail Linux pay-as-you-go and spot list prices
(Azure Retail Prices API, https://prices.azure.com/api/retail/prices), written
by hand and not fetched, and spot prices move daily. Every row says which in
its `source` column. Refresh the rows, or point `price_table` at your own CSV,
before a margin is used for a decision.

Rows are dated so that a price change does not rewrite the past: GPU time is
costed at the newest row dated on or before the day it ran. A SKU with no row
has no price; it is reported as unknown, never guessed.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

from spotgate.fleet.signals import ON_DEMAND, SPOT

PRICE_COLUMNS = (
    "date",
    "region",
    "sku",
    "gpus",
    "spot_hourly_usd",
    "on_demand_hourly_usd",
    "source",
)
PACKAGED_NAME = "gpu_prices.csv"


@dataclass(frozen=True)
class GpuPrice:
    date: date
    region: str
    sku: str
    gpus: int
    spot_hourly_usd: float
    on_demand_hourly_usd: float
    source: str

    def hourly_usd(self, priority: str) -> float:
        if priority == SPOT:
            return self.spot_hourly_usd
        if priority == ON_DEMAND:
            return self.on_demand_hourly_usd
        raise ValueError(f"priority must be {SPOT!r} or {ON_DEMAND!r}, not {priority!r}")


@dataclass(frozen=True)
class Quote:
    usd_per_hour: float
    row: GpuPrice
    exact_region: bool
    """False when the region had no row for the SKU and another region's price stands in."""


def day_of(at: float) -> date:
    return datetime.fromtimestamp(at, UTC).date()


class PriceTable:
    def __init__(self, rows: Iterable[GpuPrice]) -> None:
        self._rows = sorted(rows, key=lambda r: (r.sku, r.date, r.region))
        self._by_sku: dict[str, list[GpuPrice]] = {}
        for row in self._rows:
            self._by_sku.setdefault(row.sku, []).append(row)

    @property
    def rows(self) -> tuple[GpuPrice, ...]:
        return tuple(self._rows)

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The CSV at `path`, or the packaged one when None."""
        if path is None:
            text = resources.files(__package__ or "spotgate.costs").joinpath(PACKAGED_NAME)
            return cls.parse(text.read_text(encoding="utf-8"), PACKAGED_NAME)
        return cls.parse(path.read_text(encoding="utf-8"), str(path))

    @classmethod
    def parse(cls, text: str, name: str = "<prices>") -> PriceTable:
        """Rows from CSV text; `name` is what an error calls the file."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in PRICE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{name}:1: missing columns {missing}; need {list(PRICE_COLUMNS)}")
        rows: list[GpuPrice] = []
        seen: dict[tuple[date, str, str], int] = {}
        for fields in reader:
            line = reader.line_num
            row = _row(fields, f"{name}:{line}")
            key = (row.date, row.region, row.sku)
            if key in seen:
                raise ValueError(
                    f"{name}:{line}: {row.sku} in {row.region} on {row.date} "
                    f"is already priced on line {seen[key]}"
                )
            seen[key] = line
            rows.append(row)
        return cls(rows)

    def knows(self, sku: str) -> bool:
        return sku in self._by_sku

    def hourly(self, sku: str, priority: str, region: str, at: float) -> Quote | None:
        """The price of `sku` as `priority` in `region` on the day of `at` (a UTC timestamp).

        Another region's newest price stands in, flagged, when `region` has
        none for the SKU yet: a cost a little off is more use than none, and
        the report says so. None when no row for the SKU is old enough.
        """
        day = day_of(at)
        dated = [r for r in self._by_sku.get(sku, ()) if r.date <= day]
        here = [r for r in dated if r.region == region]
        if here:
            row = here[-1]
        elif dated:
            newest = max(r.date for r in dated)
            row = min((r for r in dated if r.date == newest), key=lambda r: r.region)
        else:
            return None
        return Quote(row.hourly_usd(priority), row, exact_region=row.region == region)


def _row(fields: dict[str, str | None], where: str) -> GpuPrice:
    if None in fields:
        raise ValueError(f"{where}: more values than the {len(PRICE_COLUMNS)} columns")
    values = {k: (fields.get(k) or "").strip() for k in PRICE_COLUMNS}
    empty = [k for k, v in values.items() if not v]
    if empty:
        raise ValueError(f"{where}: empty {', '.join(empty)}")
    try:
        day = date.fromisoformat(values["date"])
    except ValueError:
        raise ValueError(f"{where}: date {values['date']!r} is not YYYY-MM-DD") from None
    try:
        gpus = int(values["gpus"])
    except ValueError:
        gpus = 0
    if gpus < 1:
        raise ValueError(f"{where}: gpus {values['gpus']!r} is not a whole number of at least 1")
    return GpuPrice(
        date=day,
        region=values["region"],
        sku=values["sku"],
        gpus=gpus,
        spot_hourly_usd=_usd(values, "spot_hourly_usd", where),
        on_demand_hourly_usd=_usd(values, "on_demand_hourly_usd", where),
        source=values["source"],
    )


def _usd(values: dict[str, str], column: str, where: str) -> float:
    try:
        usd = float(values[column])
    except ValueError:
        usd = -1.0
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"{where}: {column} {values[column]!r} is not a price in USD (>= 0)")
    return usd
