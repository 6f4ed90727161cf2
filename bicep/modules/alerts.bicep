// Azure Monitor alerts on spotgate's telemetry, and the action group that emails operators.
//
// What each alert means and what to do first: README.md, "Operations: where to look, what
// each alert means" (and each rule's description says it too).
//
// Log search alerts (scheduledQueryRules) query Application Insights' classic tables:
// `customMetrics` for the gateway's and fleet manager's OpenTelemetry metrics (`name` is the
// metric name, labels are `customDimensions`; counters arrive as per-interval increments, the
// Azure Monitor exporter's delta temporality; histograms as sum/count/min/max per interval, no
// buckets) and `traces` for logs, where the gateway's JSON access line (one per request, with
// `ttft_ms` and `duration_ms`) gives the exact percentiles a histogram without buckets cannot.
// The Cosmos DB alert is a platform metric alert on the account. Nothing here holds a key:
// alert rules run under Azure Monitor's own identity, and App Insights takes Entra ID only.
//
// Every threshold and window is a parameter; main.bicep passes only the names and the email.

param location string
param tags object = {}

@description('Prefix of every alert rule\'s and the action group\'s name, e.g. spotgate-<environment>.')
param namePrefix string

@description('Application Insights component the gateway and fleet manager send telemetry to.')
param appInsightsName string

@description('Cosmos DB account whose throttled (429) requests are alerted on.')
param cosmosAccountName string

@description('Pools (fleet monitors) that must keep ticking: one monitor-stalled alert series each.')
param pools array = [
  'default'
]

@description('Email address(es), comma-separated, the action group notifies. Empty: no action group is created; the alert rules still exist and fire (Azure Monitor > Alerts, and the workbook), they just notify nobody.')
param alertEmail string = ''

@description('Create the rules enabled. False deploys them disabled (muted), e.g. while telemetry export is being set up.')
param alertsEnabled bool = true

// --- thresholds and windows ---

@minValue(1)
@maxValue(100)
@description('Failure rate: alert when more than this percent of requests in the window answered 5xx.')
param failureRatePercent int = 5

@allowed([
  5
  10
  15
  30
  45
])
@description('Failure rate: window, in minutes.')
param failureRateWindowMinutes int = 15

@minValue(1)
@description('Failure rate and latency: fewer requests than this in the window never alert (too few to judge).')
param alertMinRequests int = 20

@minValue(1)
@description('Latency SLO: alert when the P95 time from request to last byte (successful requests, streams to their end) exceeds this many milliseconds.')
param latencyP95Ms int = 60000

@minValue(1)
@description('TTFT SLO: alert when the P95 time to first token (successful requests) exceeds this many milliseconds.')
param ttftP95Ms int = 2000

@allowed([
  5
  10
  15
  30
  45
])
@description('Latency and TTFT: window, in minutes.')
param latencyWindowMinutes int = 15

@minValue(1)
@description('No ready worker: alert when a pool had at least this many requests waiting in the admission queue while not one of its workers was ready for the whole window.')
param noReadyWorkerMinQueued int = 1

@allowed([
  5
  10
  15
  30
  45
])
@description('No ready worker: window, in minutes. Longer than a cold start (GPU VM boot plus model load), or every scale-from-zero alerts.')
param noReadyWorkerWindowMinutes int = 15

@minValue(1)
@description('Eviction burst: alert when a pool loses at least this many spot workers to evictions within the window.')
param evictionBurstCount int = 3

@allowed([
  5
  10
  15
  30
  45
])
@description('Eviction burst: window, in minutes.')
param evictionBurstWindowMinutes int = 10

@minValue(1)
@description('Monitor stalled: alert when a pool\'s fleet monitor completed fewer successful ticks than this in the window (it ticks every SPOTGATE_MONITOR_TICK_S, 5 s by default).')
param monitorStalledMinOkTicks int = 1

@allowed([
  5
  10
  15
  30
  45
])
@description('Monitor stalled: window, in minutes.')
param monitorStalledWindowMinutes int = 10

@minValue(1)
@description('Monitor failing: alert when a pool\'s fleet monitor had at least this many failed ticks in the window.')
param monitorFailedTicks int = 3

@allowed([
  5
  10
  15
  30
  45
])
@description('Monitor failing: window, in minutes.')
param monitorFailedWindowMinutes int = 15

@minValue(1)
@description('Cosmos DB throttling: alert when more than this many requests to the account were answered 429 within the window.')
param cosmosThrottledRequests int = 20

@allowed([
  5
  15
  30
])
@description('Cosmos DB throttling: window, in minutes (a metric alert: 5, 15 or 30).')
param cosmosThrottleWindowMinutes int = 5

@minValue(1)
@description('Error-log spike: alert when at least this many log lines of severity Error or Critical were written within the window.')
param errorLogCount int = 20

@allowed([
  5
  10
  15
  30
  45
])
@description('Error-log spike: window, in minutes.')
param errorLogWindowMinutes int = 15

// ------------------------------------------------------------------------------------------

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource cosmosAccount 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

var alertEmails = filter(map(split(alertEmail, ','), e => trim(e)), e => !empty(e))
var notify = !empty(alertEmails)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: '${namePrefix}-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'spotgate'
    enabled: true
    emailReceivers: [for (email, i) in alertEmails: {
      name: 'operator-${i}'
      emailAddress: email
      useCommonAlertSchema: true
    }]
  }
}

var actionGroupIds = notify ? [
  actionGroup.id
] : []

var runbook = 'README.md, Operations: where to look, what each alert means'

// One alert per pool where the query has a pool column.
var byPool = [
  {
    name: 'pool'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]

// --- the queries (Application Insights classic schema) ---
// __MIN_REQUESTS__ and __POOLS__ are filled from parameters below; thresholds are not in the
// queries but in each rule's criteria.

var failureRateQuery = replace('''
customMetrics
| where name == 'spotgate_requests_total'
| extend status = toint(customDimensions.status)
| summarize requests = sum(value), failed = sumif(value, status >= 500)
| where requests >= __MIN_REQUESTS__
| project failed_percent = 100.0 * failed / requests
''', '__MIN_REQUESTS__', string(alertMinRequests))

// The access line: {"at": ..., "event": "request", "request_id": ..., "status": ..., "ttft_ms": ...}
// Traces may be sampled (host.json): itemCount weighs each kept line.
var latencyQuery = replace('''
traces
| where message contains '"event":"request"'
| extend line = parse_json(message)
| where toint(line.status) < 400 and isnotnull(line.duration_ms)
| summarize requests = sum(itemCount), p95_ms = percentilew(todouble(line.duration_ms), itemCount, 95)
| where requests >= __MIN_REQUESTS__
| project p95_ms
''', '__MIN_REQUESTS__', string(alertMinRequests))

var ttftQuery = replace('''
traces
| where message contains '"event":"request"'
| extend line = parse_json(message)
| where toint(line.status) < 400 and isnotnull(line.ttft_ms)
| summarize requests = sum(itemCount), p95_ms = percentilew(todouble(line.ttft_ms), itemCount, 95)
| where requests >= __MIN_REQUESTS__
| project p95_ms
''', '__MIN_REQUESTS__', string(alertMinRequests))

// Queue depth is per gateway instance (sum them); the worker gauges are read from the shared
// registry, so every instance reports the same fleet (take the largest, never the sum).
var noReadyWorkerQuery = '''
let ready = customMetrics
| where name == 'spotgate_pool_workers' and tostring(customDimensions.state) == 'ready'
| summarize workers = max(value) by pool = tostring(customDimensions.pool), priority = tostring(customDimensions.priority), zone = tostring(customDimensions.zone)
| summarize ready = sum(workers) by pool;
customMetrics
| where name == 'spotgate_admission_queue_depth'
| summarize depth = max(value) by pool = tostring(customDimensions.pool), cloud_RoleInstance
| summarize queued = sum(depth) by pool
| join kind=leftouter ready on pool
| where coalesce(ready, 0.0) == 0.0
| project pool, queued
'''

// Evictions come from the shared journal: every instance counts the same ones.
var evictionBurstQuery = '''
customMetrics
| where name == 'spotgate_evictions_total'
| summarize evictions = sum(value) by pool = tostring(customDimensions.pool), cloud_RoleInstance
| summarize evictions = max(evictions) by pool
'''

// Every configured pool gets a row, so a monitor that sends nothing at all still alerts.
var monitorStalledQuery = replace('''
let ticks = customMetrics
| where name == 'spotgate_monitor_ticks_total' and tostring(customDimensions.outcome) == 'ok'
| summarize ok_ticks = sum(value) by pool = tostring(customDimensions.pool);
print pool = dynamic(__POOLS__)
| mv-expand pool to typeof(string)
| join kind=leftouter ticks on pool
| project pool, ok_ticks = coalesce(ok_ticks, 0.0)
''', '__POOLS__', string(pools))

var monitorFailingQuery = '''
customMetrics
| where name == 'spotgate_monitor_ticks_total' and tostring(customDimensions.outcome) == 'failed'
| summarize failed_ticks = sum(value) by pool = tostring(customDimensions.pool)
'''

var errorLogQuery = '''
traces
| where severityLevel >= 3
| summarize error_lines = sum(itemCount)
'''

// --- the log search alerts ---

var logAlerts = [
  {
    name: 'failure-rate'
    displayName: 'spotgate: failure rate (5xx share of requests)'
    description: 'More than ${failureRatePercent}% of requests answered 5xx in ${failureRateWindowMinutes} minutes (metric spotgate_requests_total). What to do: open the workbook\'s Requests by status and the Logs panel; 502 worker_failed means workers are failing (check `spotgate fleet`, open breakers, evictions), 503 no_capacity means no worker freed up in time (a cold start, spot refused, quota, maxWorkers); find a failing request id in the access lines. See ${runbook}.'
    severity: 1
    windowMinutes: failureRateWindowMinutes
    query: failureRateQuery
    measure: 'failed_percent'
    operator: 'GreaterThan'
    threshold: failureRatePercent
    dimensions: []
  }
  {
    name: 'latency-p95'
    displayName: 'spotgate: P95 request latency over the SLO'
    description: 'The P95 time from request to last byte of successful requests exceeded ${latencyP95Ms} ms over ${latencyWindowMinutes} minutes (access log lines, duration_ms). What to do: compare queue depth and admission wait with ready workers in the workbook; if requests queue, the pool is too small or scaling up slowly (raise maxWorkers or SPOTGATE_MIN_WORKERS); if not, check the workers\' load (vllm running/waiting) and long completions (max_tokens). See ${runbook}.'
    severity: 2
    windowMinutes: latencyWindowMinutes
    query: latencyQuery
    measure: 'p95_ms'
    operator: 'GreaterThan'
    threshold: latencyP95Ms
    dimensions: []
  }
  {
    name: 'ttft-p95'
    displayName: 'spotgate: P95 time to first token over the SLO'
    description: 'The P95 time to first token of successful requests exceeded ${ttftP95Ms} ms over ${latencyWindowMinutes} minutes (access log lines, ttft_ms). What to do: look at the admission queue, admission wait and ready workers in the workbook; a queue with no ready worker is a cold start or lost capacity (see the no-ready-worker alert), a queue with ready workers means too few of them (raise maxWorkers, lower the autoscaler\'s target concurrency, or configure spillover). See ${runbook}.'
    severity: 2
    windowMinutes: latencyWindowMinutes
    query: ttftQuery
    measure: 'p95_ms'
    operator: 'GreaterThan'
    threshold: ttftP95Ms
    dimensions: []
  }
  {
    name: 'no-ready-worker'
    displayName: 'spotgate: requests waiting and no ready worker'
    description: 'A pool had at least ${noReadyWorkerMinQueued} request(s) waiting in the admission queue (spotgate_admission_queue_depth) and not one ready worker (spotgate_pool_workers, state ready) for ${noReadyWorkerWindowMinutes} minutes. What to do: run `spotgate fleet` and read the monitor\'s why (GET /orchestrations/fleet-monitor-<pool>); spot refused in every zone with no on-demand fallback, quota, a worker image that never turns ready (agent or vLLM logs on the VM), or a stalled monitor; raise SPOTGATE_MIN_WORKERS or configure spillover to serve meanwhile. See ${runbook}.'
    severity: 1
    windowMinutes: noReadyWorkerWindowMinutes
    query: noReadyWorkerQuery
    measure: 'queued'
    operator: 'GreaterThanOrEqual'
    threshold: noReadyWorkerMinQueued
    dimensions: byPool
  }
  {
    name: 'eviction-burst'
    displayName: 'spotgate: spot eviction burst'
    description: 'A pool lost at least ${evictionBurstCount} spot workers to evictions within ${evictionBurstWindowMinutes} minutes (spotgate_evictions_total). What to do: check in the workbook that replacements came (workers by priority and state, eviction notice to replacement); the capacity mix should avoid the evicting zone and fill in on-demand; if evictions keep coming, add zones, raise the on-demand base (SPOTGATE_POOL_POLICIES) or choose another VM size or region. See ${runbook}.'
    severity: 2
    windowMinutes: evictionBurstWindowMinutes
    query: evictionBurstQuery
    measure: 'evictions'
    operator: 'GreaterThanOrEqual'
    threshold: evictionBurstCount
    dimensions: byPool
  }
  {
    name: 'monitor-stalled'
    displayName: 'spotgate: fleet monitor not running'
    description: 'A pool\'s fleet monitor completed fewer than ${monitorStalledMinOkTicks} successful ticks in ${monitorStalledWindowMinutes} minutes (spotgate_monitor_ticks_total, outcome ok): nothing scales, replaces evicted workers or deletes idle ones. Also fires when no metrics reach Application Insights at all. What to do: GET /orchestrations/fleet-monitor-<pool> (admin key); if it is not Running, restart it with POST /orchestrations/fleet_monitor; check /health/ready and the Function app\'s errors (Durable task hub storage, the watchdog timer). See ${runbook}.'
    severity: 1
    windowMinutes: monitorStalledWindowMinutes
    query: monitorStalledQuery
    measure: 'ok_ticks'
    operator: 'LessThan'
    threshold: monitorStalledMinOkTicks
    dimensions: byPool
  }
  {
    name: 'monitor-failing'
    displayName: 'spotgate: fleet monitor ticks failing'
    description: 'A pool\'s fleet monitor had at least ${monitorFailedTicks} failed ticks in ${monitorFailedWindowMinutes} minutes (spotgate_monitor_ticks_total, outcome failed). What to do: read the monitor\'s customStatus (GET /orchestrations/fleet-monitor-<pool>) and the Function app\'s errors in the workbook\'s Logs panel; usual causes are ARM throttling or a missing role (Virtual Machine Contributor), Cosmos DB errors (see the Cosmos throttling alert) or the metrics query (Monitoring Reader). See ${runbook}.'
    severity: 2
    windowMinutes: monitorFailedWindowMinutes
    query: monitorFailingQuery
    measure: 'failed_ticks'
    operator: 'GreaterThanOrEqual'
    threshold: monitorFailedTicks
    dimensions: byPool
  }
  {
    name: 'error-logs'
    displayName: 'spotgate: error log spike'
    description: 'At least ${errorLogCount} log lines of severity Error or worse were written in ${errorLogWindowMinutes} minutes (traces, severityLevel >= 3). What to do: open the workbook\'s Logs panel (or Application Insights > Logs: traces | where severityLevel >= 3) and group by message; a request\'s id leads to its access line; a burst right after a deployment usually means a bad setting or a missing role. See ${runbook}.'
    severity: 3
    windowMinutes: errorLogWindowMinutes
    query: errorLogQuery
    measure: 'error_lines'
    operator: 'GreaterThanOrEqual'
    threshold: errorLogCount
    dimensions: []
  }
]

resource logAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [for rule in logAlerts: {
  name: '${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: alertsEnabled
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT${rule.windowMinutes}M'
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Maximum'
          metricMeasureColumn: rule.measure
          operator: rule.operator
          threshold: rule.threshold
          dimensions: rule.dimensions
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}]

// --- Cosmos DB throttling: a platform metric alert on the account ---

resource cosmosThrottling 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-cosmos-throttling'
  location: 'global'
  tags: tags
  properties: {
    description: 'More than ${cosmosThrottledRequests} Cosmos DB requests were throttled (status 429) in ${cosmosThrottleWindowMinutes} minutes. The SDK retries them, so requests slow down before they fail. What to do: in the account\'s Insights (Requests by status code, Normalized RU consumption) find the hot container and operation; the response cache and usage counters are the busiest; a serverless account is capped per partition, so spread the load or move to provisioned or autoscale throughput. See ${runbook}.'
    severity: 2
    enabled: alertsEnabled
    scopes: [
      cosmosAccount.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT${cosmosThrottleWindowMinutes}M'
    autoMitigate: true
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'throttled'
          metricNamespace: 'Microsoft.DocumentDB/databaseAccounts'
          metricName: 'TotalRequests'
          dimensions: [
            {
              name: 'StatusCode'
              operator: 'Include'
              values: [
                '429'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: cosmosThrottledRequests
          timeAggregation: 'Count'
        }
      ]
    }
    actions: notify ? [
      {
        actionGroupId: actionGroup.id
      }
    ] : []
  }
}

var logAlertNames = [for rule in logAlerts: '${namePrefix}-${rule.name}']

output alertRuleNames array = concat(logAlertNames, [
  cosmosThrottling.name
])
output actionGroupName string = notify ? actionGroup.name : ''
