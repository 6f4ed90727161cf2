#!/bin/sh
# azd postdown hook (POSIX; postdown.ps1 is the same for Windows). `azd down` deletes the
# resource group; the subscription-level diagnostic setting that exports the Activity Log to
# the (now deleted) workspace is not in it, so it is deleted here, by the name the deployment
# output (SPOTGATE_ACTIVITY_LOG_SETTING; empty when exportActivityLog was off). Fails loudly
# when the delete fails, so the setting is not left behind unnoticed.
set -eu

say() { echo "spotgate postdown: $*"; }
fail() {
  echo "spotgate postdown: ERROR: $*" >&2
  exit 1
}

# Unset (a deployment older than the output): the name main.bicep gives it.
name=${SPOTGATE_ACTIVITY_LOG_SETTING-spotgate-${AZURE_ENV_NAME:-}-activity}
if [ -z "$name" ]; then
  say "no Activity Log export was deployed: nothing to remove"
  exit 0
fi
subscription=${AZURE_SUBSCRIPTION_ID:-}
if [ -z "$subscription" ]; then
  subscription=$(az account show --query id -o tsv) || fail "no subscription: az login"
fi
url="/subscriptions/$subscription/providers/Microsoft.Insights/diagnosticSettings/$name?api-version=2021-05-01-preview"
if ! az rest --method get --url "$url" -o none 2>/dev/null; then
  say "no diagnostic setting $name on subscription $subscription: nothing to remove"
  exit 0
fi
az rest --method delete --url "$url" ||
  fail "could not delete the subscription diagnostic setting $name; remove it by hand: az rest --method delete --url \"$url\""
say "deleted the subscription diagnostic setting $name (Activity Log export)"
