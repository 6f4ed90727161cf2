"""`spotgate keys`: create, list, change and revoke a running stack's API keys (admin role)."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from spotgate.cli_client import StackClient

console = Console() if sys.stdout.isatty() else Console(width=200)
keys_app = typer.Typer(help="Create, list, change and revoke API keys of a running stack.")

UrlOption = Annotated[
    str,
    typer.Option(
        envvar="SPOTGATE_URL",
        help="Base URL of a running stack (default: .spotgate/dev.json's, else :8000).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ModelsOption = Annotated[
    str | None, typer.Option("--models", help="Models it may call, comma-separated.")
]
GroupOption = Annotated[
    list[str] | None, typer.Option("--group", help="A model group it may call (repeatable).")
]
RpmOption = Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")]
TpmOption = Annotated[int | None, typer.Option("--tpm", min=1, help="Tokens per minute.")]
ParallelOption = Annotated[int | None, typer.Option("--parallel", min=1, help="Requests at once.")]
BudgetOption = Annotated[
    float | None, typer.Option("--budget", min=0, help="USD per budget period.")
]
PeriodOption = Annotated[
    str | None, typer.Option("--budget-period", help="day, month (default) or total.")
]
ExpiresOption = Annotated[
    str | None, typer.Option("--expires", help="ISO date or time (UTC), e.g. 2027-01-31.")
]
OwnerOption = Annotated[str | None, typer.Option("--owner", help="Owner or team.")]
CacheGroupOption = Annotated[
    str | None, typer.Option("--cache-group", help="Share cache entries with keys of this group.")
]


def _fields(
    models: str | None,
    groups: list[str] | None,
    rpm: int | None,
    tpm: int | None,
    parallel: int | None,
    budget: float | None,
    period: str | None,
    expires: str | None,
    owner: str | None,
    cache_group: str | None,
) -> dict[str, Any]:
    """The API's field names for the options given (those not given are left out)."""
    fields: dict[str, Any] = {
        "models": [m.strip() for m in models.split(",") if m.strip()] if models else None,
        "groups": groups or None,
        "rpm": rpm,
        "tpm": tpm,
        "max_parallel": parallel,
        "budget_usd": budget,
        "budget_period": period,
        "expires_at": expires,
        "owner": owner,
        "cache_group": cache_group,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def _limits(key: dict[str, Any]) -> str:
    parts = [
        f"{key[name]} {label}"
        for name, label in (("rpm", "rpm"), ("tpm", "tpm"), ("max_parallel", "at once"))
        if key.get(name)
    ]
    if key.get("budget_usd") is not None:
        parts.append(f"${key['budget_usd']:g}/{key.get('budget_period') or 'month'}")
    return ", ".join(parts) or "none"


def render_keys(console: Console, keys: list[dict[str, Any]]) -> None:
    table = Table(title="spotgate keys")
    for column in ("id", "name", "prefix", "owner", "models", "limits", "expires", "state"):
        table.add_column(column)
    for key in keys:
        models = ", ".join([*key.get("models", []), *(f"@{g}" for g in key.get("groups", []))])
        state = "[dim]revoked[/dim]" if key.get("revoked") else "[green]active[/green]"
        table.add_row(
            key["id"],
            key["name"],
            f"{key['prefix']}…",
            key.get("owner") or "-",
            models or "all",
            _limits(key),
            _when(key.get("expires_at")),
            state,
        )
    console.print(table)


@keys_app.callback()
def keys(ctx: typer.Context, url: UrlOption = "") -> None:
    ctx.obj = StackClient(url)


@keys_app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    models: ModelsOption = None,
    group: GroupOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    parallel: ParallelOption = None,
    budget: BudgetOption = None,
    budget_period: PeriodOption = None,
    expires: ExpiresOption = None,
    owner: OwnerOption = None,
    cache_group: CacheGroupOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; its secret is printed this once and cannot be shown again."""
    fields = _fields(
        models, group, rpm, tpm, parallel, budget, budget_period, expires, owner, cache_group
    )
    created: dict[str, Any] = ctx.obj.call("POST", "/admin/keys", {"name": name, **fields})
    if as_json:
        typer.echo(json.dumps(created))
        return
    console.print(f"created key [bold]{created['name']}[/bold] ({created['id']})")
    console.print(f"  limits: {_limits(created)}")
    console.print("  the key, shown this once (store it now):")
    typer.echo(created["key"])


@keys_app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every key, revoked ones included (never their secrets)."""
    listed: dict[str, Any] = ctx.obj.call("GET", "/admin/keys")
    if as_json:
        typer.echo(json.dumps(listed["data"]))
    else:
        render_keys(console, listed["data"])


@keys_app.command("update")
def update(
    ctx: typer.Context,
    name_or_id: str,
    models: ModelsOption = None,
    group: GroupOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    parallel: ParallelOption = None,
    budget: BudgetOption = None,
    budget_period: PeriodOption = None,
    expires: ExpiresOption = None,
    owner: OwnerOption = None,
    cache_group: CacheGroupOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a key's models or limits; every gateway instance applies it within seconds."""
    fields = _fields(
        models, group, rpm, tpm, parallel, budget, budget_period, expires, owner, cache_group
    )
    if not fields:
        raise typer.BadParameter("nothing to change: give at least one option")
    path = f"/admin/keys/{quote(name_or_id, safe='')}"
    updated: dict[str, Any] = ctx.obj.call("PATCH", path, fields)
    if as_json:
        typer.echo(json.dumps(updated))
    else:
        render_keys(console, [updated])


@keys_app.command("revoke")
def revoke(ctx: typer.Context, name_or_id: str, as_json: JsonOption = False) -> None:
    """Revoke a key: refused on its next request, on every instance within seconds."""
    revoked: dict[str, Any] = ctx.obj.call("DELETE", f"/admin/keys/{quote(name_or_id, safe='')}")
    if as_json:
        typer.echo(json.dumps(revoked))
    else:
        console.print(f"revoked [bold]{revoked['name']}[/bold] ({revoked['id']})")
