#!/usr/bin/env pwsh
# azd postdown hook (Windows; postdown.sh is the same for POSIX shells). `azd down` deletes the
# resource group; the subscription-level diagnostic setting that exports the Activity Log to
# the (now deleted) workspace is not in it, so it is deleted here, by the name the deployment
# output (SPOTGATE_ACTIVITY_LOG_SETTING; empty when exportActivityLog was off). Fails loudly
# when the delete fails, so the setting is not left behind unnoticed.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Say([string]$Message) { Write-Host "spotgate postdown: $Message" }
function Fail([string]$Message) {
    Write-Error "spotgate postdown: ERROR: $Message" -ErrorAction Continue
    exit 1
}

# Unset (a deployment older than the output): the name main.bicep gives it.
$name = if ($null -ne $env:SPOTGATE_ACTIVITY_LOG_SETTING) { $env:SPOTGATE_ACTIVITY_LOG_SETTING } else { "spotgate-$($env:AZURE_ENV_NAME)-activity" }
if (-not $name) {
    Say 'no Activity Log export was deployed: nothing to remove'
    exit 0
}
$subscription = $env:AZURE_SUBSCRIPTION_ID
if (-not $subscription) {
    $subscription = az account show --query id -o tsv
    if ($LASTEXITCODE -ne 0) { Fail 'no subscription: az login' }
}
$url = "/subscriptions/$subscription/providers/Microsoft.Insights/diagnosticSettings/${name}?api-version=2021-05-01-preview"
az rest --method get --url $url -o none 2>$null
if ($LASTEXITCODE -ne 0) {
    Say "no diagnostic setting $name on subscription ${subscription}: nothing to remove"
    exit 0
}
az rest --method delete --url $url
if ($LASTEXITCODE -ne 0) {
    Fail "could not delete the subscription diagnostic setting $name; remove it by hand: az rest --method delete --url `"$url`""
}
Say "deleted the subscription diagnostic setting $name (Activity Log export)"
