"""The price CSV as a history: fresh rows merged in, what changed, and how old the newest is.

A refresh adds rows rather than overwriting prices, because GPU time is costed
at the newest row dated on or before the day it ran: replacing last month's
row would silently re-cost last month. Only a row with the same date, region
and SKU is replaced (a second refresh on one day). Rows keep the order they
have in the file, new ones go at the end, so a refresh is a small diff.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from spotgate.costs.price_table import PRICE_COLUMNS, GpuPrice, PriceTable

STALE_AFTER_DAYS = 30
NOTIONAL_REGION = "local"

Key = tuple[date, str, str]


def key_of(row: GpuPrice) -> Key:
    return (row.date, row.region, row.sku)


def rows_in_file_order(text: str, name: str = "<prices>") -> list[GpuPrice]:
    """The rows of a price CSV, validated as PriceTable does, in the order the file has them."""
    by_key = {key_of(row): row for row in PriceTable.parse(text, name).rows}
    order = []
    for fields in csv.DictReader(io.StringIO(text)):
        day, region, sku = ((fields.get(k) or "").strip() for k in ("date", "region", "sku"))
        order.append((date.fromisoformat(day), region, sku))
    return [by_key[key] for key in order]


def merge(existing: Sequence[GpuPrice], fresh: Iterable[GpuPrice]) -> list[GpuPrice]:
    """`existing` with each fresh row replacing its same-day row in place, or appended."""
    new = {key_of(row): row for row in fresh}
    merged = [new.pop(key_of(row), row) for row in existing]
    return merged + list(new.values())


@dataclass(frozen=True)
class PriceChange:
    new: GpuPrice
    old: GpuPrice | None
    """The row a cost on the new row's day was priced at before: same region and SKU."""

    @property
    def replaces(self) -> bool:
        return self.old is not None and self.old.date == self.new.date


def changes(existing: Sequence[GpuPrice], fresh: Iterable[GpuPrice]) -> list[PriceChange]:
    found = []
    for row in fresh:
        earlier = [
            r for r in existing if (r.region, r.sku) == (row.region, row.sku) and r.date <= row.date
        ]
        found.append(PriceChange(row, max(earlier, key=lambda r: r.date, default=None)))
    return found


def overriding_rows(existing: Sequence[GpuPrice], fresh: Iterable[GpuPrice]) -> list[str]:
    """Warnings for rows dated after a fresh one: from their day they, not the fetch, apply."""
    found = []
    for row in fresh:
        for later in existing:
            if (later.region, later.sku) == (row.region, row.sku) and later.date > row.date:
                found.append(
                    f"{row.sku} in {row.region}: the row dated {later.date} "
                    f"({later.source}) will be used instead from that day"
                )
    return found


def percent_change(old: float, new: float) -> float | None:
    return None if old == 0 else (new - old) / old * 100.0


def to_csv(rows: Iterable[GpuPrice]) -> str:
    """CSV text PriceTable.parse reads back to the same rows (prices written exactly)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PRICE_COLUMNS)
    for row in rows:
        writer.writerow(
            (
                row.date.isoformat(),
                row.region,
                row.sku,
                row.gpus,
                _usd(row.spot_hourly_usd),
                _usd(row.on_demand_hourly_usd),
                row.source,
            )
        )
    return out.getvalue()


def _usd(value: float) -> str:
    text = repr(value)  # the shortest text that reads back as the same float
    return f"{value:.12f}".rstrip("0") if "e" in text else text


def current(
    rows: Iterable[GpuPrice], today: date, region: str | None = None, sku: str | None = None
) -> list[GpuPrice]:
    """The newest row dated on or before `today` for each region and SKU, sorted."""
    newest: dict[tuple[str, str], GpuPrice] = {}
    for row in rows:
        if row.date > today or (region and row.region != region) or (sku and row.sku != sku):
            continue
        held = newest.get((row.region, row.sku))
        if held is None or row.date > held.date:
            newest[(row.region, row.sku)] = row
    return [newest[k] for k in sorted(newest)]


def staleness(rows: Iterable[GpuPrice], today: date) -> str | None:
    """A warning when the newest real (not notional) price is over STALE_AFTER_DAYS old."""
    dates = [row.date for row in rows if row.region != NOTIONAL_REGION]
    if not dates:
        return None
    age = (today - max(dates)).days
    if age <= STALE_AFTER_DAYS:
        return None
    return (
        f"the newest Azure price is from {max(dates)}, {age} days ago (over "
        f"{STALE_AFTER_DAYS}): spot prices move daily; run `spotgate prices refresh`"
    )
