"""How CLI subcommands reach a running stack: URL, key discovery, errors, the fleet table."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from spotgate.telemetry.durations import format_duration

DEV_CONNECTION_FILE = Path(".spotgate") / "dev.json"
DEFAULT_URL = "http://127.0.0.1:8000"
_LOOPBACK_NAMES = {"localhost": "127.0.0.1", "[::1]": "127.0.0.1", "::1": "127.0.0.1"}


class ConnectionProblem(ValueError):
    """The URL to use is not one (a typo in --url or SPOTGATE_URL); the message says which."""


@dataclass(frozen=True)
class Connection:
    """Where a command sends its requests, where that URL came from, and the keys it may send.

    `source` is "--url", "SPOTGATE_URL", the dev.json path, or "default", so an
    error can say which setting to fix.
    """

    url: str
    source: str
    api_key: str | None = None
    admin_key: str | None = None


def find_dev_connection_file(start: Path | None = None) -> Path | None:
    """`.spotgate/dev.json` in `start` (default: the cwd) or its nearest parent, as git
    finds `.git`: a second terminal opened in a subfolder of the checkout still finds it."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEV_CONNECTION_FILE
        if candidate.is_file():
            return candidate
    return None


def read_dev_connection(start: Path | None = None) -> dict[str, Any] | None:
    """What a local `spotgate dev` recorded (url, api_key, admin_key), if found and readable
    (it is the user's own file, mode 0600)."""
    path = find_dev_connection_file(start)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def normalise_url(url: str, source: str) -> str:
    """`url` without a trailing slash; anything not http(s)://host is refused by name, since
    httpx's own error for it reads like a network failure."""
    cleaned = url.strip().rstrip("/")
    parts = urlsplit(cleaned)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionProblem(
            f"{source} is {url!r}, which is not a URL; use http://HOST:PORT (e.g. {DEFAULT_URL})"
        )
    return cleaned


def _same_stack(a: str, b: str) -> bool:
    def key(url: str) -> tuple[str, str, int | None]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.scheme, _LOOPBACK_NAMES.get(host, host), port

    return key(a) == key(b)


def resolve_connection(
    url: str = "", *, env: Mapping[str, str] | None = None, start: Path | None = None
) -> Connection:
    """The one place `fleet`, `keys`, `usage` and `bench` decide where to go and what key
    to send: --url, else SPOTGATE_URL, else the nearest dev.json's, else :8000.

    Keys from the environment always apply. dev.json's keys go only to the stack dev.json
    names: a `--url` elsewhere must not receive the local admin key.
    """
    env = os.environ if env is None else env
    path = find_dev_connection_file(start)
    record = read_dev_connection(start) or {}
    recorded_url = None
    if isinstance(record.get("url"), str):
        try:
            recorded_url = normalise_url(record["url"], str(path))
        except ConnectionProblem:
            recorded_url = None
    if url:
        chosen, source = normalise_url(url, "--url"), "--url"
    elif env.get("SPOTGATE_URL"):
        chosen, source = normalise_url(env["SPOTGATE_URL"], "SPOTGATE_URL"), "SPOTGATE_URL"
    elif recorded_url is not None:
        chosen, source = recorded_url, str(path)
    else:
        chosen, source = DEFAULT_URL, "default"
    local = recorded_url is not None and _same_stack(chosen, recorded_url)

    def key(names: tuple[str, ...], field: str) -> str | None:
        for name in names:
            if env.get(name):
                return env[name]
        value = record.get(field) if local else None
        return str(value) if value else None

    return Connection(
        chosen,
        source,
        api_key=key(("SPOTGATE_API_KEY", "SPOTGATE_DEV_API_KEY"), "api_key"),
        admin_key=key(("SPOTGATE_ADMIN_KEY",), "admin_key"),
    )


def connect_or_exit(url: str) -> Connection:
    """`resolve_connection` for a command: a bad URL ends it with a one-line error (exit 2)."""
    try:
        return resolve_connection(url)
    except ConnectionProblem as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def discover_url(explicit: str) -> str:
    """--url / SPOTGATE_URL, else the stack a local `spotgate dev` recorded, else the default."""
    return resolve_connection(explicit).url


def discover_key(url: str = "") -> str | None:
    """The API key (for /v1) from the environment, else a local `spotgate dev`'s."""
    return resolve_connection(url).api_key


def discover_admin_key(url: str = "") -> str | None:
    """The operator key (fleet, orchestrations) from the environment, else a local
    `spotgate dev`'s; never the API key, which does not open those routes."""
    return resolve_connection(url).admin_key


def auth(key: str | None) -> dict[str, str]:
    """The Authorization header for `key`, or none without one."""
    return {"Authorization": f"Bearer {key}"} if key else {}


class StackClient:
    def __init__(self, url: str, key: str | None = None, timeout_s: float = 10.0) -> None:
        self.connection = connect_or_exit(url)
        self.url = self.connection.url
        self.key = key or self.connection.admin_key
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = auth(self.key)
        try:
            response = httpx.request(
                method, self.url + path, json=body, headers=headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            via = "" if self.connection.source == "--url" else f" (from {self.connection.source})"
            typer.echo(f"error: cannot reach {self.url}{via}: {exc}", err=True)
            raise typer.Exit(2) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            if response.status_code == 401 and not self.key:
                message += (
                    " (no admin key was sent: set SPOTGATE_ADMIN_KEY; the key in "
                    ".spotgate/dev.json is sent only to the stack it names)"
                )
            typer.echo(f"error: HTTP {response.status_code}: {message}", err=True)
            raise typer.Exit(1)
        return response.json() if response.content else None


def hoist_options(
    args: list[str], takes_value: Mapping[str, bool], commands: set[str]
) -> list[str]:
    """`args` with the group options named in `takes_value` moved from after the subcommand
    to before it, so `fleet kill W --url U` means `fleet --url U kill W`.

    A value option given twice (before and after) is refused: silently using one would
    send the request to a stack the user did not mean.
    """
    position = None
    index = 0
    while index < len(args):
        token = args[index]
        if token == "--":
            return args
        if token in commands:
            position = index
            break
        name, has_value = token.partition("=")[0], "=" in token
        index += 2 if takes_value.get(name) and not has_value else 1
    if position is None:
        return args
    head, moved, rest = args[:position], [], []
    index = position + 1
    while index < len(args):
        token = args[index]
        if token == "--":
            rest += args[index:]
            break
        name, has_value = token.partition("=")[0], "=" in token
        if name not in takes_value:
            rest.append(token)
            index += 1
            continue
        width = 2 if takes_value[name] and not has_value else 1
        moved += args[index : index + width]
        index += width
    for name, value in takes_value.items():
        given = [t for t in head + moved if t == name or t.startswith(name + "=")]
        if value and len(given) > 1:
            raise typer.BadParameter(
                "given more than once (before and after the subcommand?); give it once",
                param_hint=name,
            )
    return head + moved + args[position : position + 1] + rest


class GroupOptionsAnywhere(TyperGroup):
    """A command group whose own options may also follow the subcommand, as people type
    them (`spotgate fleet kill W --url U`), not only precede it as click requires."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        takes_value: dict[str, bool] = {}
        for param in self.params:
            for name in (*param.opts, *getattr(param, "secondary_opts", ())):
                if name.startswith("--"):
                    takes_value[name] = not getattr(param, "is_flag", False)
        moved = hoist_options(list(args), takes_value, set(self.commands))
        return super().parse_args(ctx, moved)


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
            f"{format_duration(now - beat)} ago" if beat else "never",
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
