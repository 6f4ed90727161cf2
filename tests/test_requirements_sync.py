"""functions/requirements.txt (what Azure installs) must agree with pyproject.toml."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _names(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        found[requirement.name.lower()] = str(requirement.specifier)
    return found


def test_deploy_requirements_match_pyproject_runtime_and_azure_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    expected = _names(project["dependencies"] + extras["azure"] + extras["azure-monitor"])
    deployed = _names((ROOT / "functions" / "requirements.txt").read_text().splitlines())
    assert deployed == expected
