// Key Vault (RBAC authorization) holding the deployment's secrets. Their values come from
// @secure() parameters of main.bicep (generated on the first `azd up`); nothing here outputs
// a value. Readers: the Function app (Key Vault references in its app settings, and its
// SecretStore, which reads the vault itself so a rotation needs no restart) and the workers
// (the fleet token and vLLM's API key only), granted in roles.bicep.
//
// Public network access with RBAC, on purpose: Flex Consumption resolves Key Vault references
// from the platform, not from the app's VNet, and the workers read their two secrets over the
// NAT gateway. Every read is an Entra ID token checked against a role on the vault or secret.

param location string
param tags object = {}
param keyVaultName string

@description('Purge protection: once on, it cannot be turned off, and a deleted vault\'s name stays taken for the retention period. Turn on for production.')
param enablePurgeProtection bool = false

@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 7

@secure()
param adminKey string

@secure()
param fleetToken string

@secure()
@description('Salt the gateway hashes API keys with (read through its SecretStore as key-salt).')
param keySalt string

@secure()
@description('The first client API key; the vault holds it, and the JSON list the gateway reads.')
param apiKey string

@secure()
@description('Key of the paid spillover endpoint (optional; empty: no secret is written).')
param spilloverApiKey string = ''

@secure()
@description('The key vLLM requires on /v1 (secret vllm-api-key), read by the workers at boot.')
param vllmApiKey string

@description('Name of that secret (main.bicep passes it to the workers too).')
param vllmApiKeySecretName string = 'vllm-api-key'

@description('Write the api-keys list: only when it does not exist yet (the preprovision hook checks). Operators add keys to that list; a re-provision must not reset it.')
param createApiKeysList bool = true

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Only `true` or absent are accepted; `false` is refused by the service.
    enablePurgeProtection: enablePurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource adminKeyItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'admin-key'
  properties: {
    value: adminKey
    contentType: 'text/plain'
  }
}

resource fleetTokenItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'fleet-token'
  properties: {
    value: fleetToken
    contentType: 'text/plain'
  }
}

resource keySaltItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'key-salt'
  properties: {
    value: keySalt
    contentType: 'text/plain'
  }
}

// The single key, so azd's secretOrRandomPassword can read it back on the next provision.
resource apiKeyItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'api-key'
  properties: {
    value: apiKey
    contentType: 'text/plain'
  }
}

// SPOTGATE_API_KEYS is a JSON list of keys, seeded with the first key once and owned by the
// operators from then on (never rewritten by a re-provision).
resource apiKeysItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (createApiKeysList) {
  parent: vault
  name: 'api-keys'
  properties: {
    value: string([
      apiKey
    ])
    contentType: 'application/json'
  }
}

resource vllmApiKeyItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: vllmApiKeySecretName
  properties: {
    value: vllmApiKey
    contentType: 'text/plain'
  }
}

resource spilloverKeyItem 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(spilloverApiKey)) {
  parent: vault
  name: 'spillover-api-key'
  properties: {
    value: spilloverApiKey
    contentType: 'text/plain'
  }
}

output keyVaultName string = vault.name
output keyVaultId string = vault.id
output vaultUri string = vault.properties.vaultUri
