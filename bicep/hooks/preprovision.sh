#!/bin/sh
# azd preprovision hook (POSIX; preprovision.ps1 is the same for Windows). Runs before every
# `azd provision` / `azd up`, and stops it (exit 1, no continueOnError) when a step fails:
#
#   1. registers Microsoft.App, which Flex Consumption's VNet integration needs (without it
#      the deployment fails late with an unhelpful InternalServerError);
#   2. checks SPOTGATE_WORKER_SSH_PUBLIC_KEY is set;
#   3. SPOTGATE_ZONES, when not set: the zones where the region offers the worker VM size to
#      this subscription (az vm list-skus, less zones restricted for the subscription);
#   4. SPOTGATE_EXISTING_SCALE_SETS: the scale sets already in the resource group, which the
#      template then updates without sku.capacity (a re-provision keeps running workers);
#   5. SPOTGATE_API_KEYS_SECRET_EXISTS: whether the vault already holds api-keys, which the
#      template then leaves alone (operators add keys to it; it is created only once).
#
# azd reloads the environment after the hook, so the values set here reach main.parameters.json.
set -eu

DEFAULT_VM_SIZE=Standard_NC24ads_A100_v4   # main.bicep's workerVmSize default

say() { echo "spotgate preprovision: $*"; }
fail() {
  echo "spotgate preprovision: ERROR: $*" >&2
  exit 1
}

# 1. Microsoft.App ------------------------------------------------------------------------
say "registering the Microsoft.App resource provider (Flex Consumption VNet integration)"
az provider register --namespace Microsoft.App --wait ||
  fail "could not register Microsoft.App. It needs */register/action on the subscription (Owner or Contributor): az provider register --namespace Microsoft.App"
state=$(az provider show --namespace Microsoft.App --query registrationState -o tsv) ||
  fail "could not read Microsoft.App's registration state (az provider show --namespace Microsoft.App)"
[ "$state" = "Registered" ] ||
  fail "Microsoft.App is '$state', not Registered; wait for it (az provider show --namespace Microsoft.App) and run azd provision again"

# 2. The workers' SSH key -----------------------------------------------------------------
[ -n "${SPOTGATE_WORKER_SSH_PUBLIC_KEY:-}" ] ||
  fail "SPOTGATE_WORKER_SSH_PUBLIC_KEY is not set: azd env set SPOTGATE_WORKER_SSH_PUBLIC_KEY \"\$(cat ~/.ssh/id_ed25519.pub)\""

# 3. Zones --------------------------------------------------------------------------------
if [ -z "${SPOTGATE_ZONES:-}" ]; then
  location=${AZURE_LOCATION:-}
  [ -n "$location" ] || fail "AZURE_LOCATION is not set: azd env set AZURE_LOCATION <region>"
  size=${SPOTGATE_WORKER_VM_SIZE:-$DEFAULT_VM_SIZE}
  say "finding the zones of $location that offer $size (az vm list-skus)"
  offered=$(az vm list-skus --location "$location" --size "$size" --resource-type virtualMachines \
    --query "[?name=='$size'] | [0].locationInfo[].zones[]" -o tsv) ||
    fail "az vm list-skus failed; set the zones yourself: azd env set SPOTGATE_ZONES \"1,2,3\""
  restricted=$(az vm list-skus --location "$location" --size "$size" --resource-type virtualMachines \
    --query "[?name=='$size'] | [0].restrictions[?type=='Zone'].restrictionInfo.zones[]" -o tsv) ||
    fail "az vm list-skus failed; set the zones yourself: azd env set SPOTGATE_ZONES \"1,2,3\""
  zones=""
  for zone in $(printf '%s\n' $offered | sort -u); do
    case " $(printf '%s ' $restricted)" in
      *" $zone "*) continue ;;
    esac
    zones="${zones:+$zones,}$zone"
  done
  [ -n "$zones" ] ||
    fail "$location offers $size in no availability zone to this subscription (az vm list-skus --location $location --size $size --query \"[].locationInfo[].zones\"). Pick another region or size (azd env set SPOTGATE_WORKER_VM_SIZE ...), or set SPOTGATE_ZONES yourself."
  say "SPOTGATE_ZONES=$zones"
  azd env set SPOTGATE_ZONES "$zones"
fi

# 4. Scale sets that already exist --------------------------------------------------------
group=${AZURE_RESOURCE_GROUP:-rg-${AZURE_ENV_NAME:-}}
existing=""
group_exists=$(az group exists --name "$group" -o tsv) ||
  fail "could not check whether resource group $group exists (az login? az account set?)"
if [ "$group_exists" = "true" ]; then
  names=$(az vmss list --resource-group "$group" --query "[].name" -o tsv) ||
    fail "could not list the scale sets of $group; refusing to provision, since a scale set sent capacity 0 would lose its running workers"
  existing=$(printf '%s\n' $names | paste -sd, -)
fi
# "none" rather than an empty value, which Windows PowerShell would not pass to azd at all.
existing=${existing:-none}
say "existing scale sets (kept at their capacity): $existing"
azd env set SPOTGATE_EXISTING_SCALE_SETS "$existing"

# 5. The api-keys list --------------------------------------------------------------------
exists=false
vault=${AZURE_KEY_VAULT_NAME:-}
if [ "$group_exists" = "true" ] && [ -n "$vault" ]; then
  vaults=$(az keyvault list --resource-group "$group" --query "length([?name=='$vault'])" -o tsv) ||
    fail "could not list the key vaults of $group"
  if [ "$vaults" -gt 0 ]; then
    count=$(az keyvault secret list --vault-name "$vault" --query "length([?name=='api-keys'])" -o tsv) ||
      fail "could not list the secrets of $vault (Key Vault Secrets Officer on it? azd grants it to AZURE_PRINCIPAL_ID); refusing to guess whether api-keys exists, since writing it again would drop every key added to it"
    if [ "$count" -gt 0 ]; then
      exists=true
    fi
  fi
fi
say "api-keys already in the vault: $exists"
azd env set SPOTGATE_API_KEYS_SECRET_EXISTS "$exists"
