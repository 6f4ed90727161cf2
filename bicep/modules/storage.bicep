// The storage account behind the Function app: Durable Functions' task hub (blobs, queues,
// tables), the Flex Consumption deployment container, and the batch-job queue of the pool
// (`spotgate-batch-{pool}`, counted by the autoscaler). Shared keys are off: every client
// (the Functions host included) signs in with Entra ID.

param location string
param tags object = {}
param storageAccountName string
param deploymentContainerName string = 'app-package'

@description('Pools whose batch queue `spotgate-batch-{pool}` is created.')
param pools array = [
  'default'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Child resources are declared with `parent:` rather than nested: pycep keeps only the last
// of several nested children, and the offline tests read these.
resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueServices 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tableServices 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource batchQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for pool in pools: {
  parent: queueServices
  name: 'spotgate-batch-${pool}'
}]

output storageAccountName string = storage.name
output storageAccountId string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
