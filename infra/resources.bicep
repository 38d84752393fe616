// The resources of Training Recommender, in the style of the Azure-Samples Flex
// Consumption quickstarts: one user-assigned identity for the app, no storage key
// anywhere (shared key access is off), Application Insights with Entra ID auth.
//
// App settings are named exactly as the code reads them (shared/appsettings.py,
// shared/storage/factory.py, shared/azureml.py, shared/jobs.py); tests/test_infra.py
// cross-checks them, and the role names against README.

param environmentName string
param location string
param tags object
param principalId string
param deployAzureML bool
param retrainRunner string
param instanceMemoryMB int
param maximumInstanceCount int

var token = toLower(uniqueString(subscription().id, resourceGroup().id, location, environmentName))
var appName = 'func-${token}'
var deploymentContainer = 'app-package-${take(appName, 32)}-${take(token, 7)}'
// The data containers (shared/layout.py), created up front so that the first drop,
// the first retrain and the first event land without a create call.
var dataContainers = [
  'hr-extracts'
  'hr-extracts-rejected'
  'extracts'
  'models'
  'recommendations'
  'locks'
  'events'
]

// Built-in roles (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles)
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121' // AzureML Data Scientist
}

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${token}'
  location: location
  tags: tags
}

// ---------------------------------------------------------------- storage

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identities only: no key to leak
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    networkAcls: { bypass: 'AzureServices', defaultAction: 'Allow' }
  }

  resource blobs 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: { enabled: true, days: 7 } // a bad delete is not the end
    }

    resource package 'containers' = {
      name: deploymentContainer
    }

    resource data 'containers' = [
      for name in dataContainers: {
        name: name
      }
    ]
  }
}

// ---------------------------------------------------------------- monitoring

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${token}'
  location: location
  tags: tags
  properties: {
    retentionInDays: 30
    sku: { name: 'PerGB2018' }
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true // telemetry is sent with the app's identity
  }
}

// ---------------------------------------------------------------- the Function App

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

var hostSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storage.name }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: appIdentity.properties.clientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${appIdentity.properties.clientId};Authorization=AAD'
  }
]
var appSettings = [
  // The data the app reads and writes (connection "DataStorage" of the blob trigger).
  { name: 'DataStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
  { name: 'DataStorage__credential', value: 'managedidentity' }
  { name: 'DataStorage__clientId', value: appIdentity.properties.clientId }
  { name: 'RETRAIN_SCHEDULE', value: '0 0 2 * * *' }
  { name: 'RETRAIN_RUNNER', value: retrainRunner }
]
var azureMLSettings = deployAzureML
  ? [
      { name: 'AZURE_ML_SUBSCRIPTION_ID', value: subscription().subscriptionId }
      { name: 'AZURE_ML_RESOURCE_GROUP', value: resourceGroup().name }
      { name: 'AZURE_ML_WORKSPACE', value: workspace.name }
      { name: 'AZURE_ML_CLIENT_ID', value: appIdentity.properties.clientId }
      { name: 'AZURE_ML_COMPUTE', value: cluster.name }
      { name: 'AZURE_ML_JOB_IDENTITY_CLIENT_ID', value: jobIdentity.properties.clientId }
    ]
  : []

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${appIdentity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: appIdentity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      appSettings: concat(hostSettings, appSettings, azureMLSettings)
    }
  }
}

// The blob trigger's source (source=EventGrid in function_app.py): Blob Created events
// of the storage account. The subscription to the app's blobs extension endpoint needs
// the deployed app's key: infra/scripts/postdeploy.sh creates it after `azd deploy`.
resource systemTopic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: 'evgt-${token}'
  location: location
  tags: tags
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// ---------------------------------------------------------------- roles of the app

// The host (timers, the blob trigger's receipts) and the app's data: blobs, the
// deployment package; queues and tables for the host's bookkeeping.
resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueues 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, appIdentity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The person deploying may drop extracts and read reports.
resource deployerBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(storage.id, principalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: principalId
    principalType: 'User'
  }
}

// ---------------------------------------------------------------- Azure ML (optional)

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = if (deployAzureML) {
  name: 'kv-${take(token, 20)}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' = if (deployAzureML) {
  name: 'mlw-${token}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    friendlyName: 'Training Recommender'
    storageAccount: storage.id
    keyVault: vault.id
    applicationInsights: insights.id
    systemDatastoresAuthMode: 'identity' // the storage has no key
  }
}

// The retrain jobs' identity: it reads and writes the data storage, and registers models.
resource jobIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = if (deployAzureML) {
  name: 'id-job-${token}'
  location: location
  tags: tags
}

resource cluster 'Microsoft.MachineLearningServices/workspaces/computes@2024-04-01' = if (deployAzureML) {
  parent: workspace
  name: 'cpu-cluster'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${jobIdentity.id}': {} }
  }
  properties: {
    computeType: 'AmlCompute'
    properties: {
      vmSize: 'Standard_E4ds_v5' // 4 cores, 32 GB: a retrain at 300,000 employees
      vmPriority: 'Dedicated'
      scaleSettings: {
        minNodeCount: 0 // nothing to pay between retrains
        maxNodeCount: 1
        nodeIdleTimeBeforeScaleDown: 'PT10M'
      }
    }
  }
}

resource jobBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (deployAzureML) {
  name: guid(storage.id, 'job', roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: deployAzureML ? jobIdentity.properties.principalId : ''
    principalType: 'ServicePrincipal'
  }
}

// The app submits jobs and registers models; the job registers models. The built-in
// role allows more than that (README: prefer a custom role in production).
resource appScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (deployAzureML) {
  name: guid(resourceGroup().id, 'app', roles.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: appIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource jobScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (deployAzureML) {
  name: guid(resourceGroup().id, 'job', roles.azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.azureMLDataScientist)
    principalId: deployAzureML ? jobIdentity.properties.principalId : ''
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output storageAccountName string = storage.name
output systemTopicName string = systemTopic.name
