#!/usr/bin/env pwsh
# azd postprovision hook (Windows; postprovision.sh is the same for POSIX shells): copies the
# pinned vLLM image into the deployment's container registry, where the workers pull it with
# their managed identity. `az acr import` copies the manifests as they are, so the digest the
# scale sets are pinned to stays valid. Skipped when the registry already has that digest. A
# failed import only warns (the control plane works without workers); the command to run by hand:
#
#   az acr import --name <registry> --source docker.io/<repository>@sha256:<digest> `
#     --image <repository>:<tag>
#
# SPOTGATE_VLLM_IMAGE_SOURCE: the registry to import from (default docker.io).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Say([string]$Message) { Write-Host "spotgate postprovision: $Message" }

$registry = $env:AZURE_CONTAINER_REGISTRY_NAME
$reference = $env:SPOTGATE_VLLM_IMAGE_REFERENCE   # <registry>.azurecr.io/<repository>[:tag]@sha256:<digest>
if (-not $registry -or -not $reference) {
    Say 'no container registry in the environment: nothing to import'
    exit 0
}
$image = $reference.Substring($reference.IndexOf('/') + 1)   # <repository>[:tag]@sha256:<digest>
$digest = $image.Substring($image.LastIndexOf('@') + 1)
$name = $image.Substring(0, $image.LastIndexOf('@'))          # <repository>[:tag]
$repository, $tag = $name.Split(':', 2)
if (-not $tag) { $tag = 'pinned' }
$sourceRegistry = if ($env:SPOTGATE_VLLM_IMAGE_SOURCE) { $env:SPOTGATE_VLLM_IMAGE_SOURCE } else { 'docker.io' }
$source = "$sourceRegistry/$repository@$digest"

az acr repository show --name $registry --image "$repository@$digest" -o none 2>$null
if ($LASTEXITCODE -eq 0) {
    Say "$registry already has $repository@$digest"
    exit 0
}
Say "importing $source into $registry as ${repository}:$tag (about 10 GB: minutes)"
az acr import --name $registry --source $source --image "${repository}:$tag" --force
if ($LASTEXITCODE -ne 0) {
    Write-Warning "spotgate postprovision: the import failed; the workers cannot pull vLLM until it is done:"
    Write-Warning "  az acr import --name $registry --source $source --image ${repository}:$tag"
    Write-Warning '  (Docker Hub limits anonymous pulls: add --username <user> --password <token>)'
}
exit 0
