// The GPU worker pool: VM Scale Sets (Flexible orchestration) that the fleet manager grows and
// shrinks. The contract with the fleet manager (spotgate/adapters/azure/vmss_layout.py) is the
// tag `spotgate-pool=<pool>`, the profile's priority (Spot or Regular) and `zones`: one spot
// scale set per zone, plus one regional on-demand scale set for fallback. A scale set is
// created empty (capacity 0): capacity belongs to the fleet manager from then on, so one that
// already exists (existingScaleSetNames, listed by the preprovision hook) is updated without
// `sku.capacity` and keeps its running workers.
//
// Each VM boots worker_image/cloud-init.yaml, with the placeholders below filled in. Only
// non-secret values go into customData (anyone who can read the scale set can read it); the
// agent reads the fleet token, and vLLM's start script its API key, from Key Vault with the
// workers' managed identity, and pulls the vLLM image from the registry created here.

param location string
param tags object = {}

@description('Pool name: the `spotgate-pool` tag and the scale set name prefix.')
param pool string = 'default'

@description('Scale set name prefix, e.g. vmss-default.')
param namePrefix string

@description('Zones that get a spot scale set each (main.bicep\'s workerZones, checked non-empty there).')
param zones array

@description('Names of scale sets that already exist: updated without sku.capacity, so a re-provision leaves their VMs alone. Any other is created with capacity 0.')
param existingScaleSetNames array = []

@description('Deploy the on-demand (Regular priority) scale set the fleet falls back to.')
param deployOnDemand bool = true

param vmSize string
param imagePublisher string
param imageOffer string
param imageSku string
param imageVersion string = 'latest'

@minValue(64)
param osDiskSizeGB int = 256

param enableAcceleratedNetworking bool = true

param adminUsername string = 'azureuser'

@description('SSH public key of the VMs\' admin user (password login is disabled).')
param sshPublicKey string

param subnetId string

@description('Name of the workers\' user-assigned identity (reads the fleet token from Key Vault).')
param identityName string

@description('Base URL of the control plane the agent registers with.')
param controlPlaneUrl string

@description('URL of the Key Vault holding the fleet token.')
param keyVaultUrl string

@description('Name of the Key Vault secret the agent reads (the name, not the value).')
param fleetTokenSecretName string = 'fleet-token'

@description('Model name the workers serve and register (what clients ask for).')
param model string

@description('Where vLLM loads the model from (a Hugging Face repo id or a path).')
param modelSource string

@description('vLLM OpenAI-server image inside the registry below, pinned by digest (repository[:tag]@sha256:...); import it with `az acr import` (the postprovision hook does).')
param vllmImage string

@description('Name of the container registry the workers pull vLLM from (alphanumeric, globally unique).')
param registryName string

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
@description('Registry SKU: its download bandwidth is shared by every VM pulling the ~10 GB image at once (Basic is the slowest).')
param registrySku string = 'Standard'

@description('Name of the Key Vault secret vLLM requires as its API key; empty: vLLM takes requests without one (only the NSG guards port 8000).')
param vllmApiKeySecretName string = ''

@description('How long Azure holds a scale-in deletion of an on-demand VM for the agent to drain (ISO 8601, PT5M to PT15M).')
param terminateNotificationTimeout string = 'PT5M'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: identityName
}

// The workers' only image source: pulled with the workers' identity (AcrPull, roles.bicep), no
// admin user, no anonymous pull. Filled by `az acr import` from Docker Hub (the digest is kept).
resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: registryName
  location: location
  tags: tags
  sku: {
    name: registrySku
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

var vllmImageReference = '${registry.properties.loginServer}/${vllmImage}'

// Created empty once; after that the fleet manager owns the capacity (see the header).
var skuOnCreate = {
  name: vmSize
  tier: 'Standard'
  capacity: 0
}
var skuOnUpdate = {
  name: vmSize
  tier: 'Standard'
}
var onDemandScaleSetName = '${namePrefix}-ondemand'

// The placeholders agreed with worker_image/cloud-init.yaml. __PRIORITY__ differs per scale set;
// the zone is not a placeholder: the agent reads it from the instance metadata service.
var cloudInitCommon = replace(replace(replace(replace(replace(replace(replace(replace(replace(
  loadTextContent('../../worker_image/cloud-init.yaml'),
  '__CONTROL_PLANE_URL__', controlPlaneUrl),
  '__KEY_VAULT_URL__', keyVaultUrl),
  '__FLEET_TOKEN_SECRET__', fleetTokenSecretName),
  '__POOL__', pool),
  '__MODEL_SOURCE__', modelSource),
  '__MODEL__', model),
  '__VLLM_IMAGE__', vllmImageReference),
  '__VLLM_KEY_SECRET__', vllmApiKeySecretName),
  '__AGENT_CLIENT_ID__', identity.properties.clientId)

var cloudInitSpot = replace(cloudInitCommon, '__PRIORITY__', 'spot')
var cloudInitOnDemand = replace(cloudInitCommon, '__PRIORITY__', 'on-demand')

var linuxConfiguration = {
  disablePasswordAuthentication: true
  provisionVMAgent: true
  ssh: {
    publicKeys: [
      {
        path: '/home/${adminUsername}/.ssh/authorized_keys'
        keyData: sshPublicKey
      }
    ]
  }
}

var storageProfile = {
  imageReference: {
    publisher: imagePublisher
    offer: imageOffer
    sku: imageSku
    version: imageVersion
  }
  osDisk: {
    createOption: 'FromImage'
    caching: 'ReadWrite'
    diskSizeGB: osDiskSizeGB
    deleteOption: 'Delete'
    managedDisk: {
      storageAccountType: 'Premium_LRS'
    }
  }
}

// No public IP configuration: the workers are reachable only inside the VNet.
var networkProfile = {
  networkApiVersion: '2020-11-01'
  networkInterfaceConfigurations: [
    {
      name: 'nic'
      properties: {
        primary: true
        enableAcceleratedNetworking: enableAcceleratedNetworking
        deleteOption: 'Delete'
        ipConfigurations: [
          {
            name: 'ipconfig'
            properties: {
              primary: true
              subnet: {
                id: subnetId
              }
            }
          }
        ]
      }
    }
  ]
}

// Terminate notifications hold a scale-in delete until the agent drained (or the timeout).
// Azure refuses them on Spot VMs, which get their Preempt event (about 30 s) regardless.
var scheduledEventsProfile = {
  terminateNotificationProfile: {
    enable: true
    notBeforeTimeout: terminateNotificationTimeout
  }
}

resource spotScaleSets 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' = [for zone in zones: {
  name: '${namePrefix}-spot-z${zone}'
  location: location
  tags: union(tags, {
    'spotgate-pool': pool
    'spotgate-priority': 'spot'
  })
  zones: [
    zone
  ]
  sku: contains(existingScaleSetNames, '${namePrefix}-spot-z${zone}') ? skuOnUpdate : skuOnCreate
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    orchestrationMode: 'Flexible'
    platformFaultDomainCount: 1
    virtualMachineProfile: {
      priority: 'Spot'
      evictionPolicy: 'Delete'
      billingProfile: {
        maxPrice: -1
      }
      osProfile: {
        computerNamePrefix: 'sgspot${zone}'
        adminUsername: adminUsername
        customData: base64(cloudInitSpot)
        linuxConfiguration: linuxConfiguration
      }
      storageProfile: storageProfile
      networkProfile: networkProfile
      diagnosticsProfile: {
        bootDiagnostics: {
          enabled: true
        }
      }
    }
  }
}]

resource onDemandScaleSet 'Microsoft.Compute/virtualMachineScaleSets@2024-07-01' = if (deployOnDemand) {
  name: onDemandScaleSetName
  location: location
  tags: union(tags, {
    'spotgate-pool': pool
    'spotgate-priority': 'on-demand'
  })
  sku: contains(existingScaleSetNames, onDemandScaleSetName) ? skuOnUpdate : skuOnCreate
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    orchestrationMode: 'Flexible'
    platformFaultDomainCount: 1
    virtualMachineProfile: {
      priority: 'Regular'
      osProfile: {
        computerNamePrefix: 'sgod'
        adminUsername: adminUsername
        customData: base64(cloudInitOnDemand)
        linuxConfiguration: linuxConfiguration
      }
      storageProfile: storageProfile
      networkProfile: networkProfile
      scheduledEventsProfile: scheduledEventsProfile
      diagnosticsProfile: {
        bootDiagnostics: {
          enabled: true
        }
      }
    }
  }
}

output spotScaleSetNames array = [for i in range(0, length(zones)): spotScaleSets[i].name]
output onDemandScaleSetNames array = deployOnDemand ? [
  onDemandScaleSet.name
] : []
output registryName string = registry.name
output registryLoginServer string = registry.properties.loginServer
output vllmImageReference string = vllmImageReference
