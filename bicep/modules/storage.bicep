// The storage account behind the Function app: Durable Functions' task hub (blobs, queues,
// tables), the Flex Consumption deployment container, the batch-job queue of the pool
// (`spotgate-batch-{pool}`, counted by the autoscaler) and the container of batch input and
// output files (`spotgate-files`, blob_file_store.py). Shared keys are off: every client
// (the Functions host included) signs in with Entra ID.
//
// privateNetworking (the default): public network access is off and the account is reached
// through private endpoints for blob, queue and table in the VNet (DNS zones in network.bicep).
// Nothing outside the VNet reaches the data (the Function app is VNet-integrated; `azd deploy`
// publishes through the app's SCM endpoint, which writes the package from inside). ARM
// (containers, queues) is the control plane and is unaffected.

param location string
param tags object = {}
param storageAccountName string
param deploymentContainerName string = 'app-package'

@description('Container of the Batch API\'s input and output files (SPOTGATE_BATCH_FILES_CONTAINER).')
param batchFilesContainerName string = 'spotgate-files'

@description('Private endpoints for blob, queue and table, and public network access off.')
param privateNetworking bool = true

@description('Subnet of the private endpoints (network.bicep: snet-private-endpoints).')
param privateEndpointSubnetId string = ''

@description('Private DNS zone ids by group: blob, queue, table (network.bicep).')
param privateDnsZoneIds object = {}

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
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// One private endpoint per service the Functions host and the app use (Durable's task hub is
// blobs, queues and tables). An empty loop when privateNetworking is off.
var privateServices = privateNetworking ? [
  'blob'
  'queue'
  'table'
] : []

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for service in privateServices: {
  name: 'pe-${storageAccountName}-${service}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: service
        properties: {
          privateLinkServiceId: storage.id
          groupIds: [
            service
          ]
        }
      }
    ]
  }
}]

resource privateDnsZoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (service, i) in privateServices: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: service
        properties: {
          privateDnsZoneId: privateDnsZoneIds[service]
        }
      }
    ]
  }
}]

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

// Users' batch inputs and results: private, read and written by the Function app's identity only.
resource batchFilesContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: batchFilesContainerName
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
output batchFilesContainerName string = batchFilesContainer.name
