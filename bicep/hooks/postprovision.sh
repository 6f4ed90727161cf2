#!/bin/sh
# azd postprovision hook (POSIX; postprovision.ps1 is the same for Windows): copies the pinned
# vLLM image into the deployment's container registry, where the workers pull it with their
# managed identity. `az acr import` copies the manifests as they are, so the digest the scale
# sets are pinned to stays valid. Skipped when the registry already has that digest. A failed
# import only warns (the control plane works without workers); the command to run by hand:
#
#   az acr import --name <registry> --source docker.io/<repository>@sha256:<digest> \
#     --image <repository>:<tag>
#
# SPOTGATE_VLLM_IMAGE_SOURCE: the registry to import from (default docker.io).
set -eu

say() { echo "spotgate postprovision: $*"; }

registry=${AZURE_CONTAINER_REGISTRY_NAME:-}
reference=${SPOTGATE_VLLM_IMAGE_REFERENCE:-}   # <registry>.azurecr.io/<repository>[:tag]@sha256:<digest>
if [ -z "$registry" ] || [ -z "$reference" ]; then
  say "no container registry in the environment: nothing to import"
  exit 0
fi
image=${reference#*/}        # <repository>[:tag]@sha256:<digest>
digest=${image##*@}
name=${image%@*}             # <repository>[:tag]
repository=${name%%:*}
tag=${name#"$repository"}
tag=${tag#:}
source=${SPOTGATE_VLLM_IMAGE_SOURCE:-docker.io}/$repository@$digest

if az acr repository show --name "$registry" --image "$repository@$digest" -o none 2>/dev/null; then
  say "$registry already has $repository@$digest"
  exit 0
fi
say "importing $source into $registry as $repository:${tag:-pinned} (about 10 GB: minutes)"
if ! az acr import --name "$registry" --source "$source" --image "$repository:${tag:-pinned}" --force; then
  echo "spotgate postprovision: WARNING: the import failed; the workers cannot pull vLLM until it is done:" >&2
  echo "  az acr import --name $registry --source $source --image $repository:${tag:-pinned}" >&2
  echo "  (Docker Hub limits anonymous pulls: add --username <user> --password <token>)" >&2
fi
