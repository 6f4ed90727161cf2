// Every Azure RBAC role assignment of the deployment, in one place (see bicep/README.md for the
// table). Names are guid(scope, principal, role), so redeploying is idempotent.
// Cosmos DB data-plane access is not here: it is a different resource type
// (Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments), assigned in cosmos.bicep.

@description('Principal id of the Function app\'s user-assigned identity.')
param functionsPrincipalId string

@description('Principal id of the GPU workers\' user-assigned identity.')
param workersPrincipalId string

@description('Principal id of the deploying user (azd sets AZURE_PRINCIPAL_ID); empty: none.')
param principalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

param storageAccountName string
param keyVaultName string
param logAnalyticsName string
param appInsightsName string
param workersIdentityName string
param vnetName string
param workersSubnetName string

@description('Names of the worker scale sets the fleet manager scales and deletes VMs of.')
param workerScaleSetNames array

@description('Where the fleet manager gets Virtual Machine Contributor: each worker scale set and the workers subnet (least privilege, the default), or the whole resource group (if scale-set scope proves too narrow for Flexible VMs, NICs and disks).')
@allowed([
  'scaleSets'
  'resourceGroup'
])
param computeRoleScope string = 'scaleSets'

@description('Name of the fleet token secret, one of the two secrets the workers may read.')
param fleetTokenSecretName string = 'fleet-token'

@description('Name of vLLM\'s API key secret, the other one.')
param vllmApiKeySecretName string = 'vllm-api-key'

@description('The container registry the workers pull the vLLM image from.')
param registryName string

var scaleSetScoped = (computeRoleScope == 'scaleSets') ? workerScaleSetNames : []

// What the fleet manager lists across the group when its Virtual Machine Contributor is scoped
// to the scale sets: the scale sets (found by tag), their Flexible VMs and those VMs' NICs (the
// private IPs). Read only, three resource types: not Reader, which reads everything. With
// computeRoleScope 'resourceGroup' the group-wide Virtual Machine Contributor covers these.
var fleetReaderActions = [
  'Microsoft.Compute/virtualMachineScaleSets/read'
  'Microsoft.Compute/virtualMachines/read'
  'Microsoft.Network/networkInterfaces/read'
]
var fleetReaderDefinitions = (computeRoleScope == 'scaleSets') ? [
  'fleet-reader'
] : []

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  virtualMachineContributor: '9980e02c-c2be-4d73-94e8-173b1dc7cf3c'
  monitoringReader: '43d0d8ad-25c7-4714-9337-8ba259a9fe05'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  managedIdentityOperator: 'f1a07417-d97a-45cb-824c-7a7467783830'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource fleetTokenItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: fleetTokenSecretName
}

resource vllmApiKeyItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: vllmApiKeySecretName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource workersIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: workersIdentityName
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: vnetName
}

resource workersSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: workersSubnetName
}

resource scaleSets 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' existing = [for name in workerScaleSetNames: {
  name: name
}]

// ---------------------------------------------------------------------------------------------
// The Function app's identity
// ---------------------------------------------------------------------------------------------

// Durable Functions' task hub, the Flex Consumption deployment package and the Batch API's
// files (blobs). Owner, not Contributor: the task hub's lease blobs need it.
resource functionsBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionsPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Durable's control and work-item queues, and the batch queues: lines sent, taken, deleted
// and counted by the autoscaler.
resource functionsQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionsPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Durable's history and instance tables.
resource functionsTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionsPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault references in the app settings (admin key, fleet token, API keys, spillover key).
resource functionsSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionsPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Scale the worker scale sets out (capacity) and delete drained VMs, one scale set at a time...
// (The loop runs over an empty list in 'resourceGroup' mode rather than `for ...: if`, which
// pycep cannot parse.)
resource functionsVmContributorOnScaleSets 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(scaleSetScoped)): {
  name: guid(scaleSets[i].id, functionsPrincipalId, roles.virtualMachineContributor)
  scope: scaleSets[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.virtualMachineContributor)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// ...which places new VMs' NICs in the workers subnet: ARM checks subnets/join/action there.
resource functionsVmContributorOnSubnet 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (computeRoleScope == 'scaleSets') {
  name: guid(workersSubnet.id, functionsPrincipalId, roles.virtualMachineContributor)
  scope: workersSubnet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.virtualMachineContributor)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ...and lists the group's scale sets, VMs and NICs (read only, see fleetReaderActions).
resource fleetReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = [for role in fleetReaderDefinitions: {
  name: guid(resourceGroup().id, 'spotgate', role)
  properties: {
    // Role names are unique per tenant: the subscription and the group make this one so.
    roleName: 'spotgate fleet reader (${subscription().subscriptionId}/${resourceGroup().name})'
    description: 'Lists the worker scale sets, their VMs and NICs in one spotgate resource group.'
    type: 'CustomRole'
    permissions: [
      {
        actions: fleetReaderActions
        notActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}]

resource functionsFleetReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (role, i) in fleetReaderDefinitions: {
  name: guid(resourceGroup().id, functionsPrincipalId, role)
  properties: {
    roleDefinitionId: fleetReaderRole[i].id
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Or the resource group as a whole, when computeRoleScope = 'resourceGroup' (it includes the
// reads above, so no other read role is granted).
resource functionsVmContributorOnGroup 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (computeRoleScope == 'resourceGroup') {
  name: guid(resourceGroup().id, functionsPrincipalId, roles.virtualMachineContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.virtualMachineContributor)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// A scale set that carries the workers' identity can only grow if the caller may assign it.
resource functionsIdentityOperator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workersIdentity.id, functionsPrincipalId, roles.managedIdentityOperator)
  scope: workersIdentity
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.managedIdentityOperator)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Eviction signals: the Activity Log in the workspace (query).
resource functionsWorkspaceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, functionsPrincipalId, roles.monitoringReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Load signals: the gateway's custom metrics in Application Insights (metrics:getBatch).
resource functionsAppInsightsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionsPrincipalId, roles.monitoringReader)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringReader)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry ingestion with Entra ID (App Insights has local auth disabled).
resource functionsMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionsPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: functionsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------------
// The GPU workers' identity: the fleet token, vLLM's API key, the vLLM image; nothing else.
// ---------------------------------------------------------------------------------------------

resource workersSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(fleetTokenItem.id, workersPrincipalId, roles.keyVaultSecretsUser)
  scope: fleetTokenItem
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: workersPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workersVllmKeyUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vllmApiKeyItem.id, workersPrincipalId, roles.keyVaultSecretsUser)
  scope: vllmApiKeyItem
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: workersPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workersAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, workersPrincipalId, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: workersPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------------
// The deploying user (optional): manage the secrets (and let azd read them back next time).
// ---------------------------------------------------------------------------------------------

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(vault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: principalId
    principalType: principalType
  }
}
