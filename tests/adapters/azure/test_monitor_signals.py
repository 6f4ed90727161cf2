"""MonitorSignals through the real Azure Monitor SDK clients, answered by recorded response shapes.

The shapes follow what the SDKs deserialise (azure-monitor-querymetrics
`MetricsQueryResult._from_generated`, azure-monitor-query `LogsTable`):
the metrics batch API's `{"values": [...]}` and Log Analytics' `{"tables": [...]}`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from spotgate.adapters.azure.monitor_signals import (
    EVICTION_OPERATIONS,
    IN_FLIGHT_METRIC,
    QUEUE_METRIC,
    GatewayLoad,
    MonitorSignals,
    ScaleSetZones,
    eviction_query,
    kql_string,
)
from spotgate.fleet.signals import EvictionSignal
from tests.adapters.azure.monitor_transport import FakeAsyncTransport, FakeCredential

SUB = "00000000-1111-2222-3333-444444444444"
APP_INSIGHTS = f"/subscriptions/{SUB}/resourceGroups/rg/providers/microsoft.insights/components/sg"
METRICS_ENDPOINT = "https://westeurope.metrics.monitor.azure.com"
METRICS_PATH = f"/subscriptions/{SUB}/metrics:getBatch"
WORKSPACE = "5a5a5a5a-0000-0000-0000-000000000000"
LOGS_PATH = f"/v1/workspaces/{WORKSPACE}/query"
T0 = "2025-05-01T10:00:00Z"
SCALE_SETS: dict[str, ScaleSetZones] = {
    "pool-a": {"SG-Pool-A-Spot-Z1": "1", "sg-pool-a-spot-z2": "2", "sg-pool-a-spot": None},
}


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def _series(points: list[tuple[str, float | None]], **dims: str) -> dict[str, Any]:
    data = []
    for stamp, maximum in points:
        point: dict[str, Any] = {"timeStamp": stamp}
        if maximum is not None:
            point["maximum"] = maximum
        data.append(point)
    metadata = [{"name": {"value": k, "localizedValue": k}, "value": v} for k, v in dims.items()]
    return {"metadatavalues": metadata, "data": data}


def _metric(name: str, *series: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"{APP_INSIGHTS}/providers/Microsoft.Insights/metrics/{name}",
        "type": "Microsoft.Insights/metrics",
        "name": {"value": name, "localizedValue": name},
        "displayDescription": "",
        "unit": "Count",
        "errorCode": "Success",
        "timeseries": list(series),
    }


def _metrics_answer(*metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "values": [
            {
                "starttime": "2025-05-01T09:57:00Z",
                "endtime": "2025-05-01T10:00:00Z",
                "interval": "PT1M",
                "namespace": "azure.applicationinsights",
                "resourceregion": "westeurope",
                "resourceid": APP_INSIGHTS,
                "value": list(metrics),
            }
        ]
    }


def _logs_answer(rows: list[list[Any]], error: Mapping[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "tables": [
            {
                "name": "PrimaryResult",
                "columns": [
                    {"name": "TimeGenerated", "type": "datetime"},
                    {"name": "Zone", "type": "string"},
                ],
                "rows": rows,
            }
        ]
    }
    if error is not None:
        answer["error"] = error
    return answer


async def _scale_sets(pool: str) -> ScaleSetZones:
    return SCALE_SETS.get(pool, {})


@pytest.fixture
def transport() -> FakeAsyncTransport:
    return FakeAsyncTransport()


def _signals(transport: FakeAsyncTransport, **kwargs: Any) -> MonitorSignals:
    options: dict[str, Any] = {"spot_scale_sets": _scale_sets, **kwargs}
    return MonitorSignals(
        FakeCredential(),
        metrics_endpoint=METRICS_ENDPOINT,
        gateway_resource_id=APP_INSIGHTS,
        workspace_id=WORKSPACE,
        transport=transport,
        retry_total=0,
        **options,
    )


@pytest.fixture
async def signals(transport: FakeAsyncTransport) -> AsyncIterator[MonitorSignals]:
    client = _signals(transport)
    try:
        yield client
    finally:
        await client.close()


# --- gateway load (metrics) ---


async def test_latest_non_null_maximum_wins(
    signals: MonitorSignals, transport: FakeAsyncTransport
) -> None:
    queue = _series(
        [("2025-05-01T09:58:00Z", 3.0), ("2025-05-01T09:59:00Z", 5.0), (T0, None)], pool="pool-a"
    )
    # out of order on purpose: the newest point wins, not the last listed, and not the largest
    in_flight = _series(
        [("2025-05-01T09:59:00Z", 7.0), ("2025-05-01T09:58:00Z", 9.0), (T0, None)], pool="pool-a"
    )
    transport.answer(
        "POST",
        METRICS_PATH,
        _metrics_answer(_metric(QUEUE_METRIC, queue), _metric(IN_FLIGHT_METRIC, in_flight)),
    )
    load = await signals.gateway_load("pool-a")
    assert load == GatewayLoad(admission_queue_depth=5, gateway_in_flight=7, measured=True)

    [sent] = transport.sent(METRICS_PATH)
    assert sent.method == "POST"
    assert sent.body == {"resourceids": [APP_INSIGHTS]}
    assert sent.param("filter") == "pool eq 'pool-a'"
    assert sent.param("metricnamespace") == "azure.applicationinsights"
    assert sent.param("metricnames") == f"{QUEUE_METRIC},{IN_FLIGHT_METRIC}"
    assert sent.param("aggregation") == "Maximum"
    assert sent.param("interval") == "PT1M"
    assert sent.param("starttime") and sent.param("endtime")
    assert sent.headers["Authorization"] == "Bearer fake"


async def test_no_data_is_zero_and_still_measured(
    signals: MonitorSignals, transport: FakeAsyncTransport
) -> None:
    empty = _series([("2025-05-01T09:59:00Z", None), (T0, None)])
    transport.answer("POST", METRICS_PATH, _metrics_answer(_metric(QUEUE_METRIC, empty)))
    assert await signals.gateway_load("pool-a") == GatewayLoad(0, 0, measured=True)
    transport.routes.clear()
    transport.answer("POST", METRICS_PATH, {"values": []})
    assert await signals.gateway_load("pool-a") == GatewayLoad(0, 0, measured=True)


async def test_the_filter_quotes_the_pool(
    signals: MonitorSignals, transport: FakeAsyncTransport
) -> None:
    transport.answer("POST", METRICS_PATH, _metrics_answer())
    await signals.gateway_load("o'brien (eu)")
    [sent] = transport.sent(METRICS_PATH)
    assert sent.param("filter") == "pool eq 'o''brien %2528eu%2529'"


async def test_per_instance_series_are_summed(transport: FakeAsyncTransport) -> None:
    signals = _signals(transport, instance_dimension="cloud/roleInstance")
    try:
        a = _series([("2025-05-01T09:59:00Z", 2.0), (T0, 4.0)], **{"cloud/roleInstance": "a"})
        b = _series([("2025-05-01T09:59:00Z", 3.0), (T0, None)], **{"cloud/roleInstance": "b"})
        transport.answer("POST", METRICS_PATH, _metrics_answer(_metric(IN_FLIGHT_METRIC, a, b)))
        assert await signals.gateway_load("pool-a") == GatewayLoad(0, 7, measured=True)
        [sent] = transport.sent(METRICS_PATH)
        assert sent.param("filter") == "pool eq 'pool-a' and cloud/roleInstance eq '*'"
        assert sent.param("top") == "100"
    finally:
        await signals.close()


@pytest.mark.parametrize(
    ("status", "code"), [(403, "AuthorizationFailed"), (500, "InternalServerError")]
)
async def test_failed_metrics_query_is_unmeasured_zero_with_one_warning(
    signals: MonitorSignals,
    transport: FakeAsyncTransport,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    error = {"error": {"code": code, "message": "no"}}
    transport.answer("POST", METRICS_PATH, error, status=status)
    with caplog.at_level(logging.WARNING, logger="spotgate.adapters.azure.monitor_signals"):
        load = await signals.gateway_load("pool-a")
    assert load == GatewayLoad(0, 0, measured=False)
    warnings = [r for r in caplog.records if r.name.endswith("monitor_signals")]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert str(status) in warnings[0].getMessage() and "pool-a" in warnings[0].getMessage()
    assert len(transport.sent(METRICS_PATH)) == 1  # retry_total=0: one try, no sleeping


# --- spot evictions (Activity Log in Log Analytics) ---


async def test_eviction_rows_become_signals(
    signals: MonitorSignals, transport: FakeAsyncTransport
) -> None:
    rows = [
        ["2025-05-01T10:03:07.5Z", "2"],
        ["2025-05-01T10:01:00Z", "1"],
        ["2025-05-01T10:02:00Z", ""],  # the regional scale set
    ]
    transport.answer("POST", LOGS_PATH, _logs_answer(rows))
    evictions = await signals.recent_evictions("pool-a", since_s=3600)
    assert evictions == [
        EvictionSignal(zone="1", at=_at("2025-05-01T10:01:00Z")),
        EvictionSignal(zone=None, at=_at("2025-05-01T10:02:00Z")),
        EvictionSignal(zone="2", at=_at("2025-05-01T10:03:07.5Z")),
    ]
    [sent] = transport.sent(LOGS_PATH)
    assert sent.body["timespan"] == "PT3600.0S"
    query = sent.body["query"]
    assert query == eviction_query(SCALE_SETS["pool-a"])
    assert "AzureActivity" in query
    for operation in EVICTION_OPERATIONS:
        assert kql_string(operation) in query
    assert '"sg-pool-a-spot-z1", "1"' in query  # names lowered: the log's casing varies
    assert '"sg-pool-a-spot", ""' in query


async def test_a_pool_without_spot_scale_sets_asks_nothing(
    signals: MonitorSignals, transport: FakeAsyncTransport
) -> None:
    assert await signals.recent_evictions("no-such-pool", since_s=600) == []
    assert transport.requests == []


_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')


def _skeleton(query: str) -> str:
    """The query with every string literal blanked: what a name could change if it escaped."""
    return _LITERAL.sub('""', query)


@pytest.mark.parametrize(
    "pool",
    [
        'a" | union SecurityEvent | where "1" == "1',
        'a\\" | take 1 //',
        "a' or 1==1 //",
        'x"\n| project secrets',
    ],
)
async def test_a_hostile_pool_name_stays_inside_its_literal(
    transport: FakeAsyncTransport, pool: str
) -> None:
    async def by_name(p: str) -> ScaleSetZones:
        return {f"sg-{p}-spot-z1": "1", f"sg-{p}-spot": None}

    signals = _signals(transport, spot_scale_sets=by_name, resource_group=f'rg"{pool}')
    try:
        transport.answer("POST", LOGS_PATH, _logs_answer([]))
        assert await signals.recent_evictions(pool, since_s=60) == []
    finally:
        await signals.close()
    [sent] = transport.sent(LOGS_PATH)
    benign = eviction_query({"sg-b-spot-z1": "1", "sg-b-spot": None}, resource_group="rg")
    assert _skeleton(sent.body["query"]) == _skeleton(benign)


def test_kql_string_escapes_and_round_trips() -> None:
    nasty = "a\"b\\c'd\te\nf"
    literal = kql_string(nasty)
    assert _LITERAL.fullmatch(literal)
    unescaped = re.sub(
        r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), literal[1:-1]
    )
    assert unescaped == nasty
    with pytest.raises(ValueError):
        kql_string("bell\x07")


@pytest.mark.parametrize(("status", "code"), [(403, "InsufficientAccessError"), (500, "Boom")])
async def test_failed_logs_query_is_empty_with_one_warning(
    signals: MonitorSignals,
    transport: FakeAsyncTransport,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    transport.answer("POST", LOGS_PATH, {"error": {"code": code, "message": "no"}}, status=status)
    with caplog.at_level(logging.WARNING, logger="spotgate.adapters.azure.monitor_signals"):
        assert await signals.recent_evictions("pool-a", since_s=600) == []
    warnings = [r for r in caplog.records if r.name.endswith("monitor_signals")]
    assert len(warnings) == 1 and str(status) in warnings[0].getMessage()


async def test_a_partial_answer_keeps_its_rows_and_warns(
    signals: MonitorSignals, transport: FakeAsyncTransport, caplog: pytest.LogCaptureFixture
) -> None:
    error = {"code": "PartialError", "message": "some shards timed out", "details": []}
    transport.answer("POST", LOGS_PATH, _logs_answer([["2025-05-01T10:01:00Z", "3"]], error))
    with caplog.at_level(logging.WARNING, logger="spotgate.adapters.azure.monitor_signals"):
        evictions = await signals.recent_evictions("pool-a", since_s=600)
    assert evictions == [EvictionSignal(zone="3", at=_at("2025-05-01T10:01:00Z"))]
    warnings = [r for r in caplog.records if r.name.endswith("monitor_signals")]
    assert len(warnings) == 1 and "partial" in warnings[0].getMessage()
