#!/usr/bin/env pwsh
# azd preprovision hook (Windows; preprovision.sh is the same for POSIX shells). Runs before
# every `azd provision` / `azd up`, and stops it (exit 1, no continueOnError) when a step fails:
#
#   1. registers Microsoft.App, which Flex Consumption's VNet integration needs;
#   2. checks SPOTGATE_WORKER_SSH_PUBLIC_KEY is set;
#   3. SPOTGATE_ZONES, when not set: the zones where the region offers the worker VM size to
#      this subscription (az vm list-skus, less zones restricted for the subscription);
#   4. SPOTGATE_EXISTING_SCALE_SETS: the scale sets already in the resource group, which the
#      template then updates without sku.capacity (a re-provision keeps running workers);
#   5. SPOTGATE_API_KEYS_SECRET_EXISTS: whether the vault already holds api-keys, which the
#      template then leaves alone (operators add keys to it; it is created only once).
#
# azd reloads the environment after the hook, so the values set here reach main.parameters.json.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$DefaultVmSize = 'Standard_NC24ads_A100_v4'   # main.bicep's workerVmSize default

function Say([string]$Message) { Write-Host "spotgate preprovision: $Message" }
function Fail([string]$Message) {
    Write-Error "spotgate preprovision: ERROR: $Message" -ErrorAction Continue
    exit 1
}
# Runs az (or azd); a non-zero exit stops the hook with $Why.
function Invoke-Checked([string]$Why, [scriptblock]$Command) {
    $output = & $Command
    if ($LASTEXITCODE -ne 0) { Fail $Why }
    return $output
}

# 1. Microsoft.App ------------------------------------------------------------------------
Say 'registering the Microsoft.App resource provider (Flex Consumption VNet integration)'
Invoke-Checked 'could not register Microsoft.App. It needs */register/action on the subscription (Owner or Contributor): az provider register --namespace Microsoft.App' {
    az provider register --namespace Microsoft.App --wait
} | Out-Null
$state = Invoke-Checked 'could not read the registration state of Microsoft.App (az provider show --namespace Microsoft.App)' {
    az provider show --namespace Microsoft.App --query registrationState -o tsv
}
if ($state -ne 'Registered') {
    Fail "Microsoft.App is '$state', not Registered; wait for it (az provider show --namespace Microsoft.App) and run azd provision again"
}

# 2. The workers' SSH key -----------------------------------------------------------------
if (-not $env:SPOTGATE_WORKER_SSH_PUBLIC_KEY) {
    Fail 'SPOTGATE_WORKER_SSH_PUBLIC_KEY is not set: azd env set SPOTGATE_WORKER_SSH_PUBLIC_KEY (Get-Content ~/.ssh/id_ed25519.pub)'
}

# 3. Zones --------------------------------------------------------------------------------
if (-not $env:SPOTGATE_ZONES) {
    $location = $env:AZURE_LOCATION
    if (-not $location) { Fail 'AZURE_LOCATION is not set: azd env set AZURE_LOCATION <region>' }
    $size = if ($env:SPOTGATE_WORKER_VM_SIZE) { $env:SPOTGATE_WORKER_VM_SIZE } else { $DefaultVmSize }
    Say "finding the zones of $location that offer $size (az vm list-skus)"
    $listFailed = 'az vm list-skus failed; set the zones yourself: azd env set SPOTGATE_ZONES "1,2,3"'
    $offered = @(Invoke-Checked $listFailed {
        az vm list-skus --location $location --size $size --resource-type virtualMachines `
            --query "[?name=='$size'] | [0].locationInfo[].zones[]" -o tsv
    })
    $restricted = @(Invoke-Checked $listFailed {
        az vm list-skus --location $location --size $size --resource-type virtualMachines `
            --query "[?name=='$size'] | [0].restrictions[?type=='Zone'].restrictionInfo.zones[]" -o tsv
    })
    $zones = @($offered | Where-Object { $_ -and ($restricted -notcontains $_) } | Sort-Object -Unique)
    if ($zones.Count -eq 0) {
        Fail "$location offers $size in no availability zone to this subscription (az vm list-skus --location $location --size $size --query `"[].locationInfo[].zones`"). Pick another region or size (azd env set SPOTGATE_WORKER_VM_SIZE ...), or set SPOTGATE_ZONES yourself."
    }
    $joined = $zones -join ','
    Say "SPOTGATE_ZONES=$joined"
    Invoke-Checked 'azd env set SPOTGATE_ZONES failed' { azd env set SPOTGATE_ZONES $joined } | Out-Null
}

# 4. Scale sets that already exist --------------------------------------------------------
$group = if ($env:AZURE_RESOURCE_GROUP) { $env:AZURE_RESOURCE_GROUP } else { "rg-$($env:AZURE_ENV_NAME)" }
$groupExists = Invoke-Checked "could not check whether resource group $group exists (az login? az account set?)" {
    az group exists --name $group -o tsv
}
$existing = ''
if ($groupExists -eq 'true') {
    $names = @(Invoke-Checked "could not list the scale sets of $group; refusing to provision, since a scale set sent capacity 0 would lose its running workers" {
        az vmss list --resource-group $group --query '[].name' -o tsv
    })
    $existing = (@($names | Where-Object { $_ }) -join ',')
}
# "none" rather than an empty value, which Windows PowerShell would not pass to azd at all.
if (-not $existing) { $existing = 'none' }
Say "existing scale sets (kept at their capacity): $existing"
Invoke-Checked 'azd env set SPOTGATE_EXISTING_SCALE_SETS failed' { azd env set SPOTGATE_EXISTING_SCALE_SETS $existing } | Out-Null

# 5. The api-keys list --------------------------------------------------------------------
$exists = 'false'
$vault = $env:AZURE_KEY_VAULT_NAME
if ($groupExists -eq 'true' -and $vault) {
    $vaults = Invoke-Checked "could not list the key vaults of $group" {
        az keyvault list --resource-group $group --query "length([?name=='$vault'])" -o tsv
    }
    if ([int]$vaults -gt 0) {
        $count = Invoke-Checked "could not list the secrets of $vault (Key Vault Secrets Officer on it? azd grants it to AZURE_PRINCIPAL_ID); refusing to guess whether api-keys exists, since writing it again would drop every key added to it" {
            az keyvault secret list --vault-name $vault --query "length([?name=='api-keys'])" -o tsv
        }
        if ([int]$count -gt 0) { $exists = 'true' }
    }
}
Say "api-keys already in the vault: $exists"
Invoke-Checked 'azd env set SPOTGATE_API_KEYS_SECRET_EXISTS failed' { azd env set SPOTGATE_API_KEYS_SECRET_EXISTS $exists } | Out-Null
