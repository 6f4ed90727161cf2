// Cosmos DB (NoSQL, serverless) for the response cache, the worker registry, the fleet
// journal, API keys, usage, rate-limit counters, batches and their line results. Local (key) auth is off: clients use
// Entra ID and the data-plane role below.
//
// The data-plane role assignments live here, not in roles.bicep: Cosmos DB's data-plane
// RBAC is its own resource type (Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments)
// with its own role definitions, not Microsoft.Authorization/roleAssignments.
//
// privateNetworking (the default): public network access is off and the account is reached
// through a private endpoint (group Sql) in the VNet, registered in privatelink.documents.azure.com
// (network.bicep). The data plane is then reachable only from the VNet: the `spotgate` CLI and
// the Data Explorer from a workstation need privateNetworking off (or a VPN into the VNet).

param location string
param tags object = {}
param accountName string
param databaseName string = 'spotgate'

@description('Principal id of the Function app\'s managed identity.')
param functionsPrincipalId string

@description('Principal id of the deploying user (optional): gets the same data access, for `spotgate` CLI use and debugging.')
param principalId string = ''

@description('A private endpoint (Sql) and public network access off.')
param privateNetworking bool = true

@description('Subnet of the private endpoint (network.bicep: snet-private-endpoints).')
param privateEndpointSubnetId string = ''

@description('Id of the privatelink.documents.azure.com zone (network.bicep).')
param privateDnsZoneId string = ''

@description('Seconds the fleet journal keeps an entry that carries no `ttl` of its own.')
param journalTtlSeconds int = 604800

// Built-in "Cosmos DB Built-in Data Contributor" (data plane).
var dataContributorRoleId = '00000000-0000-0000-0000-000000000002'

var indexEverything = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    {
      path: '/*'
    }
  ]
  excludedPaths: [
    {
      path: '/"_etag"/?'
    }
  ]
}

// The cache (and the worker registry) are read by id only: indexing would cost RUs for nothing.
var indexNothing = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: []
  excludedPaths: [
    {
      path: '/*'
    }
  ]
}

// The journal is queried on kind and pool and ordered by seq; nothing else is indexed.
// (spotgate/adapters/azure/cosmos_fleet_journal.py: JOURNAL_INDEXING_POLICY)
var journalIndexing = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    {
      path: '/kind/?'
    }
    {
      path: '/pool/?'
    }
    {
      path: '/at/?'
    }
    {
      path: '/seq/?'
    }
  ]
  excludedPaths: [
    {
      path: '/*'
    }
  ]
}

// Batches are queried on owner (listing), status (the active ones) and created_at; their line
// results on batch_id, index (read in order) and succeeded (counted). A result holds a whole
// completion: indexing it would cost RUs on every write. (cosmos_batch_store.py)
var batchesIndexing = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    {
      path: '/owner/?'
    }
    {
      path: '/status/?'
    }
    {
      path: '/created_at/?'
    }
  ]
  excludedPaths: [
    {
      path: '/*'
    }
  ]
}

var batchResultsIndexing = {
  indexingMode: 'consistent'
  automatic: true
  includedPaths: [
    {
      path: '/batch_id/?'
    }
    {
      path: '/index/?'
    }
    {
      path: '/succeeded/?'
    }
  ]
  excludedPaths: [
    {
      path: '/*'
    }
  ]
}

// defaultTtl -1: TTL is on, and an item expires only when it carries its own `ttl`.
// Workers are read whole or by id and upserted on every heartbeat: nothing indexed
// (cosmos_worker_store.py: WORKERS_INDEXING_POLICY).
var containers = [
  {
    name: 'cache'
    partitionKey: '/id'
    defaultTtl: -1
    indexingPolicy: indexNothing
  }
  {
    name: 'workers'
    partitionKey: '/pool'
    defaultTtl: -1
    indexingPolicy: indexNothing
  }
  {
    name: 'journal'
    partitionKey: '/pool'
    defaultTtl: journalTtlSeconds
    indexingPolicy: journalIndexing
  }
  {
    name: 'keys'
    partitionKey: '/id'
    defaultTtl: -1
    indexingPolicy: indexEverything
  }
  {
    name: 'usage'
    partitionKey: '/key_id'
    defaultTtl: -1
    indexingPolicy: indexEverything
  }
  // Rate-limit and budget counters: patched, created and replaced by id only, each item
  // carrying its own `ttl` (cosmos_tenancy.py: LIMITS_INDEXING_POLICY).
  {
    name: 'limits'
    partitionKey: '/id'
    defaultTtl: -1
    indexingPolicy: indexNothing
  }
  // Batch API: one item per batch, and one per finished line (id = its index), created once.
  {
    name: 'batches'
    partitionKey: '/id'
    defaultTtl: -1
    indexingPolicy: batchesIndexing
  }
  {
    name: 'batch_results'
    partitionKey: '/batch_id'
    defaultTtl: -1
    indexingPolicy: batchResultsIndexing
  }
]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (privateNetworking) {
  name: 'pe-${accountName}-sql'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'sql'
        properties: {
          privateLinkServiceId: account.id
          groupIds: [
            'Sql'
          ]
        }
      }
    ]
  }
}

resource privateDnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (privateNetworking) {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'cosmos'
        properties: {
          privateDnsZoneId: privateDnsZoneId
        }
      }
    ]
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource containerResources 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [for c in containers: {
  parent: database
  name: c.name
  properties: {
    resource: {
      id: c.name
      partitionKey: {
        paths: [
          c.partitionKey
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: c.defaultTtl
      indexingPolicy: c.indexingPolicy
    }
  }
}]

resource functionsDataAccess 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: account
  name: guid(account.id, functionsPrincipalId, dataContributorRoleId)
  properties: {
    principalId: functionsPrincipalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributorRoleId}'
    scope: account.id
  }
}

resource userDataAccess 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = if (!empty(principalId)) {
  parent: account
  name: guid(account.id, principalId, dataContributorRoleId)
  properties: {
    principalId: principalId
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributorRoleId}'
    scope: account.id
  }
}

output accountName string = account.name
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
