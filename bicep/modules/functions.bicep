// The control plane: the spotgate Function app (gateway + Durable fleet manager) on a Flex
// Consumption plan, VNet-integrated so it can reach the workers' private addresses.
// Everything signs in with the user-assigned identity: AzureWebJobsStorage (identity-based),
// Cosmos DB, Key Vault (references and the app's own reads), Application Insights (AAD
// ingestion), VMSS management. Secrets reach the app only as Key Vault references or through
// the vault's URL (SPOTGATE_KEY_VAULT_URL, read by its SecretStore), never as values.

param location string
param tags object = {}
param functionAppName string
param planName string
param identityName string
param storageAccountName string
param deploymentContainerName string

@description('Blob container of the Batch API\'s files (SPOTGATE_BATCH_FILES_CONTAINER).')
param batchFilesContainerName string = 'spotgate-files'
param appInsightsName string
param keyVaultName string
param cosmosAccountName string
param cosmosDatabaseName string = 'spotgate'
param subnetId string

@description('Pools the fleet manager runs (SPOTGATE_POOLS, a JSON list).')
param pools array = [
  'default'
]

@description('Models served even before a worker registers (SPOTGATE_MODELS).')
param models array = []

@description('Zones the spot scale sets are pinned to (SPOTGATE_ZONES): main.bicep\'s workerZones.')
param zones array

param minWorkers int = 0
param maxWorkers int = 4

@description('Address ranges worker URLs must be in (SPOTGATE_WORKER_NETWORKS): the workers\' subnet.')
param workerNetworks array

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Always-ready instances of the Durable group (orchestrations and activities), so the fleet monitor never waits on a cold start.')
param durableAlwaysReady int = 1

// Flex Consumption sends an instance at most this many HTTP requests at once (the HTTP group:
// the one catch-all API function) and starts another instance beyond that. Python's default on
// Flex is 1, which would give every SSE stream (tens of seconds to minutes, mostly waiting on
// a GPU worker) a whole instance: 40 streams, 40 instances, 40 cold starts, 40 admission queues
// that each see the whole fleet's slots. The gateway is async (one event loop relays many
// streams; CPU goes to SSE parsing, token counting and metering), so one 2 GB instance carries
// 32 streams comfortably: two workers' worth of vLLM slots (SPOTGATE_WORKER_MAX_CONCURRENCY,
// 16), and 40 x 32 = 1,280 requests in flight at the maximum instance count. Rate limits and
// budgets are shared counters in Cosmos DB (exact across instances); the admission queue is per
// instance, at most this deep since Flex sends no more (README: Deploy to Azure).
@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP requests (streams included) one Function app instance takes before Flex Consumption starts another.')
param httpPerInstanceConcurrency int = 32

@description('Origins browsers may call the API from (SPOTGATE_CORS_ALLOWED_ORIGINS, a JSON list). Empty: no CORS headers, browsers refuse cross-origin calls.')
param corsAllowedOrigins array = []

@description('The worker VM size: what a worker-hour is priced as in usage reports (SPOTGATE_DEFAULT_SKU).')
param workerVmSize string

@description('True when the vault holds a spillover key: then SPILLOVER_API_KEY references it.')
param spilloverEnabled bool = false

@description('Entra ID tenant whose access tokens with the admin app role open the operator routes (empty: off, admin key only).')
param entraTenantId string = ''

@description('Audience those Entra ID admin tokens must carry: the app registration\'s client id or api:// URI (empty: off).')
param entraAdminAudience string = ''

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

var normalizedLocation = toLower(replace(location, ' ', ''))

var baseSettings = [
  // --- the Functions host: identity-based storage (no connection string, no key) ---
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identity.properties.clientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.properties.primaryEndpoints.table
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'Authorization=AAD;ClientId=${identity.properties.clientId}'
  }
  {
    // DefaultAzureCredential picks the user-assigned identity by this.
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    // FastAPI request/response types (HTTP streams) need worker indexing at init.
    name: 'PYTHON_ENABLE_INIT_INDEXING'
    value: '1'
  }
  {
    // Read by the Durable blueprint while indexing (not a Settings field): the watchdog timer
    // does not also fire at every host start. On Flex Consumption hosts start on every
    // scale-out and restart; the every-minute schedule alone keeps the monitors alive.
    name: 'SPOTGATE_WATCHDOG_RUN_ON_STARTUP'
    value: 'false'
  }
  // --- spotgate (spotgate.settings.Settings reads SPOTGATE_<FIELD>) ---
  {
    name: 'SPOTGATE_COMPUTE'
    value: 'azure'
  }
  {
    name: 'SPOTGATE_AZURE_SUBSCRIPTION_ID'
    value: subscription().subscriptionId
  }
  {
    name: 'SPOTGATE_AZURE_RESOURCE_GROUP'
    value: resourceGroup().name
  }
  {
    name: 'SPOTGATE_POOLS'
    value: string(pools)
  }
  {
    name: 'SPOTGATE_MODELS'
    value: string(models)
  }
  {
    name: 'SPOTGATE_ZONES'
    value: string(zones)
  }
  {
    name: 'SPOTGATE_MIN_WORKERS'
    value: string(minWorkers)
  }
  {
    // a registration naming any other address (metadata, other hosts) is refused
    name: 'SPOTGATE_WORKER_NETWORKS'
    value: string(workerNetworks)
  }
  {
    name: 'SPOTGATE_MAX_WORKERS'
    value: string(maxWorkers)
  }
  {
    name: 'SPOTGATE_PUBLIC_URL'
    value: 'https://${functionAppName}.azurewebsites.net'
  }
  {
    // The package mount is read-only; anything local goes to the instance's temp space.
    name: 'SPOTGATE_DATA_DIR'
    value: '/tmp/spotgate'
  }
  {
    name: 'SPOTGATE_STORE_BACKEND'
    value: 'cosmos'
  }
  {
    name: 'SPOTGATE_CACHE_BACKEND'
    value: 'cosmos'
  }
  {
    name: 'SPOTGATE_COSMOS_ENDPOINT'
    value: cosmos.properties.documentEndpoint
  }
  {
    name: 'SPOTGATE_COSMOS_DATABASE'
    value: cosmosDatabaseName
  }
  {
    name: 'SPOTGATE_BATCH_QUEUE_ACCOUNT_URL'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    // batch input and output files (Storage Blob Data Owner on the account: roles.bicep)
    name: 'SPOTGATE_BATCH_FILES_ACCOUNT_URL'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'SPOTGATE_BATCH_FILES_CONTAINER'
    value: batchFilesContainerName
  }
  {
    name: 'SPOTGATE_MONITOR_METRICS_ENDPOINT'
    value: 'https://${normalizedLocation}.metrics.monitor.azure.com'
  }
  {
    name: 'SPOTGATE_MONITOR_GATEWAY_RESOURCE_ID'
    value: appInsights.id
  }
  {
    // usage reports price worker-hours as this SKU in this region (spotgate/costs/gpu_prices.csv)
    name: 'SPOTGATE_DEFAULT_SKU'
    value: workerVmSize
  }
  {
    name: 'SPOTGATE_PRICE_REGION'
    value: normalizedLocation
  }
  {
    // where the SecretStore reads admin-key, fleet-token, key-salt, … (a URL, not a secret)
    name: 'SPOTGATE_KEY_VAULT_URL'
    value: vault.properties.vaultUri
  }
  {
    // empty (with the audience): Entra ID admin tokens are off
    name: 'SPOTGATE_ENTRA_TENANT_ID'
    value: entraTenantId
  }
  {
    name: 'SPOTGATE_ENTRA_ADMIN_AUDIENCE'
    value: entraAdminAudience
  }
  {
    // browser clients: origins allowed by the app's CORS handling (empty list: off)
    name: 'SPOTGATE_CORS_ALLOWED_ORIGINS'
    value: string(corsAllowedOrigins)
  }
  // --- secrets: Key Vault references, resolved by the platform with keyVaultReferenceIdentity ---
  {
    name: 'SPOTGATE_ADMIN_KEY'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=admin-key)'
  }
  {
    name: 'SPOTGATE_FLEET_TOKEN'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=fleet-token)'
  }
  {
    name: 'SPOTGATE_API_KEYS'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=api-keys)'
  }
]

// A model catalogue entry names this variable in `api_key_env` to use the spillover key.
var spilloverSettings = [
  {
    name: 'SPILLOVER_API_KEY'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=spillover-api-key)'
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    virtualNetworkSubnetId: subnetId
    keyVaultReferenceIdentity: identity.id
    // No ftpsState (nor linuxFxVersion, alwaysOn, use32BitWorkerProcess, ...): Flex Consumption
    // has no FTP and rejects those siteConfig properties (ARM 51021, "... for Flex Consumption
    // sites is invalid"); the runtime and scale live in functionAppConfig.
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      appSettings: concat(baseSettings, spilloverEnabled ? spilloverSettings : [])
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: [
          {
            name: 'durable'
            instanceCount: durableAlwaysReady
          }
        ]
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No basic (user name + password) publishing: FTP and the SCM/Kudu endpoint accept Entra ID
// only (azd deploys with the signed-in identity).
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output functionAppName string = site.name
output defaultHostName string = site.properties.defaultHostName
output url string = 'https://${site.properties.defaultHostName}'
