//! The one Entra ID credential shared by every client: the kind chosen in configuration, or
//! `default`, the `DefaultAzureCredential` chain over the standard `AZURE_*` variables
//! (`chain.rs`). `certificate.rs` (with `pkcs12.rs`) is the client certificate credential.

mod certificate;
mod chain;
mod pkcs12;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Url};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use certificate::Certificate;
use chain::{Attempt, Candidate, Chain};

use crate::config::{CredentialSettings, Invalid};

/// Where Entra ID is when neither the settings nor `AZURE_AUTHORITY_HOST` say.
const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The first try of the IMDS managed identity in the chain: off Azure nothing answers at
/// 169.254.169.254, and the SDK would retry for over a minute.
const IMDS_FIRST_TRY: Duration = Duration::from_secs(2);
/// The first try of the Azure CLI in the chain (`az` can hang on a prompt or the network).
const CLI_FIRST_TRY: Duration = Duration::from_secs(10);

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
        CredentialSettings::Default => Arc::new(default_chain(options.clone())),
        CredentialSettings::ClientSecret {
            tenant_id,
            client_id,
            client_secret,
            authority_host,
            ..
        } => {
            let mut client_options = options.clone();
            if let Some(host) = authority_host {
                client_options = with_authority_host(client_options, host);
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
        CredentialSettings::ClientCertificate {
            tenant_id,
            client_id,
            certificate_path,
            certificate_password,
            send_certificate_chain,
            authority_host,
            ..
        } => {
            let certificate = read_certificate(
                certificate_path,
                certificate_password.as_ref().map(|p| p.expose()),
            )
            .map_err(|message| Invalid {
                key: "credential.certificate_path".into(),
                message,
            })?;
            let host = match authority_host {
                Some(host) => host.clone(),
                None => authority_host_from_env().map_err(invalid)?,
            };
            certificate::credential(
                tenant_id,
                client_id,
                certificate,
                *send_certificate_chain,
                &host,
                options.clone(),
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

/// `options` with Entra ID at `host` (sovereign clouds, tests).
fn with_authority_host(mut options: ClientOptions, host: &Url) -> ClientOptions {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = host.as_str().trim_end_matches('/').to_owned();
    options.cloud = Some(Arc::new(CloudConfiguration::from(custom)));
    options
}

/// `AZURE_AUTHORITY_HOST`, else the public cloud's (what `azure_identity` falls back to).
fn authority_host_from_env() -> azure_core::Result<Url> {
    let host = var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| PUBLIC_AUTHORITY_HOST.into());
    let url = Url::parse(&host).map_err(|e| {
        azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!("AZURE_AUTHORITY_HOST is not a URL: {e}"),
        )
    })?;
    if url.scheme() != "https" {
        return Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            "AZURE_AUTHORITY_HOST must be an https URL",
        ));
    }
    Ok(url)
}

/// Reads a PEM or PFX certificate file; the message names the file, never its bytes.
fn read_certificate(path: &Path, password: Option<&str>) -> Result<Certificate, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
    Certificate::from_file_bytes(&bytes, password).map_err(|e| format!("{}: {e}", path.display()))
}

/// An environment variable, unset when empty (as the Azure SDKs take it).
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The names of those of `names` that are unset.
fn unset(names: &[&'static str]) -> Vec<&'static str> {
    names.iter().copied().filter(|n| var(n).is_none()).collect()
}

/// `DefaultAzureCredential`'s order, of the credentials this service has: environment,
/// workload identity, managed identity, Azure CLI.
fn default_chain(options: ClientOptions) -> Chain {
    let env_options = options.clone();
    let workload_options = options.clone();
    let managed_options = options;
    Chain::new(vec![
        Candidate::new("environment", move || environment(&env_options)),
        Candidate::new("workload identity", move || {
            let missing = unset(&[
                "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID",
            ]);
            if !missing.is_empty() {
                return Err(format!("{} not set", missing.join(", ")));
            }
            let mut o = WorkloadIdentityCredentialOptions {
                tenant_id: var("AZURE_TENANT_ID"),
                client_id: var("AZURE_CLIENT_ID"),
                token_file_path: var("AZURE_FEDERATED_TOKEN_FILE").map(Into::into),
                ..Default::default()
            };
            o.credential_options.client_options = workload_options.clone();
            Ok(Attempt {
                label: "workload identity".into(),
                credential: WorkloadIdentityCredential::new(Some(o)).map_err(|e| e.to_string())?,
                first_try: None,
            })
        }),
        Candidate::new("managed identity", move || {
            // The source azure_identity picks (App Service when both are set, else IMDS; the
            // others it refuses when built).
            let app_service =
                var("IDENTITY_ENDPOINT").is_some() && var("IDENTITY_HEADER").is_some();
            let credential =
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: var("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
                    client_options: managed_options.clone(),
                }))
                .map_err(|e| e.to_string())?;
            Ok(Attempt {
                label: if app_service {
                    "managed identity (App Service)".into()
                } else {
                    "managed identity (IMDS)".into()
                },
                credential,
                first_try: (!app_service).then_some(IMDS_FIRST_TRY),
            })
        }),
        Candidate::new("Azure CLI", || {
            Ok(Attempt {
                label: "Azure CLI".into(),
                credential: AzureCliCredential::new(None).map_err(|e| e.to_string())?,
                first_try: Some(CLI_FIRST_TRY),
            })
        }),
    ])
}

/// The environment credential: a client secret, else a client certificate.
fn environment(options: &ClientOptions) -> Result<Attempt, String> {
    let required = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID"];
    let (tenant_id, client_id) = match (var(required[0]), var(required[1])) {
        (Some(tenant), Some(client)) => (tenant, client),
        _ => {
            return Err(format!(
                "{} not set (with AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH)",
                unset(&required).join(", ")
            ));
        }
    };
    if let Some(secret) = var("AZURE_CLIENT_SECRET") {
        // AZURE_AUTHORITY_HOST is read by the credential itself.
        let credential = ClientSecretCredential::new(
            &tenant_id,
            client_id,
            secret.into(),
            Some(ClientSecretCredentialOptions {
                client_options: options.clone(),
            }),
        )
        .map_err(|e| e.to_string())?;
        return Ok(Attempt {
            label: "environment (client secret)".into(),
            credential,
            first_try: None,
        });
    }
    let Some(path) = var("AZURE_CLIENT_CERTIFICATE_PATH") else {
        return Err("neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_CERTIFICATE_PATH set".into());
    };
    let password = var("AZURE_CLIENT_CERTIFICATE_PASSWORD");
    let certificate = read_certificate(Path::new(&path), password.as_deref())
        .map_err(|e| format!("AZURE_CLIENT_CERTIFICATE_PATH: {e}"))?;
    let send_chain = var("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let host = authority_host_from_env().map_err(|e| e.to_string())?;
    Ok(Attempt {
        label: "environment (client certificate)".into(),
        credential: certificate::credential(
            &tenant_id,
            &client_id,
            certificate,
            send_chain,
            &host,
            options.clone(),
        )
        .map_err(|e| e.to_string())?,
        first_try: None,
    })
}
