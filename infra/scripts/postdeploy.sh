#!/bin/sh
# After `azd deploy`: subscribe the blob trigger (extract_dropped, source=EventGrid) to
# the storage account's Blob Created events under hr-extracts/. It needs the deployed
# app's blobs_extension system key, which exists only once the code runs: hence here,
# not in Bicep. Idempotent: `create` updates an existing subscription of that name.
set -eu
eval "$(azd env get-values)"

key=$(az functionapp keys list \
  --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
  --query "systemKeys.blobs_extension" --output tsv)
if [ -z "$key" ]; then
  echo "the app has no blobs_extension key yet: is the code deployed? run azd deploy again" >&2
  exit 1
fi
endpoint="${AZURE_FUNCTION_URL}/runtime/webhooks/blobs?functionName=Host.Functions.extract_dropped&code=${key}"

az eventgrid system-topic event-subscription create \
  --name extract-dropped \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --system-topic-name "$AZURE_EVENTGRID_SYSTEM_TOPIC" \
  --endpoint-type webhook \
  --endpoint "$endpoint" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with /blobServices/default/containers/hr-extracts/ \
  --output none
echo "extract_dropped subscribed to Blob Created events of hr-extracts/"
