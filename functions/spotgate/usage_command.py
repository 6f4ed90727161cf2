"""`spotgate usage`: requests, tokens, revenue, cost and margin of a running stack (admin role).

The report is made by the stack (`GET /admin/usage`), so it is the same
from the CLI, the API and a notebook. `--export` pages the raw records a
day at a time (`GET /admin/usage/records`) into CSV or Parquet.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from spotgate.cli_client import StackClient
from spotgate.gateway.tenancy.usage import USAGE_COLUMNS
from spotgate.table_export import write_table
from spotgate.time_window import parse_since

console = Console() if sys.stdout.isatty() else Console(width=200)
DAY_S = 86_400.0
MONEY = ("revenue_usd", "cost_usd", "margin_usd")


def _usd(value: Any) -> str:
    if value is None:
        return "unknown"
    style = "red" if value < 0 else ""
    text = f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"
    return f"[{style}]{text}[/{style}]" if style else text


def _cell(column: str, value: Any) -> str:
    if column in MONEY:
        return _usd(value)
    if column == "gpu_hours":
        return "-" if value is None else f"{value:,.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_report(console: Console, report: dict[str, Any], names: dict[str, str]) -> None:
    per_request = report["by"] in ("key", "model", "kind", "batch")  # GPU time belongs to none
    columns = [c for c in report["columns"] if not (per_request and c == "gpu_hours")]
    since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(report["since"]))
    until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(report["until"]))
    table = Table(title=f"usage by {report['by']}, {since} → {until} UTC", show_footer=True)
    for column in columns:
        title = report["by"] if column == "group" else column
        footer = _cell(column, report["totals"].get(column)) if column != "group" else "total"
        table.add_column(title, footer=footer, justify="left" if column == "group" else "right")
    for row in report["rows"]:
        group = row["group"]
        shown = f"{names[group]} ({group})" if group in names else group
        table.add_row(*(shown if c == "group" else _cell(c, row.get(c)) for c in columns))
    console.print(table)
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _days(since: float, until: float) -> Iterator[tuple[float, float]]:
    start = since
    while start < until:
        end = min(until, start + DAY_S)
        yield start, end
        start = end


def export_records(client: StackClient, path: Path, since: float, until: float) -> int:
    """Every record in [since, until), a day per call, written to `path` (CSV or Parquet)."""
    days = list(_days(since, until))
    rows: list[dict[str, Any]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("fetching usage records (days)", total=len(days))
        for start, end in days:
            query = urlencode({"since": f"{start:.6f}", "until": f"{end:.6f}"})
            page = client.call("GET", f"/admin/usage/records?{query}")
            rows.extend(page["data"])
            progress.advance(task)
    with console.status(f"writing {len(rows)} records to {path}"):
        return write_table(path, USAGE_COLUMNS, rows)


def usage(
    url: Annotated[
        str,
        typer.Option(envvar="SPOTGATE_URL", help="Base URL of a running stack."),
    ] = "",
    by: Annotated[
        str,
        typer.Option(help="key, model, day, worker, pool, kind (batch or interactive) or batch."),
    ] = "model",
    since: Annotated[
        str, typer.Option(help='Window start: "30m", "24h", "7d" ago, or an ISO date (UTC).')
    ] = "30d",
    until: Annotated[
        str | None, typer.Option(help="Window end (ISO date, UTC); default now.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Write the raw records to FILE.parquet or FILE.csv."),
    ] = None,
) -> None:
    """Requests, tokens, revenue, GPU cost and margin over a window, grouped one way."""
    now = time.time()
    try:
        start = parse_since(since, now)
        end = parse_since(until, now) if until else now
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    client = StackClient(url)
    if export is not None:
        if export.suffix.lower() not in (".csv", ".parquet"):
            raise typer.BadParameter("the file must end in .csv or .parquet", param_hint="--export")
        try:
            count = export_records(client, export, start, end)
        except ImportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        console.print(f"wrote {count} usage records to [bold]{export}[/bold]")
        return
    query = urlencode({"by": by, "since": f"{start:.6f}", "until": f"{end:.6f}"})
    report: dict[str, Any] = client.call("GET", f"/admin/usage?{query}")
    if as_json:
        typer.echo(json.dumps(report["rows"]))
        return
    names: dict[str, str] = {}
    if by == "key":
        names = {k["id"]: k["name"] for k in client.call("GET", "/admin/keys")["data"]}
    render_report(console, report, names)
