"""How CLI subcommands reach a running stack: URL, key discovery, errors, the fleet table."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

DEV_CONNECTION_FILE = Path(".spotgate") / "dev.json"
DEFAULT_URL = "http://127.0.0.1:8000"


def read_dev_connection() -> dict[str, Any] | None:
    """What a local `spotgate dev` recorded in DEV_CONNECTION_FILE (url, api_key, admin_key),
    if readable (it is the user's own file, mode 0600)."""
    try:
        data = json.loads(DEV_CONNECTION_FILE.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def discover_url(explicit: str) -> str:
    """--url / SPOTGATE_URL, else the stack a local `spotgate dev` recorded, else the default."""
    if explicit:
        return explicit.rstrip("/")
    connection = read_dev_connection()
    if connection is None or "url" not in connection:
        return DEFAULT_URL
    return str(connection["url"]).rstrip("/")


def auth(key: str | None) -> dict[str, str]:
    """The Authorization header for `key`, or none without one."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _discover(env_names: tuple[str, ...], field: str) -> str | None:
    for name in env_names:
        if os.environ.get(name):
            return os.environ[name]
    connection = read_dev_connection()
    if connection is None or not connection.get(field):
        return None
    return str(connection[field])


def discover_key() -> str | None:
    """The API key (for /v1) from the environment, else a local `spotgate dev`'s."""
    return _discover(("SPOTGATE_API_KEY", "SPOTGATE_DEV_API_KEY"), "api_key")


def discover_admin_key() -> str | None:
    """The operator key (fleet, orchestrations) from the environment, else a local
    `spotgate dev`'s; never the API key, which does not open those routes."""
    return _discover(("SPOTGATE_ADMIN_KEY",), "admin_key")


class StackClient:
    def __init__(self, url: str, key: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = discover_url(url)
        self.key = key or discover_admin_key()
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = auth(self.key)
        try:
            response = httpx.request(
                method, self.url + path, json=body, headers=headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            typer.echo(f"error: cannot reach {self.url}: {exc}", err=True)
            raise typer.Exit(2) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            typer.echo(f"error: HTTP {response.status_code}: {message}", err=True)
            raise typer.Exit(1)
        return response.json() if response.content else None


_STATE_STYLE = {"ready": "green", "provisioning": "yellow", "draining": "magenta", "gone": "dim"}


def render_fleet(console: Console, status: dict[str, Any]) -> None:
    now = time.time()
    table = Table(title="spotgate fleet")
    columns = ("id", "pool", "state", "priority", "zone", "model", "in-flight", "heartbeat")
    for column in columns:
        table.add_column(column)
    for worker in status.get("workers", []):
        style = _STATE_STYLE.get(worker["state"], "")
        beat = worker.get("last_heartbeat") or 0
        table.add_row(
            worker["id"],
            worker["pool"],
            f"[{style}]{worker['state']}[/{style}]" if style else worker["state"],
            worker.get("priority") or "-",
            worker.get("zone") or "-",
            worker["model"] or "-",
            str(worker.get("in_flight", 0)),
            f"{now - beat:.1f}s ago" if beat else "never",
        )
    console.print(table)
    for pool in status.get("pools", []):
        monitor = pool.get("monitor") or {}
        console.print(
            f"pool [bold]{pool['name']}[/bold]: desired {monitor.get('desired', '-')}, "
            f"{pool['ready']} ready, {pool['provisioning']} provisioning, "
            f"{pool['draining']} draining (spot {monitor.get('spot_target', '-')}, "
            f"on-demand {monitor.get('on_demand_target', '-')})"
        )
        console.print(
            f"  monitor tick {monitor.get('tick', '-')}: {monitor.get('why', 'no decision yet')}"
        )
