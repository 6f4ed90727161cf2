"""The Functions app indexes the HTTP API, the orchestrator, its activities and the watchdog."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def function_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SPOTGATE_DATA_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location(
        "function_app", ROOT / "functions/function_app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module.app
    sys.modules.pop("function_app", None)


def test_function_app_indexes_every_trigger(function_app) -> None:
    triggers = {}
    for function in function_app.get_functions():
        binding_types = {b.type for b in function.get_bindings()}
        triggers[function.get_function_name()] = binding_types
    assert "orchestrationTrigger" in triggers["fleet_monitor"]
    assert "activityTrigger" in triggers["observe_pool"]
    assert "activityTrigger" in triggers["record_decision"]
    assert {"timerTrigger", "durableClient"} <= triggers["fleet_watchdog"]
    assert any("httpTrigger" in types for types in triggers.values())
