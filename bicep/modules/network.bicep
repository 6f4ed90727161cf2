// The virtual network: one subnet for the Function app's VNet integration, one for the GPU workers.
// Workers get no public IP; their outbound traffic (container images, model weights, Key Vault,
// the control plane) leaves through a NAT gateway. The workers' NSG admits only the gateway
// (the functions subnet) on the vLLM port(s), and nothing else from the VNet or the Internet.

param location string
param tags object = {}
param vnetName string
param nsgName string
param natGatewayName string
param natPublicIpName string
param addressPrefix string = '10.60.0.0/16'
param functionsSubnetPrefix string = '10.60.0.0/24'
param workersSubnetPrefix string = '10.60.16.0/20'

@description('TCP ports on the workers the gateway may reach: vLLM\'s OpenAI server. The agent listens on none (it only calls out).')
param workerInboundPorts array = [
  '8000'
]

var functionsSubnetName = 'snet-functions'
var workersSubnetName = 'snet-workers'

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
    ]
  }
}

output vnetName string = vnet.name
output functionsSubnetName string = functionsSubnetName
output functionsSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, functionsSubnetName)
output workersSubnetName string = workersSubnetName
output workersSubnetPrefix string = workersSubnetPrefix
output workersSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, workersSubnetName)
output natPublicIpAddress string = natPublicIp.properties.ipAddress
