"""MonitorSignals through the real Azure Monitor SDK client, answered by recorded response shapes.

The shapes follow what the SDK deserialises (azure-monitor-querymetrics
`MetricsQueryResult._from_generated`): the metrics batch API's `{"values": [...]}`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from spotgate.adapters.azure.monitor_signals import (
    IN_FLIGHT_METRIC,
    QUEUE_METRIC,
    GatewayDemand,
    MonitorSignals,
)
from tests.adapters.azure.monitor_transport import FakeAsyncTransport, FakeCredential

SUB = "00000000-1111-2222-3333-444444444444"
APP_INSIGHTS = f"/subscriptions/{SUB}/resourceGroups/rg/providers/microsoft.insights/components/sg"
METRICS_ENDPOINT = "https://westeurope.metrics.monitor.azure.com"
METRICS_PATH = f"/subscriptions/{SUB}/metrics:getBatch"
T0 = "2025-05-01T10:00:00Z"


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


@pytest.fixture
def transport() -> FakeAsyncTransport:
    return FakeAsyncTransport()


def _signals(transport: FakeAsyncTransport, **kwargs: Any) -> MonitorSignals:
    return MonitorSignals(
        FakeCredential(),
        metrics_endpoint=METRICS_ENDPOINT,
        gateway_resource_id=APP_INSIGHTS,
        transport=transport,
        retry_total=0,
        **kwargs,
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
    assert load == GatewayDemand(admission_queue_depth=5, gateway_in_flight=7, measured=True)

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
    assert await signals.gateway_load("pool-a") == GatewayDemand(0, 0, measured=True)
    transport.routes.clear()
    transport.answer("POST", METRICS_PATH, {"values": []})
    assert await signals.gateway_load("pool-a") == GatewayDemand(0, 0, measured=True)


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
        assert await signals.gateway_load("pool-a") == GatewayDemand(0, 7, measured=True)
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
    assert load == GatewayDemand(0, 0, measured=False)
    warnings = [r for r in caplog.records if r.name.endswith("monitor_signals")]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert str(status) in warnings[0].getMessage() and "pool-a" in warnings[0].getMessage()
    assert len(transport.sent(METRICS_PATH)) == 1  # retry_total=0: one try, no sleeping
