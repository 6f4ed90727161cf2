"""The operators' alerts (bicep/modules/alerts.bicep) and workbook (workbook.bicep + workbook.json).

Checked offline, with test_bicep.py's readers (pycep's JSON): every alert is
still there, its threshold and window are parameters (with a default and a
description), it says what to do, the action group emails when `alertEmail`
is set, the workbook is deployed by `azd up` and its JSON holds the panels,
and every KQL query names only metrics and labels the telemetry exports (a
typo in a metric name makes an alert that never fires, silently).

What no offline check can tell: that Azure accepts each rule (it validates
the KQL when the rule is created) and that the metrics reach `customMetrics`
under these names (README.md, Operations, says how the queries read them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.test_bicep import (
    BICEP,
    MODULES,
    PARAMETERS,
    REPO,
    body,
    condition,
    doc,
    param_default,
    render,
    resources,
    strings,
    variable,
)

ALERTS = "modules/alerts.bicep"
WORKBOOK = "modules/workbook.bicep"
MONITORING = "modules/monitoring.bicep"
WORKBOOK_JSON = MODULES / "workbook.json"
README = REPO / "README.md"

# The telemetry's metric names, as they arrive in Application Insights' customMetrics.
KNOWN_METRICS = {
    "spotgate_requests_total",
    "spotgate_request_duration_seconds",
    "spotgate_ttft_seconds",
    "spotgate_tokens_total",
    "spotgate_cache_requests_total",
    "spotgate_admission_queue_depth",
    "spotgate_admission_wait_seconds",
    "spotgate_spillover_total",
    "spotgate_breaker_open",
    "spotgate_pool_workers",
    "spotgate_evictions_total",
    "spotgate_eviction_notice_to_replacement_seconds",
    "spotgate_provisioning_seconds",
    "spotgate_scaling_decisions_total",
    "spotgate_monitor_ticks_total",
    # read by the fleet monitor's pool-load query (adapters/azure/monitor_signals.py)
    "spotgate_gateway_in_flight",
}
# Their labels (customDimensions keys); `target` is the spillover endpoint's name.
KNOWN_LABELS = {
    "model",
    "status",
    "cache",
    "worker",
    "direction",
    "result",
    "pool",
    "priority",
    "zone",
    "state",
    "action",
    "outcome",
    "target",
}
METRIC_NAME = re.compile(r"\bspotgate_[a-z0-9_]+")
LABEL = re.compile(r"customDimensions\.(\w+)|customDimensions\[['\"](\w+)['\"]\]")
PLACEHOLDER = re.compile(r"__[A-Z][A-Z0-9_]*__")

# Each log alert, and a metric (or table) its query must read.
LOG_ALERTS = {
    "failure-rate": "spotgate_requests_total",
    "latency-p95": "traces",
    "ttft-p95": "traces",
    "no-ready-worker": "spotgate_pool_workers",
    "eviction-burst": "spotgate_evictions_total",
    "monitor-stalled": "spotgate_monitor_ticks_total",
    "monitor-failing": "spotgate_monitor_ticks_total",
    "error-logs": "traces",
}
METRIC_ALERTS = {"cosmos-throttling"}
POOL_ALERTS = {"no-ready-worker", "eviction-burst", "monitor-stalled", "monitor-failing"}

# Workbook panels (item names) and what each must query.
PANELS = {
    # requests
    "requests-by-status": "spotgate_requests_total",
    "failure-rate": "spotgate_requests_total",
    "latency-percentiles": "duration_ms",
    "ttft-percentiles": "ttft_ms",
    "latency-by-model": "spotgate_request_duration_seconds",
    "tokens": "spotgate_tokens_total",
    "cache-hit-rate": "spotgate_cache_requests_total",
    "queue-depth": "spotgate_admission_queue_depth",
    "admission-wait": "spotgate_admission_wait_seconds",
    "spillover": "spotgate_spillover_total",
    "breakers": "spotgate_breaker_open",
    # fleet
    "workers-by-state": "spotgate_pool_workers",
    "evictions": "spotgate_evictions_total",
    "scaling-decisions": "spotgate_scaling_decisions_total",
    "provisioning-time": "spotgate_provisioning_seconds",
    "monitor-ticks": "spotgate_monitor_ticks_total",
    # logs
    "requests-lookup": "request_id",
    "error-logs": "severityLevel >= 3",
}

OPERATIONS_HEADING = "## Operations: where to look, what each alert means"


# --- reading the alerts ---


def _log_alerts() -> dict[str, dict[str, Any]]:
    rules = variable(ALERTS, "logAlerts")
    names = [r["name"] for r in rules]
    assert len(names) == len(set(names)), "an alert is declared twice"
    return {r["name"]: r for r in rules}


def _query(rule: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """The KQL text of a rule's query variable and its (placeholder, value) replacements."""
    node: Any = rule["query"]
    variables = doc(ALERTS)["variables"]
    pairs: list[tuple[str, Any]] = []
    while True:
        if isinstance(node, str) and node in variables:
            node = variables[node]["value"]
            continue
        function = node.get("function", {}) if isinstance(node, dict) else {}
        if function.get("type") == "replace":
            params = function["parameters"]
            pairs.append((params["old_string"], params["new_string"]))
            node = params["original_string"]
            continue
        assert isinstance(node, str), f"{rule['name']}: not a KQL string: {render(node)}"
        return node, pairs


def _param(relative: str, name: str) -> dict[str, Any]:
    params: dict[str, Any] = doc(relative)["parameters"]
    assert name in params, f"{relative}: {name!r} is not a parameter"
    return dict(params[name])


def _decorator(param: dict[str, Any], kind: str) -> Any:
    found = [d["argument"] for d in param["decorators"] if d["type"] == kind]
    return found[0] if found else None


def _log_alert_resource() -> dict[str, Any]:
    found = resources(ALERTS, "Microsoft.Insights/scheduledQueryRules")
    assert len(found) == 1, "one looped declaration over logAlerts"
    resource = next(iter(found.values()))
    assert resource["config"]["loop_type"]["detail"]["array_name"] == "logAlerts"
    return resource


def _metric_alert() -> dict[str, Any]:
    found = resources(ALERTS, "Microsoft.Insights/metricAlerts")
    assert len(found) == 1
    return body(next(iter(found.values())))


def _metrics_in(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def _labels_in(text: str) -> set[str]:
    return {a or b for a, b in LABEL.findall(text)}


# --- deployed by azd up ---


def test_main_deploys_the_alerts_module_with_the_names_it_needs() -> None:
    module = doc("main.bicep")["modules"]["alerts"]
    assert module["detail"]["path"] == "modules/alerts.bicep"
    assert module["config"]["scope"] == "rg"
    params = module["config"]["params"]
    assert render(params["appInsightsName"]) == "monitoring.outputs.appInsightsName"
    assert render(params["cosmosAccountName"]) == "cosmos.outputs.accountName"
    assert params["pools"] == ["pool"]
    assert params["alertEmail"] == "alertEmail"
    assert param_default("main.bicep", "alertEmail") == ""
    supplied = json.loads(PARAMETERS.read_text())["parameters"]
    assert supplied["alertEmail"]["value"] == "${SPOTGATE_ALERT_EMAIL}"
    # the names resolve to what those modules really output
    assert "accountName" in doc("modules/cosmos.bicep")["outputs"]
    assert "appInsightsName" in doc(MONITORING)["outputs"]


def test_the_alerts_read_the_deployed_app_insights_and_cosmos_account() -> None:
    existing = {
        body(r)["name"]: r["type"] for r in doc(ALERTS)["resources"].values() if r["existing"]
    }
    assert existing == {
        "appInsightsName": "Microsoft.Insights/components",
        "cosmosAccountName": "Microsoft.DocumentDB/databaseAccounts",
    }


# --- every alert is there ---


def test_every_alert_is_still_there() -> None:
    assert set(_log_alerts()) == set(LOG_ALERTS)
    _log_alert_resource()
    metric = _metric_alert()
    assert metric["name"] == "${namePrefix}-cosmos-throttling"
    assert {m.removeprefix("${namePrefix}-") for m in [metric["name"]]} == METRIC_ALERTS


def test_log_alerts_are_log_search_rules_on_app_insights() -> None:
    b = body(_log_alert_resource())
    assert b["name"] == "${namePrefix}-${rule.name}"
    assert b["kind"] == "LogAlert"
    props = b["properties"]
    assert [render(s) for s in props["scopes"]] == ["appInsights.id"]
    assert props["enabled"] == "alertsEnabled"
    assert props["windowSize"] == "PT${rule.windowMinutes}M"
    assert props["evaluationFrequency"] == "PT5M"
    assert props["actions"] == {"actionGroups": "actionGroupIds"}
    [criterion] = props["criteria"]["allOf"]
    assert {k: render(v) for k, v in criterion.items() if k != "failingPeriods"} == {
        "query": "rule.query",
        "timeAggregation": "Maximum",
        "metricMeasureColumn": "rule.measure",
        "operator": "rule.operator",
        "threshold": "rule.threshold",
        "dimensions": "rule.dimensions",
    }
    for rule in _log_alerts().values():
        assert rule["operator"] in {"GreaterThan", "GreaterThanOrEqual", "LessThan"}
        assert rule["severity"] in range(5)
        expected = "byPool" if rule["name"] in POOL_ALERTS else []
        assert rule["dimensions"] == expected, rule["name"]
    by_pool = variable(ALERTS, "byPool")
    assert by_pool == [{"name": "pool", "operator": "Include", "values": ["*"]}]


# --- thresholds: parameters, never literals ---


def _threshold_params() -> dict[str, tuple[str, str]]:
    """alert -> (threshold parameter, window parameter)."""
    found = {
        name: (rule["threshold"], rule["windowMinutes"]) for name, rule in _log_alerts().items()
    }
    metric = _metric_alert()
    [criterion] = metric["properties"]["criteria"]["allOf"]
    window = re.fullmatch(r"PT\$\{(\w+)\}M", metric["properties"]["windowSize"])
    assert window, metric["properties"]["windowSize"]
    found["cosmos-throttling"] = (criterion["threshold"], window.group(1))
    return found


def test_thresholds_and_windows_are_parameters_with_defaults_and_descriptions() -> None:
    found = _threshold_params()
    assert set(found) == set(LOG_ALERTS) | METRIC_ALERTS
    for alert, (threshold, window) in found.items():
        for name in (threshold, window):
            assert isinstance(name, str), f"{alert}: {name!r} is hard-coded, not a parameter"
            param = _param(ALERTS, name)
            assert param["type"] == "int", f"{alert}: {name}"
            assert isinstance(param["default"], int) and param["default"] > 0, f"{alert}: {name}"
            assert _decorator(param, "description"), f"{alert}: {name} has no @description"
        allowed = _decorator(_param(ALERTS, window), "allowed")
        assert allowed and _param(ALERTS, window)["default"] in allowed, f"{alert}: {window}"
        assert min(allowed) >= 5, "log and metric alert windows start at 5 minutes"
    assert len({t for t, _ in found.values()}) == len(found), "one threshold per alert"


def test_queries_hold_no_threshold_only_filled_placeholders() -> None:
    for name, rule in _log_alerts().items():
        text, pairs = _query(rule)
        for old, new in pairs:
            assert PLACEHOLDER.fullmatch(old), f"{name}: {old!r}"
            inner = render(new)
            match = re.fullmatch(r"string\((\w+)\)", inner)
            assert match, f"{name}: {old} is filled with {inner}, not string(<parameter>)"
            _param(ALERTS, match.group(1))
        assert set(PLACEHOLDER.findall(text)) == {old for old, _ in pairs}, name
        filled = text
        for old, _ in pairs:
            filled = filled.replace(old, "1")
        assert not PLACEHOLDER.search(filled), name


# --- the action group ---


def test_the_action_group_emails_whenever_alert_email_is_set() -> None:
    found = resources(ALERTS, "Microsoft.Insights/actionGroups")
    assert len(found) == 1
    group = next(iter(found.values()))
    assert condition(group) == "notify"
    assert render(variable(ALERTS, "notify")) == "not(empty(alertEmails))"
    emails = variable(ALERTS, "alertEmails")
    assert emails["function"]["type"] == "filter"
    assert "alertEmail" in strings(emails), "derived from the alertEmail parameter"
    b = body(group)
    assert b["location"] == "global"
    assert len(b["properties"]["groupShortName"]) <= 12
    assert b["properties"]["enabled"] is True
    receivers = b["properties"]["emailReceivers"]
    loop = receivers["loop_type"]["detail"]
    assert loop["array_name"] == "alertEmails", "one email receiver per address given"
    assert receivers["config"]["emailAddress"] == loop["item_name"]
    assert receivers["config"]["useCommonAlertSchema"] is True
    # every rule notifies it when it exists, and nobody when it does not
    ids = variable(ALERTS, "actionGroupIds")["operator"]
    assert ids["type"] == "conditional" and ids["operands"]["condition"] == "notify"
    assert [render(v) for v in ids["operands"]["true_value"]] == ["actionGroup.id"]
    assert ids["operands"]["false_value"] == []
    actions = _metric_alert()["properties"]["actions"]["operator"]["operands"]
    assert actions["condition"] == "notify"
    assert [render(a["actionGroupId"]) for a in actions["true_value"]] == ["actionGroup.id"]
    alert_email = _param(ALERTS, "alertEmail")
    assert alert_email["default"] == "" and "Empty" in _decorator(alert_email, "description")


def test_an_empty_alert_email_still_creates_the_rules() -> None:
    """Decided: rules always exist (they fire in the portal); only the action group is optional."""
    assert condition(_log_alert_resource()) is None
    metric = next(iter(resources(ALERTS, "Microsoft.Insights/metricAlerts").values()))
    assert condition(metric) is None
    assert condition(doc("main.bicep")["modules"]["alerts"]) is None


# --- Cosmos DB throttling ---


def test_cosmos_throttling_is_a_metric_alert_on_429s_of_the_account() -> None:
    alert = _metric_alert()
    assert alert["location"] == "global"
    props = alert["properties"]
    assert [render(s) for s in props["scopes"]] == ["cosmosAccount.id"]
    assert props["enabled"] == "alertsEnabled"
    criteria = props["criteria"]
    single_resource = "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
    assert criteria["'odata.type'"] == single_resource
    [criterion] = criteria["allOf"]
    assert criterion["criterionType"] == "StaticThresholdCriterion"
    assert criterion["metricNamespace"] == "Microsoft.DocumentDB/databaseAccounts"
    assert criterion["metricName"] == "TotalRequests"
    assert criterion["timeAggregation"] == "Count"
    assert criterion["dimensions"] == [
        {"name": "StatusCode", "operator": "Include", "values": ["429"]}
    ]
    cosmos = resources(ALERTS, "Microsoft.DocumentDB/databaseAccounts")
    assert [body(r)["name"] for r in cosmos.values()] == ["cosmosAccountName"]


# --- descriptions say what to do ---


def _descriptions() -> dict[str, str]:
    found = {name: rule["description"] for name, rule in _log_alerts().items()}
    found["cosmos-throttling"] = _metric_alert()["properties"]["description"]
    return found


def test_every_alert_description_says_what_it_means_and_what_to_do() -> None:
    thresholds = _threshold_params()
    for alert, description in _descriptions().items():
        assert isinstance(description, str), alert
        meaning, _, todo = description.partition("What to do:")
        assert len(meaning.strip()) >= 40, f"{alert}: say what it means first"
        assert len(todo.strip()) >= 80, f"{alert}: the description must say what to do"
        assert "README" in todo or "${runbook}" in todo, f"{alert}: point at the runbook"
        threshold, window = thresholds[alert]
        assert f"${{{threshold}}}" in meaning, f"{alert}: name the threshold in force"
        assert f"${{{window}}}" in meaning, f"{alert}: name the window"
    assert "Operations" in variable(ALERTS, "runbook")


# --- KQL: only metric names and labels the telemetry exports ---


def test_alert_queries_reference_only_known_metrics_and_labels() -> None:
    for name, rule in _log_alerts().items():
        text, _ = _query(rule)
        assert _metrics_in(text) <= KNOWN_METRICS, f"{name}: {_metrics_in(text) - KNOWN_METRICS}"
        assert _labels_in(text) <= KNOWN_LABELS, f"{name}: {_labels_in(text) - KNOWN_LABELS}"
        assert LOG_ALERTS[name] in text, f"{name} must read {LOG_ALERTS[name]}"
        assert re.search(rf"\b{rule['measure']}\b", text), f"{name}: no {rule['measure']} column"
        if name in POOL_ALERTS:
            assert re.search(r"\bpool\b", text.strip().splitlines()[-1]) or "by pool" in text
    # descriptions and comments too: a typo anywhere in the file is caught
    text = (BICEP / ALERTS).read_text()
    assert _metrics_in(text) <= KNOWN_METRICS, _metrics_in(text) - KNOWN_METRICS


def test_alert_queries_are_balanced() -> None:
    """No KQL parser offline: at least brackets and quotes must pair up."""
    for name, rule in _log_alerts().items():
        text, _ = _query(rule)
        for opening, closing in ("()", "[]"):
            assert text.count(opening) == text.count(closing), f"{name}: {opening}{closing}"
        assert text.count("'") % 2 == 0, f"{name}: an unclosed string"
        assert text.strip().split("\n")[0].split()[0] in {"customMetrics", "traces", "let"}


def test_the_monitor_stalled_alert_covers_every_configured_pool() -> None:
    text, pairs = _query(_log_alerts()["monitor-stalled"])
    assert render(dict(pairs)["__POOLS__"]) == "string(pools)"
    assert "dynamic(__POOLS__)" in text and "kind=leftouter" in text
    assert _param(ALERTS, "pools")["default"] == ["default"]


def test_metric_names_match_the_fleet_monitors_load_query() -> None:
    signals = pytest.importorskip("spotgate.adapters.azure.monitor_signals")
    assert {signals.QUEUE_METRIC, signals.IN_FLIGHT_METRIC} <= KNOWN_METRICS
    text, _ = _query(_log_alerts()["no-ready-worker"])
    assert signals.QUEUE_METRIC in text


def _host_log_level(category: str) -> str:
    """The level host.json gives a log category: its longest configured prefix, else default."""
    logging = json.loads((REPO / "functions" / "host.json").read_text())["logging"]
    levels: dict[str, str] = logging.get("logLevel", {})
    prefixes = [k for k in levels if k != "default" and (category + ".").startswith(k + ".")]
    if prefixes:
        return levels[max(prefixes, key=len)]
    return levels.get("default", "Information")


def test_the_access_lines_the_latency_alerts_read_reach_app_insights() -> None:
    """The P95 alerts read the gateway's INFO access lines: host.json must keep them."""
    azure_host = pytest.importorskip("spotgate.hosts.azure")
    category = f"Function.{azure_host.HTTP_FUNCTION_NAME}.User"
    assert _host_log_level(category) in {"Trace", "Debug", "Information"}, category
    for name in ("latency-p95", "ttft-p95"):
        text, _ = _query(_log_alerts()[name])
        assert '"event":"request"' in text, "the access line's marker (telemetry/access_log.py)"


# --- the workbook ---


def _workbook() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(WORKBOOK_JSON.read_text())
    return parsed


def _items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for item in items:
        found.append(item)
        found.extend(_items(item.get("content", {}).get("items", [])))
    return found


def _queries() -> dict[str, dict[str, Any]]:
    found = {}
    for item in _items(_workbook()["items"]):
        if item["type"] == 3:
            assert item["name"] not in found, f"two panels named {item['name']}"
            found[item["name"]] = item["content"]
    return found


def _workbook_parameters() -> set[str]:
    names = set()
    for item in _items(_workbook()["items"]):
        if item["type"] == 9:
            names |= {p["name"] for p in item["content"]["parameters"]}
    return names


def test_the_workbook_is_deployed_by_azd_up_through_the_monitoring_module() -> None:
    main_modules = doc("main.bicep")["modules"]
    assert main_modules["monitoring"]["detail"]["path"] == "modules/monitoring.bicep"
    modules = doc(MONITORING)["modules"].values()
    [module] = [m for m in modules if m["detail"]["path"] == "workbook.bicep"]
    params = module["config"]["params"]
    assert render(params["appInsightsId"]) == "appInsights.id"
    assert params["location"] == "location"
    assert (MODULES / "workbook.bicep").is_file()


def test_the_workbook_resource_loads_the_json_template() -> None:
    found = resources(WORKBOOK, "Microsoft.Insights/workbooks")
    assert len(found) == 1
    workbook = body(next(iter(found.values())))
    assert workbook["kind"] == "shared"
    assert workbook["name"]["function"]["type"] == "guid", "a workbook's name is a GUID"
    props = workbook["properties"]
    assert props["category"] == "workbook"
    assert props["displayName"] == "displayName"
    assert render(props["sourceId"]) == "to_lower(appInsightsId)"
    data = variable(WORKBOOK, props["serializedData"])["function"]
    assert data["type"] == "replace"
    loaded = data["parameters"]["original_string"]["function"]
    assert loaded["type"] == "load_text_content"
    assert (MODULES / loaded["parameters"]["file_path"]).resolve() == WORKBOOK_JSON
    assert data["parameters"]["old_string"] == "__APP_INSIGHTS_ID__"
    assert data["parameters"]["new_string"] == "appInsightsId"
    display_name = param_default(MONITORING, "workbookDisplayName")
    assert param_default(WORKBOOK, "displayName") == display_name


def test_the_workbook_json_is_valid_and_fits_load_text_content() -> None:
    text = WORKBOOK_JSON.read_text()
    assert len(text) < 131072, "loadTextContent's limit"
    workbook = _workbook()
    assert workbook["version"] == "Notebook/1.0"
    assert set(PLACEHOLDER.findall(text)) == {"__APP_INSIGHTS_ID__"}
    assert workbook["fallbackResourceIds"] == ["__APP_INSIGHTS_ID__"]
    names = [item["name"] for item in _items(workbook["items"])]
    assert len(names) == len(set(names)), "item names are unique"
    assert {"TimeRange", "AppInsights", "RequestId"} <= _workbook_parameters()


def test_the_workbook_has_the_fleet_and_request_panels() -> None:
    queries = _queries()
    missing = set(PANELS) - set(queries)
    assert not missing, f"panels removed: {sorted(missing)}"
    for name, needle in PANELS.items():
        assert needle in queries[name]["query"], f"{name} must query {needle}"
        assert queries[name].get("title"), name
    groups = {i["content"].get("title") for i in _workbook()["items"] if i["type"] == 12}
    assert {"Requests", "Fleet", "Logs"} <= groups


def test_workbook_queries_reference_only_known_metrics_labels_and_parameters() -> None:
    defined = _workbook_parameters()
    for name, content in _queries().items():
        text = content["query"]
        assert _metrics_in(text) <= KNOWN_METRICS, f"{name}: {_metrics_in(text) - KNOWN_METRICS}"
        assert _labels_in(text) <= KNOWN_LABELS, f"{name}: {_labels_in(text) - KNOWN_LABELS}"
        used = set(re.findall(r"\{(\w+)(?::\w+)?\}", text))
        assert used <= defined, f"{name}: undefined workbook parameters {used - defined}"
        assert content["crossComponentResources"] == ["{AppInsights}"], name
        assert content["timeContextFromParameter"] == "TimeRange", name
        assert content["queryType"] == 0, name
        assert content["resourceType"] == "microsoft.insights/components", name
        for opening, closing in ("()", "[]"):
            assert text.count(opening) == text.count(closing), f"{name}: {opening}{closing}"
    text = WORKBOOK_JSON.read_text()
    assert _metrics_in(text) <= KNOWN_METRICS, _metrics_in(text) - KNOWN_METRICS


def test_every_exported_metric_is_on_the_workbook() -> None:
    used = _metrics_in(" ".join(c["query"] for c in _queries().values()))
    assert used == KNOWN_METRICS, f"no panel for {sorted(KNOWN_METRICS - used)}"


# --- the runbook ---


def _operations_section() -> str:
    text = README.read_text()
    assert OPERATIONS_HEADING in text
    start = text.index(OPERATIONS_HEADING)
    assert start < text.index("## Security: who may do what")
    end = text.index("\n## ", start)
    return text[start:end]


def test_the_readme_explains_every_alert_and_where_to_look() -> None:
    section = _operations_section()
    for alert in set(LOG_ALERTS) | METRIC_ALERTS:
        assert f"`{alert}`" in section, f"README Operations: no row for {alert}"
    display_name = param_default(MONITORING, "workbookDisplayName")
    for where in (display_name, "/metrics", "/health/ready", "request_id", "alertEmail"):
        assert where in section, where


def test_readme_metric_names_are_known() -> None:
    section = _operations_section()
    assert _metrics_in(section) <= KNOWN_METRICS, _metrics_in(section) - KNOWN_METRICS


@pytest.mark.parametrize("path", [MODULES / "alerts.bicep", MODULES / "workbook.bicep"])
def test_no_key_or_connection_string_is_used(path: Path) -> None:
    text = path.read_text().lower()
    for word in ("listkeys", "instrumentationkey", "connectionstring", "apikey"):
        assert word not in text, f"{path.name}: {word}"
