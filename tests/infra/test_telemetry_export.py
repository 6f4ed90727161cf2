"""What the deployment must provide for metrics and traces to reach Application Insights.

Checked offline with test_bicep.py's readers: the Function app signs its
telemetry with its managed identity (the component takes no key), in the
form the app's exporter setup reads (adapters/azure/app_insights.py); custom
metrics keep their dimensions, which the fleet monitor's pool-load query
filters on; and the exporter is among what Azure installs, though not in the
local environment, whose vLLM build pins another OpenTelemetry SDK.

What no offline check can tell: that Azure Monitor accepts the identity's
token (the role assignment, test_bicep.py's REQUIRED_GRANTS) and that the
metrics arrive, one to three minutes later, under their names.
"""

from __future__ import annotations

import inspect
import tomllib

from spotgate.adapters.azure.app_insights import (
    AUTHENTICATION_STRING,
    CONNECTION_STRING,
    aad_client_id,
)
from spotgate.adapters.azure.monitor_signals import APP_INSIGHTS_NAMESPACE, MonitorSignals
from tests.infra.test_bicep import REPO, _app_settings, only, render

MONITORING = "modules/monitoring.bicep"
DISTRO = "azure-monitor-opentelemetry"


def test_custom_metrics_keep_the_dimension_the_pool_load_query_filters_on() -> None:
    """Without the opt-in, Azure Monitor stores custom metrics without dimensions, and the
    fleet monitor's `pool eq '<pool>'` filter on them matches nothing: every pool reads idle."""
    insights = only(MONITORING, "Microsoft.Insights/components")
    assert insights["properties"]["CustomMetricsOptedInType"] == "WithDimensions"
    assert insights["properties"]["DisableLocalAuth"] is True
    signals = inspect.signature(MonitorSignals).parameters
    assert signals["metric_namespace"].default == APP_INSIGHTS_NAMESPACE
    assert signals["pool_dimension"].default == "pool"


def test_the_app_exports_with_the_identity_its_settings_name() -> None:
    settings = _app_settings()
    assert render(settings[CONNECTION_STRING]) == "appInsights.properties.ConnectionString"
    client_id = aad_client_id(settings[AUTHENTICATION_STRING])
    # the exporter signs with the same user-assigned identity DefaultAzureCredential picks
    assert client_id == "${" + render(settings["AZURE_CLIENT_ID"]) + "}"
    assert client_id == "${identity.properties.clientId}"


def test_azure_installs_the_exporter_the_local_environment_leaves_out() -> None:
    deployed = (REPO / "functions" / "requirements.txt").read_text().splitlines()
    assert any(line.startswith(DISTRO) for line in deployed)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(r.startswith(DISTRO) for r in extras["azure-monitor"])
    installed_by_make = project["dependencies"] + extras["azure"] + extras["vllm-cpu"]
    installed_by_make += extras["dev"]
    assert not any(r.startswith(DISTRO) for r in installed_by_make)
    makefile = (REPO / "Makefile").read_text()
    assert "azure-monitor" not in makefile
