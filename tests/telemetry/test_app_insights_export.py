"""Turning on the export to Application Insights, as the Function app does at start.

The Azure Monitor distro cannot be installed beside vLLM's OpenTelemetry pins,
so it is absent here, as it would be in a broken deployment; where it is
present, a stand-in module records how `configure_azure_monitor` was called
(the keywords of azure-monitor-opentelemetry 1.x).
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from spotgate.adapters.azure.app_insights import (
    AUTHENTICATION_STRING,
    CONNECTION_STRING,
    export_to_app_insights,
)

IKEY = "0b8f6c4e-1111-2222-3333-444455556666"
CONNECTION = (
    f"InstrumentationKey={IKEY};IngestionEndpoint=https://westeurope-5.in.applicationinsights"
    ".azure.com/;LiveEndpoint=https://westeurope.livediagnostics.monitor.azure.com/"
)
CLIENT_ID = "9d3c0a4b-aaaa-bbbb-cccc-ddddeeeeffff"
DISTRO = "azure.monitor.opentelemetry"


@pytest.fixture
def distro(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A stand-in `azure.monitor.opentelemetry`; returns the calls it received."""
    calls: list[dict[str, Any]] = []
    module = types.ModuleType(DISTRO)

    def configure_azure_monitor(**kwargs: Any) -> None:
        calls.append(kwargs)

    module.configure_azure_monitor = configure_azure_monitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, DISTRO, module)
    return calls


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_without_the_distro_it_warns_and_the_app_still_starts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, DISTRO, None)  # importing it raises ImportError
    caplog.set_level(logging.INFO)
    assert export_to_app_insights({CONNECTION_STRING: CONNECTION}) is False
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "azure-monitor-opentelemetry is not installed" in warning.getMessage()
    assert IKEY not in logged(caplog)


def test_without_a_connection_string_nothing_is_configured(
    distro: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert export_to_app_insights({}) is False
    assert distro == []
    assert CONNECTION_STRING in logged(caplog)


def test_exports_with_the_managed_identity_the_authentication_string_names(
    distro: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    aad = f"Authorization=AAD;ClientId={CLIENT_ID}"
    env = {CONNECTION_STRING: CONNECTION, AUTHENTICATION_STRING: aad}
    assert export_to_app_insights(env) is True
    [call] = distro
    assert call["connection_string"] == CONNECTION
    credential = call["credential"]
    assert isinstance(credential, ManagedIdentityCredential)
    # the host already ships every log line to `traces`; a second copy would double the alerts
    assert call["disable_logging"] is True
    assert IKEY not in logged(caplog)
    assert "Application Insights" in logged(caplog)
    identities: list[str | None] = []
    export_to_app_insights(env, credential_for=lambda client_id: identities.append(client_id))
    assert identities == [CLIENT_ID]


def test_without_an_aad_authentication_string_the_default_credential_signs(
    distro: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONNECTION_STRING, CONNECTION)
    monkeypatch.delenv(AUTHENTICATION_STRING, raising=False)
    assert export_to_app_insights() is True
    [call] = distro
    assert call["connection_string"] == CONNECTION
    assert isinstance(call["credential"], DefaultAzureCredential)


def test_a_configuration_error_is_one_warning_without_its_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = types.ModuleType(DISTRO)

    def configure_azure_monitor(**kwargs: Any) -> None:
        raise ValueError(f"Invalid connection string: {kwargs['connection_string']}")

    module.configure_azure_monitor = configure_azure_monitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, DISTRO, module)
    caplog.set_level(logging.DEBUG)
    assert export_to_app_insights({CONNECTION_STRING: CONNECTION}) is False
    assert "ValueError" in logged(caplog)
    assert IKEY not in logged(caplog)
