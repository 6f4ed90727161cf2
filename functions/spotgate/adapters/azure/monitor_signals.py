"""Pool-wide gateway load, read from Azure Monitor for the fleet monitor.

The gateway runs as several Function App instances, each knowing only its own
queue and in-flight requests, so the pool-wide figures come from the metrics
every instance exports to Application Insights (`spotgate_admission_queue_depth`,
`spotgate_gateway_in_flight`, with a `pool` dimension), read through the
Metrics batch API (`metrics:getBatch`).

Failures: a query that fails logs one warning instead of raising, because a
missing metric must not stop the monitor tick. Silence would still be wrong,
since a zero reads as "idle" and invites scale-in, so `GatewayDemand.measured`
says whether the zeros were measured.

Spot evictions are not read here: agents report them (Scheduled Events) and
the fleet journal keeps them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.monitor.querymetrics import MetricAggregationType, MetricsQueryResult
from azure.monitor.querymetrics.aio import MetricsClient

log = logging.getLogger(__name__)

APP_INSIGHTS_NAMESPACE = "azure.applicationinsights"
QUEUE_METRIC = "spotgate_admission_queue_depth"
IN_FLIGHT_METRIC = "spotgate_gateway_in_flight"
# Custom metrics take one to three minutes to land; the newest non-null minute wins anyway.
DEFAULT_WINDOW_S = 180.0


@dataclass(frozen=True)
class GatewayDemand:
    """Pool-wide gateway load; `measured` is False when the query failed: zeros are unknowns."""

    admission_queue_depth: int = 0
    gateway_in_flight: int = 0
    measured: bool = True


def odata_string(value: str) -> str:
    """`value` as a quoted Azure Monitor metrics filter value (quotes doubled, brackets encoded)."""
    escaped = value.replace("'", "''").replace("(", "%2528").replace(")", "%2529")
    return f"'{escaped}'"


def latest_maximum(result: Iterable[MetricsQueryResult], metric_name: str) -> float | None:
    """Sum over time series (one per gateway instance when split) of each one's newest maximum."""
    total: float | None = None
    for resource in result:
        for metric in resource.metrics:
            if metric.name != metric_name:
                continue
            for series in metric.timeseries:
                points = [p for p in series.data if p.maximum is not None]
                if points:
                    newest = max(points, key=lambda p: p.timestamp)
                    total = (total or 0.0) + float(newest.maximum or 0.0)
    return total


class MonitorSignals:
    """Reads a pool's gateway load from the metrics its gateway instances export."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        metrics_endpoint: str,
        gateway_resource_id: str,
        metric_namespace: str = APP_INSIGHTS_NAMESPACE,
        pool_dimension: str = "pool",
        instance_dimension: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        """`metrics_endpoint` is regional (https://<region>.metrics.monitor.azure.com).

        With only the pool filter, Azure's Maximum is the busiest instance's
        figure. Naming `instance_dimension` (e.g. `cloud/roleInstance`, if the
        exporter records it) splits the series per instance and sums their
        newest maxima, which is the pool-wide total. `client_kwargs` reach the
        SDK client (`transport`, `retry_total`, ...).
        """
        self._metrics = MetricsClient(metrics_endpoint, credential, **client_kwargs)
        self._resource_id = gateway_resource_id
        self._namespace = metric_namespace
        self._pool_dimension = pool_dimension
        self._instance_dimension = instance_dimension

    def metrics_filter(self, pool: str) -> str:
        where = f"{self._pool_dimension} eq {odata_string(pool)}"
        if self._instance_dimension:
            where += f" and {self._instance_dimension} eq '*'"
        return where

    async def gateway_load(self, pool: str, window_s: float = DEFAULT_WINDOW_S) -> GatewayDemand:
        """Newest per-minute maxima of the pool's admission queue and in-flight requests."""
        try:
            result = await self._metrics.query_resources(
                resource_ids=[self._resource_id],
                metric_namespace=self._namespace,
                metric_names=[QUEUE_METRIC, IN_FLIGHT_METRIC],
                timespan=timedelta(seconds=window_s),
                granularity=timedelta(minutes=1),
                aggregations=[MetricAggregationType.MAXIMUM],
                filter=self.metrics_filter(pool),
                max_results=100 if self._instance_dimension else None,
            )
        except (AzureError, KeyError, TypeError, ValueError) as error:
            log.warning("gateway load metrics for pool %r unavailable: %s", pool, _brief(error))
            return GatewayDemand(measured=False)
        queued = latest_maximum(result, QUEUE_METRIC)
        in_flight = latest_maximum(result, IN_FLIGHT_METRIC)
        return GatewayDemand(
            admission_queue_depth=math.ceil(queued or 0.0),
            gateway_in_flight=math.ceil(in_flight or 0.0),
        )

    async def close(self) -> None:
        await self._metrics.close()


def _brief(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"HTTP {status}: {first_line}" if status else first_line
