"""Pool-wide load and spot evictions, read from Azure Monitor for the fleet monitor.

The gateway runs as several Function App instances, each knowing only its own
queue and in-flight requests, so the pool-wide figures come from the metrics
every instance exports to Application Insights (`spotgate_admission_queue_depth`,
`spotgate_gateway_in_flight`, with a `pool` dimension), read through the
Metrics batch API (`metrics:getBatch`).

Evictions come from the Activity Log exported to a Log Analytics workspace
(table `AzureActivity`). Azure logs a platform-initiated spot eviction of a
scale-set VM as operation `Microsoft.Compute/virtualMachineScaleSets/evictSpotVM/action`
(an `az vmss simulate-eviction` drill is logged differently, as
`.../virtualMachines/simulateEviction/action`, and is not a capacity signal).
Source: the AzureActivity queries in github.com/zioproto/aks-spot-node-pool
(README), matching `az monitor activity-log` output shown in other public
write-ups of real evictions. Matching is case-insensitive (`in~`) because the
table has held both casings of operation names, and rows are summarised by
CorrelationId because one operation logs several status rows.

The Activity Log names the scale set but neither its pool (scale sets belong
to a pool by tag, see vmss_layout.py, and tags are not logged) nor its zone,
so the caller says which spot scale sets the pool has and where
(`spot_scale_sets`); the query joins the log on that small table and so
projects time and zone itself. Names reach the KQL only through `kql_string`,
so no pool or scale set name can change the query.

Failures: a query that fails logs one warning and yields zeros or no
evictions instead of raising, because a missing metric must not stop the
monitor tick. Silence would still be wrong for load, where a zero reads as
"idle" and invites scale-in, so `GatewayLoad.measured` says whether the
zeros were measured; evictions only steer placement, so an empty list is
safe enough, and a partial Log Analytics answer still yields what it holds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.monitor.query import LogsQueryPartialResult
from azure.monitor.query.aio import LogsQueryClient
from azure.monitor.querymetrics import MetricAggregationType, MetricsQueryResult
from azure.monitor.querymetrics.aio import MetricsClient

from spotgate.fleet.signals import EvictionSignal

log = logging.getLogger(__name__)

APP_INSIGHTS_NAMESPACE = "azure.applicationinsights"
QUEUE_METRIC = "spotgate_admission_queue_depth"
IN_FLIGHT_METRIC = "spotgate_gateway_in_flight"
# Custom metrics take one to three minutes to land; the newest non-null minute wins anyway.
DEFAULT_WINDOW_S = 180.0
EVICTION_OPERATIONS = (
    "Microsoft.Compute/virtualMachineScaleSets/evictSpotVM/action",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/evictSpotVM/action",
    # a Flexible scale set's VMs are plain VMs, named {scale set}_{8 hex}
    "Microsoft.Compute/virtualMachines/evictSpotVM/action",
)
_KQL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


@dataclass(frozen=True)
class GatewayLoad:
    """Pool-wide gateway load; `measured` is False when the query failed: zeros are unknowns."""

    admission_queue_depth: int = 0
    gateway_in_flight: int = 0
    measured: bool = True


ScaleSetZones = Mapping[str, str | None]
"""A pool's spot scale sets: name -> the one zone it is pinned to (None: regional or multi-zone)."""
SpotScaleSets = Callable[[str], Awaitable[ScaleSetZones]]


def kql_string(value: str) -> str:
    """`value` as a double-quoted KQL string literal that no content can break out of."""
    out = []
    for ch in value:
        if ch in _KQL_ESCAPES:
            out.append(_KQL_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError(f"control character {ch!r} in a KQL string")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def odata_string(value: str) -> str:
    """`value` as a quoted Azure Monitor metrics filter value (quotes doubled, brackets encoded)."""
    escaped = value.replace("'", "''").replace("(", "%2528").replace(")", "%2529")
    return f"'{escaped}'"


def eviction_query(scale_sets: ScaleSetZones, resource_group: str | None = None) -> str:
    """KQL over AzureActivity: one row (TimeGenerated, Zone) per spot eviction in `scale_sets`."""
    operations = ", ".join(kql_string(op) for op in EVICTION_OPERATIONS)
    # Azure resource names are case-insensitive, and the log has held both casings.
    rows = ", ".join(
        f"{kql_string(name.lower())}, {kql_string(zone or '')}"
        for name, zone in sorted(scale_sets.items())
    )
    lines = [
        f"let SpotScaleSets = datatable(ScaleSet: string, Zone: string) [{rows}];",
        "AzureActivity",
        f"| where OperationNameValue in~ ({operations})",
    ]
    if resource_group:
        lines.append(f"| where ResourceGroup =~ {kql_string(resource_group)}")
    lines += [
        "| extend Id = tolower(_ResourceId)",
        '| extend ScaleSet = coalesce(extract("/virtualmachinescalesets/([^/]+)", 1, Id),'
        ' extract("/virtualmachines/([^/]+)_[0-9a-f]{8}$", 1, Id))',
        "| join kind=inner SpotScaleSets on ScaleSet",
        # one eviction logs several rows (one per status) under one correlation id
        "| summarize TimeGenerated = min(TimeGenerated) by CorrelationId, ScaleSet, Zone",
        "| project TimeGenerated, Zone",
        "| order by TimeGenerated asc",
    ]
    return "\n".join(lines)


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


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class MonitorSignals:
    """Reads a pool's gateway load (metrics) and recent spot evictions (Activity Log)."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        metrics_endpoint: str,
        gateway_resource_id: str,
        workspace_id: str,
        logs_endpoint: str = "https://api.loganalytics.io",
        metric_namespace: str = APP_INSIGHTS_NAMESPACE,
        pool_dimension: str = "pool",
        instance_dimension: str | None = None,
        spot_scale_sets: SpotScaleSets,
        resource_group: str | None = None,
        **client_kwargs: Any,
    ) -> None:
        """`metrics_endpoint` is regional (https://<region>.metrics.monitor.azure.com).

        With only the pool filter, Azure's Maximum is the busiest instance's
        figure. Naming `instance_dimension` (e.g. `cloud/roleInstance`, if the
        exporter records it) splits the series per instance and sums their
        newest maxima, which is the pool-wide total. `spot_scale_sets(pool)`
        gives the pool's spot scale sets and zones (from the compute
        provider's listing). `client_kwargs` reach both SDK clients
        (`transport`, `retry_total`, ...).
        """
        self._metrics = MetricsClient(metrics_endpoint, credential, **client_kwargs)
        self._logs = LogsQueryClient(credential, endpoint=logs_endpoint, **client_kwargs)
        self._resource_id = gateway_resource_id
        self._workspace_id = workspace_id
        self._namespace = metric_namespace
        self._pool_dimension = pool_dimension
        self._instance_dimension = instance_dimension
        self._spot_scale_sets = spot_scale_sets
        self._resource_group = resource_group

    def metrics_filter(self, pool: str) -> str:
        where = f"{self._pool_dimension} eq {odata_string(pool)}"
        if self._instance_dimension:
            where += f" and {self._instance_dimension} eq '*'"
        return where

    async def gateway_load(self, pool: str, window_s: float = DEFAULT_WINDOW_S) -> GatewayLoad:
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
            return GatewayLoad(measured=False)
        queued = latest_maximum(result, QUEUE_METRIC)
        in_flight = latest_maximum(result, IN_FLIGHT_METRIC)
        return GatewayLoad(
            admission_queue_depth=math.ceil(queued or 0.0),
            gateway_in_flight=math.ceil(in_flight or 0.0),
        )

    async def recent_evictions(self, pool: str, since_s: float) -> list[EvictionSignal]:
        """Spot evictions in the pool's scale sets over the last `since_s` seconds, oldest first."""
        try:
            scale_sets = await self._spot_scale_sets(pool)
            if not scale_sets:
                return []
            query = eviction_query(scale_sets, self._resource_group)
            response = await self._logs.query_workspace(
                self._workspace_id, query, timespan=timedelta(seconds=since_s)
            )
        except (AzureError, KeyError, TypeError, ValueError) as error:
            log.warning("spot evictions for pool %r unavailable: %s", pool, _brief(error))
            return []
        if isinstance(response, LogsQueryPartialResult):
            log.warning("spot evictions for pool %r are partial: %s", pool, response.partial_error)
            tables = response.partial_data or []
        else:
            tables = response.tables
        evictions = []
        for table in tables:
            for row in table.rows:
                zone = row["Zone"]
                at = _epoch(row["TimeGenerated"])
                evictions.append(EvictionSignal(zone=str(zone) if zone else None, at=at))
        return sorted(evictions, key=lambda e: (e.at, e.zone or ""))

    async def close(self) -> None:
        await self._metrics.close()
        await self._logs.close()


def _brief(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"HTTP {status}: {first_line}" if status else first_line
