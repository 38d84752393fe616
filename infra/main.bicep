// Training Recommender: everything the Functions app needs, in one resource group.
// `azd up` deploys it (azure.yaml); the resources are in resources.bicep.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: it names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (Flex Consumption must be offered there).')
param location string

@description('Object id of the person deploying: given read/write on the data storage to drop extracts. Empty: none.')
param principalId string = ''

@description('Also create an Azure ML workspace and a compute cluster (scales to zero) for model registration and retrain jobs.')
param deployAzureML bool = false

@allowed(['function', 'azureml', 'auto'])
@description('Where the nightly retrain runs (app setting RETRAIN_RUNNER); azureml and auto need deployAzureML.')
param retrainRunner string = 'function'

@description('Memory of a Flex Consumption instance: 2048 or 4096 MB.')
@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@description('Most instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'resources'
  scope: rg
  params: {
    environmentName: environmentName
    location: location
    tags: tags
    principalId: principalId
    deployAzureML: deployAzureML
    retrainRunner: retrainRunner
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
}

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output AZURE_FUNCTION_URL string = resources.outputs.functionAppUrl
output AZURE_STORAGE_ACCOUNT_NAME string = resources.outputs.storageAccountName
output AZURE_EVENTGRID_SYSTEM_TOPIC string = resources.outputs.systemTopicName
