"""The Functions app indexes the HTTP API (on HTTP streams), the orchestrator and the watchdog."""

import importlib.util
import json
import sys
import typing
from pathlib import Path

import pytest
from azurefunctions.extensions.base import (
    HttpV2FeatureChecker,
    RequestTrackerMeta,
    ResponseTrackerMeta,
)

ROOT = Path(__file__).resolve().parents[1]
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


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


def test_function_app_indexes_exactly_the_expected_functions(function_app) -> None:
    functions = {f.get_function_name(): f for f in function_app.get_functions()}
    bindings = {
        name: {b["type"]: b for b in f.get_bindings_dict()["bindings"]}
        for name, f in functions.items()
    }
    expected_types = {
        "http_app_func": {"httpTrigger", "http", "durableClient"},
        "fleet_monitor": {"orchestrationTrigger"},
        "observe_pool": {"activityTrigger"},
        "provision_workers": {"activityTrigger"},
        "drain_workers": {"activityTrigger"},
        "delete_workers": {"activityTrigger"},
        "record_decision": {"activityTrigger"},
        "batch_job": {"orchestrationTrigger"},
        "prepare_batch": {"activityTrigger"},
        "enqueue_lines": {"activityTrigger"},
        "batch_progress": {"activityTrigger"},
        "finalise_batch": {"activityTrigger"},
        "fail_batch": {"activityTrigger"},
        "fleet_watchdog": {"timerTrigger", "durableClient"},
    }
    assert {name: set(types) for name, types in bindings.items()} == expected_types

    # One HTTP function, and it catches every path and method: nothing else is routed.
    http = json.loads(functions["http_app_func"].get_function_json())
    trigger = next(b for b in http["bindings"] if b["type"] == "httpTrigger")
    assert trigger["route"] == "{*path}"
    assert {str(m) for m in trigger["methods"]} == HTTP_METHODS
    assert trigger["authLevel"] == "ANONYMOUS"
    assert [f for f in functions.values() if f.is_http_function()] == [functions["http_app_func"]]
    assert bindings["fleet_watchdog"]["timerTrigger"]["runOnStartup"] is True


def test_the_http_function_uses_the_http_streams_types(function_app) -> None:
    """The checks the Python worker makes when HTTP streams are on (bindings/meta.py)."""
    [http] = [f for f in function_app.get_functions() if f.is_http_function()]
    assert HttpV2FeatureChecker.http_v2_enabled()  # the extension was imported while indexing
    hints = typing.get_type_hints(http.get_user_function())
    assert RequestTrackerMeta.check_type(hints["req"])
    assert ResponseTrackerMeta.check_type(hints["return"])
    # the durable client binding arrives as the JSON string the host sends
    assert set(hints) == {"req", "return", "client"} and hints["client"] is str


def test_host_json_serves_the_api_at_the_root() -> None:
    host = json.loads((ROOT / "functions/host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""
