// User-assigned managed identities: one for the Function app, one for the GPU workers.
// User-assigned (not system-assigned) so roles can be granted before the app and the
// scale sets exist, and so a scale set's VMs keep the same identity across rebuilds.

param location string
param tags object = {}
param functionsIdentityName string
param workersIdentityName string

resource functionsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: functionsIdentityName
  location: location
  tags: tags
}

resource workersIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: workersIdentityName
  location: location
  tags: tags
}

output functionsIdentityName string = functionsIdentity.name
output functionsIdentityId string = functionsIdentity.id
output functionsPrincipalId string = functionsIdentity.properties.principalId
output functionsClientId string = functionsIdentity.properties.clientId
output workersIdentityName string = workersIdentity.name
output workersIdentityId string = workersIdentity.id
output workersPrincipalId string = workersIdentity.properties.principalId
output workersClientId string = workersIdentity.properties.clientId
