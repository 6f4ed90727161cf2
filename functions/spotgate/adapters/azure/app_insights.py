"""Metrics and traces to Application Insights: the Azure Monitor OpenTelemetry distro, set up once.

`configure_azure_monitor` installs the global OpenTelemetry providers that
spotgate's telemetry records into (telemetry/otel_sink.py, tracing.py,
monitor_ticks.py), with Azure Monitor exporters behind them. The deployment
turns the resource's local (key) authentication off, so ingestion is signed
with the Function app's managed identity: the identity
`APPLICATIONINSIGHTS_AUTHENTICATION_STRING` names (`Authorization=AAD;
ClientId=<client id>`, as Bicep sets it, with the Monitoring Metrics
Publisher role), else `DefaultAzureCredential`.

Logs stay with the Functions host, which already sends every log line to
`traces` (the access lines the latency alerts read): exporting them here too
would write each line twice, so the distro's logging is off.

Anything missing (the connection string, the package, which the local
environment cannot install beside vLLM's OpenTelemetry pins) is one warning
and no export, never a failed start: `/metrics` still serves everything.
Neither the connection string nor an error's text is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("spotgate.azure")

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"

Credential = Any
"""An azure.core TokenCredential (sync: the exporters run in their own threads)."""


def aad_client_id(authentication: str | None) -> str | None:
    """The ClientId of an `Authorization=AAD;ClientId=...` string, if it names one."""
    fields = dict(part.split("=", 1) for part in (authentication or "").split(";") if "=" in part)
    if fields.get("Authorization", "").strip().upper() != "AAD":
        return None
    return fields.get("ClientId", "").strip() or None


def managed_identity(client_id: str | None) -> Credential:
    if client_id:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def export_to_app_insights(
    env: Mapping[str, str] | None = None,
    credential_for: Callable[[str | None], Credential] = managed_identity,
) -> bool:
    """Configures the export when the app has a connection string; True when it is on."""
    env = os.environ if env is None else env
    connection_string = env.get(CONNECTION_STRING, "").strip()
    if not connection_string:
        log.warning(
            "%s is not set: metrics and traces are served on /metrics only, "
            "not exported to Application Insights",
            CONNECTION_STRING,
        )
        return False
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError:
        log.warning(
            "azure-monitor-opentelemetry is not installed: metrics and traces are served on "
            "/metrics only, not exported to Application Insights"
        )
        return False
    client_id = aad_client_id(env.get(AUTHENTICATION_STRING))
    try:
        configure_azure_monitor(
            connection_string=connection_string,
            credential=credential_for(client_id),
            disable_logging=True,
        )
    except Exception as exc:  # its message may quote the connection string
        log.warning(
            "exporting to Application Insights could not be set up (%s): metrics and traces "
            "are served on /metrics only",
            type(exc).__name__,
        )
        return False
    log.info(
        "exporting metrics and traces to Application Insights with %s",
        f"managed identity {client_id}" if client_id else "DefaultAzureCredential",
    )
    return True
