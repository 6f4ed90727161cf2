// The operators' Azure Monitor workbook: fleet panels (workers by priority and state,
// evictions, scaling decisions, provisioning time, monitor ticks) and request panels
// (requests per second by status, failure rate, P50/P95 latency and TTFT, tokens, cache hit
// rate, admission queue, spillover, open breakers), plus a request-id lookup and the error log.
// Its queries are in workbook.json (Application Insights classic tables; the metric names are
// checked against the telemetry's by tests/infra/test_alerts_workbook.py). Deployed by
// monitoring.bicep, next to the Application Insights component it reads, and listed under that
// component's Workbooks.

param location string
param tags object = {}

@description('Resource id of the Application Insights component the workbook reads.')
param appInsightsId string

@description('Name the workbook is listed under (Application Insights > Workbooks, Azure Monitor > Workbooks).')
param displayName string = 'spotgate operations'

// The template names the component by a placeholder: the resource parameter's default and the
// workbook's fallback resource.
var serializedData = replace(loadTextContent('workbook.json'), '__APP_INSIGHTS_ID__', appInsightsId)

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID; a stable one makes re-provisioning update it in place.
  name: guid(resourceGroup().id, appInsightsId, 'spotgate-operations-workbook')
  location: location
  tags: union(tags, {
    'hidden-title': displayName
  })
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: toLower(appInsightsId)
    version: 'Notebook/1.0'
    serializedData: serializedData
  }
}

output workbookId string = workbook.id
output workbookName string = workbook.name
