"""`spotgate prices`: refresh the dated GPU price CSV from the Azure Retail Prices API, show it.

Margins are only as good as these numbers, so a refresh shows every price it
changes and every SKU it could not price, and writes nothing unless all
regions were read in full; `show` says when the newest price is old.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from spotgate.adapters.http_retail_prices import RetailPricesClient, RetailPricesError
from spotgate.costs import price_table
from spotgate.costs.price_snapshot import (
    PriceChange,
    changes,
    current,
    merge,
    overriding_rows,
    percent_change,
    rows_in_file_order,
    staleness,
    to_csv,
)
from spotgate.costs.price_table import GpuPrice
from spotgate.costs.retail_prices import (
    DEFAULT_REGIONS,
    GPUS_BY_SKU,
    price_filter,
    rows_from_items,
)

console = Console() if sys.stdout.isatty() else Console(width=200)
prices_app = typer.Typer(
    no_args_is_help=True,
    help="GPU VM prices: refresh the dated snapshot from the Azure Retail Prices API, show it.",
)


def make_client() -> RetailPricesClient:
    """The API client; tests replace this with one on a recorded transport."""
    return RetailPricesClient()


def today() -> date:
    return datetime.now(UTC).date()


def packaged_csv() -> Path:
    return Path(price_table.__file__).with_name(price_table.PACKAGED_NAME)


def checkout_csv() -> Path | None:
    """The packaged CSV when it sits in a source checkout (functions/spotgate/costs/)."""
    path = packaged_csv()
    return path if (path.parents[3] / "pyproject.toml").is_file() else None


def _names(text: str | None, default: tuple[str, ...], what: str) -> list[str]:
    if text is None:
        return list(default)
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise typer.BadParameter(f"no {what} given", param_hint=f"--{what}")
    return names


def _load(path: Path) -> list[GpuPrice]:
    try:
        return rows_in_file_order(path.read_text(encoding="utf-8"), str(path))
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _page_counter(progress: Progress, region: str) -> Callable[[int, int], None]:
    task = progress.add_task(f"{region}: page 1", total=None)

    def seen(page: int, count: int) -> None:
        progress.update(task, description=f"{region}: page {page}, {count} items")
        progress.update(task, completed=page, total=page)

    return seen


def _fetch(regions: list[str], skus: list[str]) -> list[dict[str, Any]]:
    """Every region in full, or RetailPricesError: a half-read answer is never used."""
    items: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with make_client() as client, Progress(*columns, console=console) as progress:
        for region in regions:
            on_page = _page_counter(progress, region)
            items.extend(client.items(price_filter(region, skus), on_page=on_page))
    return items


def _price(change: PriceChange, column: str) -> str:
    new: float = getattr(change.new, column)
    if change.old is None:
        return f"new {new:.4f}"
    old: float = getattr(change.old, column)
    pct = percent_change(old, new)
    shown = "n/a" if pct is None else f"{pct:+.1f}%"
    style = "" if pct is None or abs(pct) < 0.05 else ("red" if pct > 0 else "green")
    text = f"{old:.4f} → {new:.4f} ({shown})"
    return f"[{style}]{text}[/{style}]" if style else text


def _render_changes(found: list[PriceChange], day: date) -> None:
    table = Table(title=f"Azure retail prices fetched {day} (USD per VM-hour)")
    for title in ("region", "sku", "gpus", "spot", "on-demand", "was dated"):
        table.add_column(title, justify="right" if title == "gpus" else "left")
    for change in found:
        old = change.old
        was = "—" if old is None else f"{old.date} (replaced)" if change.replaces else str(old.date)
        table.add_row(
            change.new.region,
            change.new.sku,
            str(change.new.gpus),
            _price(change, "spot_hourly_usd"),
            _price(change, "on_demand_hourly_usd"),
            was,
        )
    console.print(table)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)  # a reader sees the old file or the new one, never half
    finally:
        partial.unlink(missing_ok=True)


@prices_app.command("refresh")
def refresh(
    out: Annotated[
        Path | None,
        typer.Option(help="CSV to update (default: the packaged one, in a source checkout)."),
    ] = None,
    regions: Annotated[
        str | None, typer.Option(help=f"Comma-separated (default: {','.join(DEFAULT_REGIONS)}).")
    ] = None,
    skus: Annotated[
        str | None, typer.Option(help="Comma-separated VM sizes (default: every GPU SKU known).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show changes, write nothing.")] = (
        False
    ),
) -> None:
    """Fetch spot and pay-as-you-go Linux prices and add them, dated today, to the CSV."""
    chosen_regions = _names(regions, DEFAULT_REGIONS, "regions")
    chosen_skus = _names(skus, tuple(GPUS_BY_SKU), "skus")
    unknown = [s for s in chosen_skus if s not in GPUS_BY_SKU]
    if unknown:
        raise typer.BadParameter(
            f"no GPU count known for {', '.join(unknown)}; known: {', '.join(GPUS_BY_SKU)}",
            param_hint="--skus",
        )
    target = out or checkout_csv()
    if target is None:
        raise typer.BadParameter(
            "not running from a source checkout: say which CSV to update", param_hint="--out"
        )
    existing = _load(target) if target.exists() else []
    day = today()
    for name in chosen_regions:
        try:
            price_filter(name, chosen_skus)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--regions/--skus") from None
    try:
        items = _fetch(chosen_regions, chosen_skus)
    except RetailPricesError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}\nnothing was changed in {target}")
        raise typer.Exit(1) from None
    gpus = {sku: GPUS_BY_SKU[sku] for sku in chosen_skus}
    fresh, warnings = rows_from_items(items, day, gpus, chosen_regions)
    found = changes(existing, fresh)
    if fresh:
        _render_changes(found, day)
    for warning in [*warnings, *overriding_rows(existing, fresh)]:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if not fresh:
        console.print(f"[red]error:[/red] no price could be read; nothing was changed in {target}")
        raise typer.Exit(1)
    replaced = sum(1 for change in found if change.replaces)
    summary = f"{len(fresh)} rows ({len(fresh) - replaced} new, {replaced} replaced)"
    if dry_run:
        console.print(f"dry run: {summary}, {target} not written")
        return
    _write(target, to_csv(merge(existing, fresh)))
    console.print(f"wrote {summary} to {target}")


@prices_app.command("show")
def show(
    region: Annotated[str | None, typer.Option(help="Only this region.")] = None,
    sku: Annotated[str | None, typer.Option(help="Only this VM size.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="CSV to read (default: the packaged one).")
    ] = None,
) -> None:
    """The price in force today for each region and SKU, with its date and source."""
    rows = _load(file or packaged_csv())
    day = today()
    shown = current(rows, day, region, sku)
    table = Table(title=f"GPU VM prices in force on {day} (USD per VM-hour)")
    for title in ("region", "sku", "gpus", "spot", "on-demand", "dated", "source"):
        table.add_column(
            title, justify="right" if title in ("gpus", "spot", "on-demand") else "left"
        )
    for row in shown:
        table.add_row(
            row.region,
            row.sku,
            str(row.gpus),
            f"{row.spot_hourly_usd:.4f}",
            f"{row.on_demand_hourly_usd:.4f}",
            str(row.date),
            escape(row.source),
        )
    console.print(table)
    if not shown:
        console.print("[yellow]warning:[/yellow] no price in force matches")
    warning = staleness(shown, day)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
