//! The one Entra ID credential, chosen explicitly in configuration and shared by every client.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use crate::config::{CredentialSettings, Invalid};

/// Builds the configured credential with the service's own transport and retry budget.
pub fn build(
    settings: &CredentialSettings,
    options: &ClientOptions,
) -> Result<Arc<dyn TokenCredential>, Invalid> {
    let invalid = |e: azure_core::Error| Invalid {
        key: "credential".into(),
        message: e.to_string(),
    };
    let credential: Arc<dyn TokenCredential> = match settings {
        CredentialSettings::ClientSecret {
            tenant_id,
            client_id,
            client_secret,
            authority_host,
            ..
        } => {
            let mut client_options = options.clone();
            if let Some(host) = authority_host {
                let mut custom = CustomConfiguration::default();
                custom.authority_host = host.as_str().trim_end_matches('/').to_owned();
                client_options.cloud = Some(Arc::new(CloudConfiguration::from(custom)));
            }
            ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                client_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default()
                    .into(),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(invalid)?
        }
        CredentialSettings::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: options.clone(),
            }))
            .map_err(invalid)?
        }
        CredentialSettings::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => {
            let mut o = WorkloadIdentityCredentialOptions {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                token_file_path: token_file.clone(),
                ..Default::default()
            };
            o.credential_options.client_options = options.clone();
            WorkloadIdentityCredential::new(Some(o)).map_err(invalid)?
        }
        CredentialSettings::AzureCli { tenant_id } => {
            AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: tenant_id.clone(),
                ..Default::default()
            }))
            .map_err(invalid)?
        }
    };
    Ok(credential)
}
