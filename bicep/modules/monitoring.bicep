// Log Analytics workspace and a workspace-based Application Insights component.
// Local (instrumentation-key) ingestion is off: the Function app sends telemetry with its
// managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING + Monitoring Metrics Publisher).
// The operators' workbook over that component is deployed here too (workbook.bicep); the alert
// rules, which also watch Cosmos DB, are deployed by main.bicep (alerts.bicep).

param location string
param tags object = {}
param logAnalyticsName string
param appInsightsName string
param retentionInDays int = 30

@description('Name the operators\' workbook is listed under (Application Insights > Workbooks).')
param workbookDisplayName string = 'spotgate operations'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
    // Custom metrics keep their dimensions in the metrics store: the fleet monitor reads pool
    // load with a `pool` filter (monitor_signals.py), which otherwise matches nothing.
    #disable-next-line BCP037
    CustomMetricsOptedInType: 'WithDimensions'
  }
}

module workbook 'workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    tags: tags
    appInsightsId: appInsights.id
    displayName: workbookDisplayName
  }
}

output logAnalyticsName string = workspace.name
output logAnalyticsId string = workspace.id
output logAnalyticsCustomerId string = workspace.properties.customerId
output appInsightsName string = appInsights.name
output appInsightsId string = appInsights.id
output workbookId string = workbook.outputs.workbookId
