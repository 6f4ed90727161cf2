"""`spotgate fleet export`: a running stack's fleet journal, as files to analyse elsewhere.

The stack answers `/fleet/journal` with plain rows; the files are written
here by the same code the stack would use (`fleet/journal_export.py`), so an
operator needs only the admin key, not access to the journal's database.
"""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from spotgate.cli_client import StackClient
from spotgate.fleet.journal_export import JournalSnapshot, write_snapshot
from spotgate.time_window import parse_since

console = Console() if sys.stdout.isatty() else Console(width=200)


class ExportFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


def fleet_export(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Folder for the files (created if missing).")],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="parquet (typed) or csv.")
    ] = ExportFormat.parquet,
    since: Annotated[
        str, typer.Option(help='Window start: "30m", "24h", "7d" ago, or an ISO date (UTC).')
    ] = "7d",
) -> None:
    """Write evictions, spot refusals, decisions, worker spans and worker-hours to files."""
    try:
        start = parse_since(since, time.time())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    client: StackClient = ctx.obj
    with console.status(f"Reading the fleet journal of {client.url}") as status:
        data = client.call("GET", f"/fleet/journal?since={start:.6f}")
        snapshot = JournalSnapshot.from_json(data)
        try:
            counts = write_snapshot(
                snapshot, out_dir, fmt.value, lambda name: status.update(f"Writing {name}")
            )
        except ImportError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    table = Table(title=f"fleet journal since {since} → {out_dir}")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, rows in counts.items():
        table.add_row(str(out_dir / name), str(rows))
    console.print(table)
