"""`spotgate serve`: the gateway and control plane as one server, for a container or a VM.

The console side: settings, logging, and uvicorn with a graceful drain. The
host itself (what is built from the settings, and when it refuses) is
hosts/serve.py.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Annotated, Any

import typer

DEFAULT_DRAIN_S = 25
"""Under the 30 s Container Apps and Kubernetes give a stopping container before SIGKILL."""


def _log_to_stdout() -> None:
    """Container platforms collect stdout/stderr: requests as JSON lines on stdout, the
    rest as plain lines on stderr."""
    from spotgate.telemetry.access_log import ACCESS_LOGGER, JsonLineFormatter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLineFormatter())
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False


def _stopped(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal once it has drained; that is a clean stop, not a
    crash, so the container exits 0 instead of 143."""
    raise SystemExit(0)


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind: 0.0.0.0 in a container (default SPOTGATE_HOST)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default SPOTGATE_PORT, else 8000).")
    ] = None,
    worker: Annotated[
        list[str] | None,
        typer.Option(
            envvar="SPOTGATE_SERVE_WORKERS",
            help="A machine whose agent may enrol, as ID=URL or POOL/ID=URL (URL: its engine, "
            "by IP); repeat per machine. Not needed with SPOTGATE_COMPUTE=azure.",
        ),
    ] = None,
    drain_timeout: Annotated[
        int,
        typer.Option(
            min=0,
            help="Seconds in-flight requests and streams get to finish after SIGTERM; "
            "keep it under the platform's grace period.",
        ),
    ] = DEFAULT_DRAIN_S,
) -> None:
    """Serve the gateway and control plane for a container (Container Apps, AKS) or a VM.

    Same SPOTGATE_* settings as the Functions host; fleet monitor in-process; no workers.
    """
    import uvicorn

    from spotgate.fleet.fixed_machines import FixedMachine
    from spotgate.hosts.http import http_protocol_for
    from spotgate.hosts.serve import ServeRefused, build_serve_app
    from spotgate.settings import Settings

    _log_to_stdout()
    overrides: dict[str, Any] = {"host": host, "port": port}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        machines = [FixedMachine.parse(spec, settings.pools[0]) for spec in worker or []]
    except ValueError as bad:
        raise typer.BadParameter(str(bad), param_hint="--worker") from None
    try:
        app = build_serve_app(settings, machines)
    except ServeRefused as refused:
        typer.echo(str(refused), err=True)
        raise typer.Exit(2) from None
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        http=http_protocol_for(settings),  # httptools, with head and per-address limits
        proxy_headers=False,
        log_level="info",
        access_log=False,  # the JSON access lines replace uvicorn's
        timeout_graceful_shutdown=drain_timeout,
    )
    server = uvicorn.Server(config)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _stopped)
    server.run()
    if not server.started:
        typer.echo("spotgate serve did not start; the log above says why.", err=True)
        raise typer.Exit(3)
