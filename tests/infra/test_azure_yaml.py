"""azure.yaml: what `azd up` provisions (bicep/) and deploys (functions/ as service "api")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def azure_yaml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "azure.yaml").read_text())
    return data


def test_names_the_project(azure_yaml: dict[str, Any]) -> None:
    assert azure_yaml["name"] == "spotgate"


def test_api_service_is_the_python_function_app(azure_yaml: dict[str, Any]) -> None:
    api = azure_yaml["services"]["api"]
    assert api["project"] == "./functions"
    assert api["language"] == "python"
    assert api["host"] == "function"
    assert set(azure_yaml["services"]) == {"api"}


def test_infra_is_the_bicep_folder(azure_yaml: dict[str, Any]) -> None:
    infra = azure_yaml["infra"]
    assert infra["provider"] == "bicep"
    assert infra["path"] == "bicep"
    module = infra.get("module", "main")
    assert (REPO / infra["path"] / f"{module}.bicep").is_file()
    assert (REPO / infra["path"] / f"{module}.parameters.json").is_file()


def test_the_project_folder_is_a_functions_app(azure_yaml: dict[str, Any]) -> None:
    project = REPO / azure_yaml["services"]["api"]["project"]
    assert project.is_dir()
    for name in ("function_app.py", "host.json", "requirements.txt"):
        assert (project / name).is_file(), name


def test_the_site_carries_the_tag_azd_deploys_to() -> None:
    """azd finds the service's resource by tag azd-service-name=<service>."""
    text = (REPO / "bicep" / "modules" / "functions.bicep").read_text()
    assert "'azd-service-name': 'api'" in text
