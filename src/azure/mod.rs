//! Azure: the shared HTTP transport and retry budget, the Entra ID credential, Blob Storage
//! listing, and the URL signers. Backends only: no caching, no HTTP serving.

pub mod blob;
pub mod containers;
pub mod credential;
pub mod links;
pub mod sas;
mod traced;
pub mod validity;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};

use crate::config::{CredentialSettings, Invalid, LinkSettings, StorageSettings, UpstreamSettings};
use crate::source::SourceError;

/// The reqwest client every Azure call goes through: connect and per-try timeouts, and the
/// extra CA when one is configured.
pub fn http_client(settings: &UpstreamSettings) -> Result<reqwest::Client, Invalid> {
    // No transparent decompression: the SDK's ranged downloads need the bytes as stored (the
    // gzip feature is on through the SDK's own reqwest features).
    let mut builder = reqwest::Client::builder()
        .no_gzip()
        .no_deflate()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(60));
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| Invalid {
            key: "upstream.ca_file".into(),
            message: format!("cannot read {}: {}", path.display(), e.kind()),
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|_| Invalid {
            key: "upstream.ca_file".into(),
            message: "not a PEM certificate".into(),
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| Invalid {
        key: "upstream".into(),
        message: format!("cannot build the HTTP client: {e}"),
    })
}

/// SDK client options: our transport, retries bounded by our budget (the SDK's default
/// budget is about a minute, far past any client's patience), and a client span per try.
pub fn client_options(settings: &UpstreamSettings, client: &reqwest::Client) -> ClientOptions {
    let retry = if settings.max_retries == 0 {
        RetryOptions::none()
    } else {
        RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(100),
            max_retries: settings.max_retries,
            max_total_elapsed: azure_core::time::Duration::try_from(settings.retry_budget)
                .unwrap_or(azure_core::time::Duration::seconds(15)),
            max_delay: azure_core::time::Duration::seconds(2),
        })
    };
    ClientOptions {
        retry,
        per_try_policies: vec![
            Arc::new(traced::TracePolicy),
            Arc::new(ThrottleBeyondBudget {
                budget: settings.retry_budget,
            }),
        ],
        transport: Some(Transport::new(Arc::new(client.clone()))),
        ..Default::default()
    }
}

/// Storage asked us to wait longer than the whole retry budget (`Retry-After` on a 429 or 503):
/// no retry can succeed within it, so the call ends at once as throttled, carrying the wait.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}: Retry-After {wait:?} is past the retry budget")]
pub struct RetryAfterBeyondBudget {
    pub status: u16,
    pub wait: std::time::Duration,
}

/// A per-try policy (inside the SDK's retry loop): a throttling answer whose `Retry-After`
/// exceeds the budget becomes [`RetryAfterBeyondBudget`], an error the loop does not retry.
/// Without it the SDK would sleep the whole `Retry-After` out and only our deadline would stop
/// it, as a timeout (504) instead of the throttling it is (503 with the server's hint).
#[derive(Debug)]
struct ThrottleBeyondBudget {
    budget: std::time::Duration,
}

#[async_trait::async_trait]
impl azure_core::http::policies::Policy for ThrottleBeyondBudget {
    async fn send(
        &self,
        ctx: &azure_core::http::Context,
        request: &mut azure_core::http::Request,
        next: &[Arc<dyn azure_core::http::policies::Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        let response = next[0].send(ctx, request, &next[1..]).await?;
        let status = u16::from(response.status());
        if matches!(status, 429 | 503) {
            let wait = response
                .headers()
                .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                .and_then(|v| {
                    crate::source::rest::parse_retry_after(v, time::OffsetDateTime::now_utc())
                });
            if let Some(wait) = wait
                && wait > self.budget
            {
                return Err(azure_core::Error::new(
                    azure_core::error::ErrorKind::Other,
                    RetryAfterBeyondBudget { status, wait },
                ));
            }
        }
        Ok(response)
    }
}

/// Maps an SDK error to a domain error. `backend` names the upstream; the SDK's message is
/// kept out of the domain error (it can carry URLs with SAS queries) and reduced to its status.
pub fn source_error(backend: &'static str, e: &azure_core::Error) -> SourceError {
    use azure_core::error::ErrorKind;
    if let Some(beyond) = find_in_chain::<RetryAfterBeyondBudget>(e) {
        return SourceError::Throttled {
            backend,
            retry_after: Some(beyond.wait),
        };
    }
    let status = e.http_status().map(u16::from);
    match status {
        Some(404) => SourceError::NotFound,
        Some(401 | 403) => SourceError::Misconfigured {
            backend,
            message: format!("access denied ({})", status.unwrap_or_default()),
        },
        Some(429 | 503) => SourceError::Throttled {
            backend,
            retry_after: None,
        },
        Some(code) => SourceError::Upstream {
            backend,
            message: format!("HTTP {code}"),
        },
        None => match transport_failure(e) {
            Some(TransportFailure::Timeout) => SourceError::Timeout { backend },
            Some(TransportFailure::Connect) => SourceError::Unavailable { backend },
            None => match e.kind() {
                ErrorKind::Io => SourceError::Unavailable { backend },
                ErrorKind::Credential => SourceError::Misconfigured {
                    backend,
                    message: "the credential could not get a token".into(),
                },
                ErrorKind::DataConversion => SourceError::Upstream {
                    backend,
                    message: "malformed answer".into(),
                },
                _ => SourceError::Upstream {
                    backend,
                    message: "request failed".into(),
                },
            },
        },
    }
}

enum TransportFailure {
    Timeout,
    Connect,
}

/// The first error of type `T` in the error's chain.
fn find_in_chain<T: std::error::Error + 'static>(e: &azure_core::Error) -> Option<&T> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        source = err.source();
    }
    e.downcast_ref::<T>()
}

/// A timeout or connection failure anywhere in the error's chain (the SDK wraps reqwest's).
fn transport_failure(e: &azure_core::Error) -> Option<TransportFailure> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return Some(TransportFailure::Timeout);
            }
            if r.is_connect() {
                return Some(TransportFailure::Connect);
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotConnected
            )
        {
            return Some(TransportFailure::Connect);
        }
        source = err.source();
    }
    None
}

/// The Azure parts of a backend, built once from the settings: one HTTP client, one
/// credential, shared by the blob store, the linker and the health check.
pub struct AzureBackend {
    pub http: reqwest::Client,
    pub credential: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
    pub store: Arc<dyn crate::source::BlobStore>,
    pub linker: Arc<dyn crate::source::Linker>,
    pub health: Vec<Arc<dyn crate::source::HealthCheck>>,
    /// Lists `storage.account`'s containers with the blob store's access (`catalog scan`).
    pub containers: containers::ContainerLister,
    /// Writes into asset containers (the ffmpeg encoder), or why it cannot: only account-key
    /// and Entra access can write.
    pub writer: Result<Arc<dyn crate::source::BlobWriter>, String>,
}

/// What the Azure parts are built from: the configured sections, and the one HTTP client.
pub struct AzureSettings<'a> {
    pub storage: &'a StorageSettings,
    pub links: &'a LinkSettings,
    pub credential: Option<&'a CredentialSettings>,
    pub upstream: &'a UpstreamSettings,
    /// How long ffmpeg's input URLs stay valid (a job's timeout, and some).
    pub media_lifetime: Duration,
}

impl AzureBackend {
    pub fn new(settings: AzureSettings<'_>, http: reqwest::Client) -> Result<Self, Invalid> {
        use crate::config::{LinkMode, StorageAuth};
        use blob::{AzureBlobStore, BlobEndpoint, StorageAccess};
        use links::{AccountKeySasLinker, LinkBase, PublicLinker, UserDelegationLinker};
        use validity::Validity;

        let options = client_options(settings.upstream, &http);
        let credential = settings
            .credential
            .map(|c| credential::build(c, &options))
            .transpose()?;
        let signer = settings
            .storage
            .account_key
            .as_ref()
            .map(|key| {
                sas::AccountKeySigner::new(&settings.storage.account, key).map_err(|e| Invalid {
                    key: "storage.account_key".into(),
                    message: e.to_string(),
                })
            })
            .transpose()?;
        let protocol = if settings.links.allow_http {
            sas::SasProtocol::HttpsAndHttp
        } else {
            sas::SasProtocol::Https
        };
        let missing = |key: &str| Invalid {
            key: key.into(),
            message: "is required by the configured modes".into(),
        };
        let endpoint = BlobEndpoint::new(&settings.storage.endpoint);
        let access = match settings.storage.auth {
            StorageAuth::Anonymous => StorageAccess::Anonymous,
            StorageAuth::AccountKey => StorageAccess::AccountKey {
                signer: signer
                    .clone()
                    .ok_or_else(|| missing("storage.account_key"))?,
                protocol,
            },
            StorageAuth::Entra => {
                StorageAccess::Entra(credential.clone().ok_or_else(|| missing("credential"))?)
            }
            StorageAuth::AmsContainerSas => StorageAccess::LocationSas,
        };
        let media_validity = Validity::new(
            settings.media_lifetime,
            settings.links.clock_skew,
            protocol,
            Duration::ZERO,
            None,
        );
        let writer: Result<Arc<dyn crate::source::BlobWriter>, String> = match &access {
            StorageAccess::AccountKey { signer, protocol } => {
                let inputs = Arc::new(AccountKeySasLinker {
                    base: LinkBase::new(endpoint.clone(), None),
                    signer: signer.clone(),
                    validity: media_validity,
                });
                Ok(Arc::new(writer::AzureBlobWriter::new(
                    endpoint.clone(),
                    http.clone(),
                    writer::WriteAccess::AccountKey {
                        signer: signer.clone(),
                        protocol: *protocol,
                    },
                    inputs,
                    settings.upstream.ca_file.clone(),
                )))
            }
            StorageAccess::Entra(credential) => {
                let inputs = Arc::new(UserDelegationLinker::new(
                    LinkBase::new(endpoint.clone(), None),
                    endpoint.clone(),
                    credential.clone(),
                    options.clone(),
                    media_validity,
                ));
                Ok(Arc::new(writer::AzureBlobWriter::new(
                    endpoint.clone(),
                    http.clone(),
                    writer::WriteAccess::Entra(credential.clone()),
                    inputs,
                    settings.upstream.ca_file.clone(),
                )))
            }
            StorageAccess::Anonymous => Err(
                "storage.auth = \"anonymous\" cannot write; the ffmpeg encoder needs \"account-key\" or \"entra\" (the Storage Blob Data Contributor role on the containers)".into(),
            ),
            StorageAccess::LocationSas => Err(
                "storage.auth = \"ams-container-sas\" cannot write; the ffmpeg encoder needs \"account-key\" or \"entra\"".into(),
            ),
        };
        let containers = containers::ContainerLister::new(
            endpoint.clone(),
            &settings.storage.account,
            access.clone(),
            options.clone(),
            settings.storage.page_size,
        );
        let store = Arc::new(AzureBlobStore::new(
            endpoint.clone(),
            access,
            options.clone(),
            settings.storage.page_size,
            settings.upstream.retry_budget + settings.upstream.timeout,
        ));
        let base = LinkBase::new(endpoint.clone(), settings.links.cdn_base.as_ref());
        let validity = Validity::new(
            settings.links.lifetime,
            settings.links.clock_skew,
            protocol,
            settings.links.window,
            settings.links.response_cache_control.as_deref(),
        );
        let linker: Arc<dyn crate::source::Linker> = match settings.links.mode {
            LinkMode::Public => Arc::new(PublicLinker { base }),
            LinkMode::AccountKeySas => Arc::new(AccountKeySasLinker {
                base,
                signer: signer.ok_or_else(|| missing("storage.account_key"))?,
                validity,
            }),
            LinkMode::AmsContainerSas => Arc::new(links::AmsContainerSasLinker {
                cdn_base: settings
                    .links
                    .cdn_base
                    .as_ref()
                    .map(|u| u.as_str().trim_end_matches('/').to_owned()),
            }),
            LinkMode::UserDelegationSas => Arc::new(UserDelegationLinker::new(
                base,
                endpoint.clone(),
                credential.clone().ok_or_else(|| missing("credential"))?,
                options.clone(),
                validity,
            )),
        };
        let health: Vec<Arc<dyn crate::source::HealthCheck>> = vec![Arc::new(StorageHealth {
            url: endpoint.service_url(&settings.storage.account),
            http: http.clone(),
            credential: credential.clone(),
        })];
        Ok(Self {
            http,
            credential,
            store,
            linker,
            health,
            containers,
            writer,
        })
    }
}

/// Readiness of Blob Storage: the endpoint answers, and the credential (if any) gets a token.
struct StorageHealth {
    url: String,
    http: reqwest::Client,
    credential: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
}

#[async_trait::async_trait]
impl crate::source::HealthCheck for StorageHealth {
    fn name(&self) -> &str {
        "storage"
    }

    /// An upstream every replica shares: its outage is reported, never a reason to take this
    /// replica out of the load balancer (cached answers are still served, stale ones too).
    fn required(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        // Any HTTP answer proves the endpoint is reachable (anonymous requests get 4xx).
        self.http.get(&self.url).send().await.map_err(|e| {
            if e.is_timeout() {
                "the storage endpoint did not answer in time".to_owned()
            } else {
                "the storage endpoint is unreachable".to_owned()
            }
        })?;
        if let Some(credential) = &self.credential {
            credential
                .get_token(&["https://storage.azure.com/.default"], None)
                .await
                .map_err(|_| "the credential cannot get a token for Storage".to_owned())?;
        }
        Ok(())
    }
}
