// spotgate on Azure: the control plane (Function app on Flex Consumption, Durable Functions),
// its data (Cosmos DB serverless, Storage), secrets (Key Vault), telemetry (Log Analytics +
// Application Insights), the network, and the GPU worker pool (spot + on-demand VM Scale Sets).
// Deployed by `azd up` at subscription scope: it creates the resource group too.
// No output carries a secret: read them from the vault (see bicep/README.md).

targetScope = 'subscription'

// ------------------------------------------------------------------------------------------
// Environment
// ------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('azd environment name: names the resource group and seeds every other name.')
param environmentName string

@minLength(1)
@description('Region of every resource (Flex Consumption, availability zones and the GPU SKU must all be offered there).')
param location string

@description('Object id of the deploying user or service principal (azd: AZURE_PRINCIPAL_ID). Gets Key Vault Secrets Officer and Cosmos DB data access. Empty: none.')
param principalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

// Name overrides (empty: derived from environmentName).
param resourceGroupName string = ''
param functionAppName string = ''
param storageAccountName string = ''
param cosmosAccountName string = ''
param keyVaultName string = ''
param logAnalyticsName string = ''
param appInsightsName string = ''

// ------------------------------------------------------------------------------------------
// The worker pool
// ------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(40)
@description('Pool name (lowercase letters, digits, hyphens: it names a storage queue and scale sets).')
param pool string = 'default'

@description('Model name the workers serve (what clients put in `model`).')
param model string = 'qwen2.5-7b-instruct'

@description('Where vLLM loads the model from: a Hugging Face repo id (or a path baked into the image).')
param modelSource string = 'Qwen/Qwen2.5-7B-Instruct'

// vllm/vllm-openai:v0.11.0 as published on Docker Hub (the multi-arch index digest). The
// workers pull it from the registry this template creates; `az acr import` copies it there with
// the same digest (the postprovision hook does, README: Deploy to Azure). A new pin: check it
// with `docker buildx imagetools inspect vllm/vllm-openai:<tag>` and set SPOTGATE_VLLM_IMAGE.
@description('vLLM OpenAI-server image inside the deployment\'s container registry, pinned by digest: repository[:tag]@sha256:<digest> (azd: SPOTGATE_VLLM_IMAGE).')
param vllmImage string = 'vllm/vllm-openai:v0.11.0@sha256:014a95f21c9edf6abe0aea6b07353f96baa4ec291c427bb1176dc7c93a85845c'

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('SKU of the container registry the workers pull vLLM from: its download bandwidth is shared by every VM pulling at once.')
param registrySku string = 'Standard'

// No default zones: which zones offer the GPU size differs by region and subscription. The
// preprovision hook asks `az vm list-skus --location <loc> --size <workerVmSize>
// --query "[].locationInfo[].zones"` (less zones restricted for the subscription) and sets
// SPOTGATE_ZONES when it is not set; an empty list stops the deployment below.
@description('Availability zones that get a spot scale set each, comma-separated, e.g. "1,2,3": those where the region offers workerVmSize (az vm list-skus --location <loc> --size <sku> --query "[].locationInfo[].zones"; azd: SPOTGATE_ZONES).')
param workerZones string = ''

@description('Scale sets that already exist, comma-separated, or "none" (the preprovision hook lists them; azd: SPOTGATE_EXISTING_SCALE_SETS): they are updated without sku.capacity, so a re-provision leaves their workers running. Empty on a re-deployment without the hook: every scale set is sent capacity 0.')
param existingScaleSets string = ''

@description('Deploy the on-demand scale set the fleet falls back to when spot is refused.')
param deployOnDemand bool = true

@minValue(0)
param minWorkers int = 0

@minValue(1)
param maxWorkers int = 4

@description('GPU VM size of every worker scale set.')
param workerVmSize string = 'Standard_NC24ads_A100_v4'

@description('Worker image: an Ubuntu HPC image with the NVIDIA driver, CUDA and a container runtime.')
param workerImagePublisher string = 'microsoft-dsvm'
param workerImageOffer string = 'ubuntu-hpc'
param workerImageSku string = '2204'
param workerImageVersion string = 'latest'

@minValue(64)
param workerOsDiskSizeGB int = 256

param workerAdminUsername string = 'azureuser'

@minLength(1)
@description('SSH public key for the workers\' admin user; password login is disabled (azd: SPOTGATE_WORKER_SSH_PUBLIC_KEY).')
param workerSshPublicKey string

@allowed([
  'scaleSets'
  'resourceGroup'
])
@description('Scope of the fleet manager\'s Virtual Machine Contributor role: each worker scale set (plus a read-only custom role on the group to list them), or the resource group (azd: SPOTGATE_COMPUTE_ROLE_SCOPE).')
param computeRoleScope string = 'scaleSets'

@description('Require vLLM\'s API key (Key Vault secret vllm-api-key) on the workers\' /v1 routes; the gateway reads the same secret and sends it (azd: SPOTGATE_VLLM_API_KEY_REQUIRED).')
param vllmApiKeyRequired bool = true

// ------------------------------------------------------------------------------------------
// Control plane
// ------------------------------------------------------------------------------------------

@allowed([
  512
  2048
  4096
])
param functionsInstanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
param functionsMaximumInstanceCount int = 40

@minValue(1)
@maxValue(1000)
@description('HTTP requests (streams included) one Function app instance serves at once before Flex Consumption adds one; see modules/functions.bicep (azd: SPOTGATE_HTTP_PER_INSTANCE_CONCURRENCY).')
param httpPerInstanceConcurrency int = 32

@description('Origins browser clients may call the API from, comma-separated (e.g. "https://chat.example.com"); empty: CORS off (azd: SPOTGATE_CORS_ALLOWED_ORIGINS).')
param corsAllowedOrigins string = ''

@description('Storage (blob, queue, table) and Cosmos DB behind private endpoints in the VNet, public network access off (azd: SPOTGATE_PRIVATE_NETWORKING). Key Vault stays public with RBAC.')
param privateNetworking bool = true

@description('Key Vault purge protection (irreversible). Turn on for production.')
param enablePurgeProtection bool = false

@description('Entra ID tenant whose access tokens with the admin app role open the operator routes (empty: admin key only).')
param entraTenantId string = ''

@description('Audience (app id or api:// URI) those Entra ID tokens must be issued for.')
param entraAdminAudience string = ''

@description('Send the subscription\'s Activity Log (Administrative) to the workspace, where operators query spot evictions and scale-set operations.')
param exportActivityLog bool = true

@description('Email address(es), comma-separated, that the alert rules notify (azd: SPOTGATE_ALERT_EMAIL). Empty: the rules still fire (Azure Monitor > Alerts), but nobody is emailed.')
param alertEmail string = ''

// ------------------------------------------------------------------------------------------
// Secrets: generated on first deployment (newGuid is legal only as a parameter default).
// azd passes the vault's current values back in (main.parameters.json), so a re-provision
// keeps them instead of rotating every key.
// ------------------------------------------------------------------------------------------

@secure()
@description('Operator key for /fleet and the orchestration endpoints.')
param adminKey string = 'sg-admin-${newGuid()}'

@secure()
@description('Token the worker agents present to the control plane.')
param fleetToken string = 'sg-fleet-${newGuid()}'

@secure()
@description('Salt API keys are hashed with (Key Vault secret key-salt).')
param keySalt string = 'sg-salt-${newGuid()}'

@secure()
@description('The first client API key (SPOTGATE_API_KEYS holds it as a JSON list).')
param apiKey string = 'sk-sg-${newGuid()}'

@secure()
@description('Key of a paid OpenAI-compatible spillover endpoint (optional).')
param spilloverApiKey string = ''

@secure()
@description('Key vLLM requires on the workers (Key Vault secret vllm-api-key).')
param vllmApiKey string = 'sg-vllm-${newGuid()}'

@description('True when the vault already holds api-keys (the preprovision hook checks; azd: SPOTGATE_API_KEYS_SECRET_EXISTS): then it is left as the operators keep it, never reset to the first key.')
param apiKeysSecretExists bool = false

// ------------------------------------------------------------------------------------------
// Names
// ------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'spotgate'
}

var names = {
  resourceGroup: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  functionApp: empty(functionAppName) ? 'func-${resourceToken}' : functionAppName
  plan: 'plan-${resourceToken}'
  storage: empty(storageAccountName) ? 'st${resourceToken}' : storageAccountName
  cosmos: empty(cosmosAccountName) ? 'cosmos-${resourceToken}' : cosmosAccountName
  keyVault: empty(keyVaultName) ? 'kv-${resourceToken}' : keyVaultName
  logAnalytics: empty(logAnalyticsName) ? 'log-${resourceToken}' : logAnalyticsName
  appInsights: empty(appInsightsName) ? 'appi-${resourceToken}' : appInsightsName
  vnet: 'vnet-${resourceToken}'
  workersNsg: 'nsg-workers-${resourceToken}'
  natGateway: 'nat-${resourceToken}'
  natPublicIp: 'pip-nat-${resourceToken}'
  functionsIdentity: 'id-func-${resourceToken}'
  workersIdentity: 'id-workers-${resourceToken}'
  registry: 'cr${resourceToken}'
  scaleSetPrefix: 'vmss-${pool}'
}

// "1,2,3"; a JSON list ('["1","2","3"]', the app setting's form) reads the same.
var zoneList = filter(split(replace(replace(replace(replace(workerZones, ' ', ''), '"', ''), '[', ''), ']', ''), ','), zone => !empty(zone))
var zones = empty(zoneList) ? fail('No availability zone for the spot scale sets (workerZones is empty). List the zones where the region offers the GPU size: az vm list-skus --location <location> --size <workerVmSize> --query "[].locationInfo[].zones" -o tsv, then: azd env set SPOTGATE_ZONES "1,2,3" (those zones).') : zoneList
var existingScaleSetNames = filter(split(replace(existingScaleSets, ' ', ''), ','), name => !empty(name) && name != 'none')
var corsOrigins = filter(split(replace(corsAllowedOrigins, ' ', ''), ','), origin => !empty(origin))
var vllmImagePinned = contains(vllmImage, '@sha256:') ? vllmImage : fail('vllmImage must be pinned by digest (repository[:tag]@sha256:<digest>), not a tag alone: a tag can move under running workers.')

// The control plane's address, known before the app exists (workers are built first).
var controlPlaneUrl = 'https://${names.functionApp}.azurewebsites.net'
var fleetTokenSecretName = 'fleet-token'
var vllmApiKeySecretName = 'vllm-api-key'
var activityLogSettingName = 'spotgate-${environmentName}-activity'

// ------------------------------------------------------------------------------------------
// Resources
// ------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  scope: rg
  params: {
    location: location
    tags: tags
    functionsIdentityName: names.functionsIdentity
    workersIdentityName: names.workersIdentity
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
  }
}

// Alert rules (thresholds: parameters of alerts.bicep) and, when alertEmail is set, the action
// group that emails them. The workbook is deployed by the monitoring module. README: Operations.
module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: 'spotgate-${environmentName}'
    appInsightsName: monitoring.outputs.appInsightsName
    cosmosAccountName: cosmos.outputs.accountName
    pools: [
      pool
    ]
    alertEmail: alertEmail
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    vnetName: names.vnet
    nsgName: names.workersNsg
    natGatewayName: names.natGateway
    natPublicIpName: names.natPublicIp
    privateNetworking: privateNetworking
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    storageAccountName: names.storage
    pools: [
      pool
    ]
    privateNetworking: privateNetworking
    privateEndpointSubnetId: network.outputs.privateEndpointsSubnetId
    privateDnsZoneIds: network.outputs.privateDnsZoneIds
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    location: location
    tags: tags
    accountName: names.cosmos
    functionsPrincipalId: identities.outputs.functionsPrincipalId
    principalId: principalId
    privateNetworking: privateNetworking
    privateEndpointSubnetId: network.outputs.privateEndpointsSubnetId
    privateDnsZoneId: network.outputs.privateDnsZoneIds.cosmos
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    keyVaultName: names.keyVault
    enablePurgeProtection: enablePurgeProtection
    adminKey: adminKey
    fleetToken: fleetToken
    keySalt: keySalt
    apiKey: apiKey
    spilloverApiKey: spilloverApiKey
    vllmApiKey: vllmApiKey
    vllmApiKeySecretName: vllmApiKeySecretName
    createApiKeysList: !apiKeysSecretExists
  }
}

module workers 'modules/workers.bicep' = {
  name: 'workers'
  scope: rg
  params: {
    location: location
    tags: tags
    pool: pool
    namePrefix: names.scaleSetPrefix
    zones: zones
    existingScaleSetNames: existingScaleSetNames
    deployOnDemand: deployOnDemand
    vmSize: workerVmSize
    imagePublisher: workerImagePublisher
    imageOffer: workerImageOffer
    imageSku: workerImageSku
    imageVersion: workerImageVersion
    osDiskSizeGB: workerOsDiskSizeGB
    adminUsername: workerAdminUsername
    sshPublicKey: workerSshPublicKey
    subnetId: network.outputs.workersSubnetId
    identityName: identities.outputs.workersIdentityName
    controlPlaneUrl: controlPlaneUrl
    keyVaultUrl: keyVault.outputs.vaultUri
    fleetTokenSecretName: fleetTokenSecretName
    model: model
    modelSource: modelSource
    vllmImage: vllmImagePinned
    registryName: names.registry
    registrySku: registrySku
    vllmApiKeySecretName: vllmApiKeyRequired ? vllmApiKeySecretName : ''
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    functionsPrincipalId: identities.outputs.functionsPrincipalId
    workersPrincipalId: identities.outputs.workersPrincipalId
    principalId: principalId
    principalType: principalType
    storageAccountName: storage.outputs.storageAccountName
    keyVaultName: keyVault.outputs.keyVaultName
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    appInsightsName: monitoring.outputs.appInsightsName
    workersIdentityName: identities.outputs.workersIdentityName
    vnetName: network.outputs.vnetName
    workersSubnetName: network.outputs.workersSubnetName
    workerScaleSetNames: concat(workers.outputs.spotScaleSetNames, workers.outputs.onDemandScaleSetNames)
    computeRoleScope: computeRoleScope
    fleetTokenSecretName: fleetTokenSecretName
    vllmApiKeySecretName: vllmApiKeySecretName
    registryName: workers.outputs.registryName
  }
}

// The app comes last, once its roles exist: Key Vault references and identity-based
// AzureWebJobsStorage are resolved when the site starts.
module functions 'modules/functions.bicep' = {
  name: 'functions'
  scope: rg
  dependsOn: [
    roles
  ]
  params: {
    location: location
    tags: tags
    functionAppName: names.functionApp
    planName: names.plan
    identityName: identities.outputs.functionsIdentityName
    storageAccountName: storage.outputs.storageAccountName
    deploymentContainerName: storage.outputs.deploymentContainerName
    batchFilesContainerName: storage.outputs.batchFilesContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.keyVaultName
    cosmosAccountName: cosmos.outputs.accountName
    cosmosDatabaseName: cosmos.outputs.databaseName
    subnetId: network.outputs.functionsSubnetId
    pools: [
      pool
    ]
    models: [
      model
    ]
    zones: zones
    minWorkers: minWorkers
    maxWorkers: maxWorkers
    workerNetworks: [
      network.outputs.workersSubnetPrefix
    ]
    instanceMemoryMB: functionsInstanceMemoryMB
    maximumInstanceCount: functionsMaximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    corsAllowedOrigins: corsOrigins
    spilloverEnabled: !empty(spilloverApiKey)
    workerVmSize: workerVmSize
    entraTenantId: entraTenantId
    entraAdminAudience: entraAdminAudience
  }
}

// Spot evictions and scale-set operations are logged in the subscription's Activity Log;
// exported to the workspace, operators can query them (AzureActivity) beside the app's logs.
// A subscription-level resource: `azd down` deletes the resource group, not this; the postdown
// hook (bicep/hooks/postdown.*) deletes it by the name in SPOTGATE_ACTIVITY_LOG_SETTING.
resource activityLogExport 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (exportActivityLog) {
  name: activityLogSettingName
  properties: {
    workspaceId: monitoring.outputs.logAnalyticsId
    logs: [
      {
        category: 'Administrative'
        enabled: true
      }
    ]
  }
}

// ------------------------------------------------------------------------------------------
// Outputs (azd stores them in the environment's .env). Names and endpoints only.
// ------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functions.outputs.functionAppName
output SPOTGATE_URL string = functions.outputs.url
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.keyVaultName
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.vaultUri
output AZURE_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output AZURE_COSMOS_DATABASE string = cosmos.outputs.databaseName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.storageAccountName
output AZURE_LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.appInsightsName
output SPOTGATE_POOL string = pool
output SPOTGATE_WORKER_SCALE_SETS array = concat(workers.outputs.spotScaleSetNames, workers.outputs.onDemandScaleSetNames)
output SPOTGATE_OUTBOUND_IP string = network.outputs.natPublicIpAddress
output AZURE_CONTAINER_REGISTRY_NAME string = workers.outputs.registryName
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = workers.outputs.registryLoginServer
output SPOTGATE_VLLM_IMAGE_REFERENCE string = workers.outputs.vllmImageReference
output SPOTGATE_ACTIVITY_LOG_SETTING string = exportActivityLog ? activityLogSettingName : ''
