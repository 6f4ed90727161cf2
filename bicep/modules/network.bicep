// The virtual network: one subnet for the Function app's VNet integration, one for the GPU workers,
// one for private endpoints. Workers get no public IP; their outbound traffic (container images,
// model weights, Key Vault, the control plane) leaves through a NAT gateway. The workers' NSG
// admits only the gateway (the functions subnet) on the vLLM port(s), and nothing else from the
// VNet or the Internet.
//
// With privateNetworking on (the default), the private DNS zones of Storage (blob, queue,
// table) and Cosmos DB are created here and linked to the VNet; storage.bicep and cosmos.bicep
// put their private endpoints in snet-private-endpoints and register them in these zones, so
// the Function app (VNet-integrated) resolves both accounts to private addresses.

param location string
param tags object = {}
param vnetName string
param nsgName string
param natGatewayName string
param natPublicIpName string
param addressPrefix string = '10.60.0.0/16'
param functionsSubnetPrefix string = '10.60.0.0/24'
param workersSubnetPrefix string = '10.60.16.0/20'
param privateEndpointsSubnetPrefix string = '10.60.1.0/24'

@description('Create the private DNS zones for the Storage and Cosmos DB private endpoints, linked to the VNet.')
param privateNetworking bool = true

@description('TCP ports on the workers the gateway may reach: vLLM\'s OpenAI server. The agent listens on none (it only calls out).')
param workerInboundPorts array = [
  '8000'
]

var functionsSubnetName = 'snet-functions'
var workersSubnetName = 'snet-workers'
var privateEndpointsSubnetName = 'snet-private-endpoints'

// The privatelink zone of each private endpoint group (Storage: blob, queue, table; Cosmos DB
// for NoSQL: Sql). Storage's suffix follows the cloud; Cosmos DB's zone is the public cloud's.
var privateDnsZoneNames = {
  blob: 'privatelink.blob.${environment().suffixes.storage}'
  queue: 'privatelink.queue.${environment().suffixes.storage}'
  table: 'privatelink.table.${environment().suffixes.storage}'
  cosmos: 'privatelink.documents.azure.com'
}
var privateDnsZones = privateNetworking ? [
  privateDnsZoneNames.blob
  privateDnsZoneNames.queue
  privateDnsZoneNames.table
  privateDnsZoneNames.cosmos
] : []

resource natPublicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = {
  name: natPublicIpName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

resource natGateway 'Microsoft.Network/natGateways@2024-05-01' = {
  name: natGatewayName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 10
    publicIpAddresses: [
      {
        id: natPublicIp.id
      }
    ]
  }
}

resource workersNsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: nsgName
  location: location
  tags: tags
  properties: {
    securityRules: [
      {
        name: 'AllowGatewayToVllm'
        properties: {
          description: 'The gateway (Function app, VNet-integrated) proxies requests to vLLM on the workers.'
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: functionsSubnetPrefix
          sourcePortRange: '*'
          destinationAddressPrefix: workersSubnetPrefix
          destinationPortRanges: workerInboundPorts
        }
      }
      {
        name: 'DenyOtherVnetInbound'
        properties: {
          description: 'Nothing else inside the VNet (other workers included) reaches a worker.'
          priority: 4000
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'VirtualNetwork'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
      {
        name: 'DenyInternetInbound'
        properties: {
          description: 'No public inbound at all (the workers have no public IP either).'
          priority: 4010
          direction: 'Inbound'
          access: 'Deny'
          protocol: '*'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: '*'
          destinationPortRange: '*'
        }
      }
    ]
  }
}

// Subnets are declared inline, so a redeployment never drops them.
resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: functionsSubnetName
        properties: {
          addressPrefix: functionsSubnetPrefix
          natGateway: {
            id: natGateway.id
          }
          delegations: [
            {
              // Flex Consumption's VNet integration requires this delegation.
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: workersSubnetName
        properties: {
          addressPrefix: workersSubnetPrefix
          defaultOutboundAccess: false
          natGateway: {
            id: natGateway.id
          }
          networkSecurityGroup: {
            id: workersNsg.id
          }
        }
      }
      {
        // Private endpoints of Storage and Cosmos DB (privateNetworking); nothing else lives here.
        name: privateEndpointsSubnetName
        properties: {
          addressPrefix: privateEndpointsSubnetPrefix
          defaultOutboundAccess: false
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

// (A loop over an empty list when privateNetworking is off, rather than `for ...: if`,
// which pycep cannot parse.)
resource dnsZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zone in privateDnsZones: {
  name: zone
  location: 'global'
  tags: tags
}]

resource dnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zone, i) in privateDnsZones: {
  parent: dnsZones[i]
  name: '${vnetName}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

output vnetName string = vnet.name
output functionsSubnetName string = functionsSubnetName
output functionsSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, functionsSubnetName)
output workersSubnetName string = workersSubnetName
output workersSubnetPrefix string = workersSubnetPrefix
output workersSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, workersSubnetName)
output privateEndpointsSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, privateEndpointsSubnetName)
// Ids of the zones (built from their names, so they are known whether or not they exist).
output privateDnsZoneIds object = {
  blob: resourceId('Microsoft.Network/privateDnsZones', privateDnsZoneNames.blob)
  queue: resourceId('Microsoft.Network/privateDnsZones', privateDnsZoneNames.queue)
  table: resourceId('Microsoft.Network/privateDnsZones', privateDnsZoneNames.table)
  cosmos: resourceId('Microsoft.Network/privateDnsZones', privateDnsZoneNames.cosmos)
}
output natPublicIpAddress string = natPublicIp.properties.ipAddress
