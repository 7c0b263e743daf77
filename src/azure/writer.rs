//! Writing into an asset's container (the ffmpeg encoder's outputs and job state), over the
//! Blob REST API: Put Blob, Get Blob, Delete Blob and Lease Blob. Account-key access signs a
//! one-blob SAS per request (the SDK has no Shared Key); Entra access sends a bearer token.
//! Reads for ffmpeg get their own read-only one-blob SAS ([`BlobWriter::media_input`]).
//!
//! The write needs more than reading: the `Storage Blob Data Contributor` role on the container
//! (or the account key). A refusal (401/403) is reported as such, never retried.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use time::OffsetDateTime;

use super::blob::BlobEndpoint;
use super::sas::{AccountKeySigner, SAS_VERSION, SasProtocol, SasResource};
use crate::source::{
    AssetLocation, BlobWriter, Lease, Linker, MediaInput, PutCondition, SourceError, Stored,
    WriteError,
};

const BACKEND: &str = "storage";
/// Lifetime of the SAS one write request is signed with.
const REQUEST_SAS_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Tries of one request that failed for a reason that may pass (timeout, 5xx, 429).
const TRIES: u32 = 3;

/// What one request addresses: a blob, the `comp=` operation, and the SAS permissions it
/// needs with account-key access.
#[derive(Clone, Copy)]
struct Blob<'a> {
    location: &'a AssetLocation,
    name: &'a str,
    comp: Option<&'a str>,
    permissions: &'a str,
}

impl<'a> Blob<'a> {
    fn new(location: &'a AssetLocation, name: &'a str, permissions: &'a str) -> Self {
        Self {
            location,
            name,
            comp: None,
            permissions,
        }
    }

    fn lease(location: &'a AssetLocation, name: &'a str) -> Self {
        Self {
            comp: Some("lease"),
            ..Self::new(location, name, "w")
        }
    }
}

/// How the writer authenticates.
#[derive(Clone)]
pub enum WriteAccess {
    AccountKey {
        signer: AccountKeySigner,
        protocol: SasProtocol,
    },
    Entra(Arc<dyn TokenCredential>),
}

/// Writes blobs of `storage.account` (and any account the credential may write to).
pub struct AzureBlobWriter {
    endpoint: BlobEndpoint,
    http: reqwest::Client,
    access: WriteAccess,
    /// Signs the read-only one-blob URLs ffmpeg reads its input through.
    inputs: Arc<dyn Linker>,
    /// `-ca_file` for ffmpeg when the endpoint's certificate is signed by a private CA.
    ca_file: Option<std::path::PathBuf>,
}

impl AzureBlobWriter {
    pub fn new(
        endpoint: BlobEndpoint,
        http: reqwest::Client,
        access: WriteAccess,
        inputs: Arc<dyn Linker>,
        ca_file: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            endpoint,
            http,
            access,
            inputs,
            ca_file,
        }
    }

    /// One request, tried again on failures that may pass.
    async fn send(
        &self,
        method: Method,
        blob: Blob<'_>,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, WriteError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = self
                .request(method.clone(), &blob, headers, body.clone())
                .await?;
            let outcome = request.send().await;
            let transient = match &outcome {
                Ok(r) => {
                    r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => e.is_timeout() || e.is_connect(),
            };
            if !transient || attempt >= TRIES {
                return outcome.map_err(|e| {
                    WriteError::Source(if e.is_timeout() {
                        SourceError::Timeout { backend: BACKEND }
                    } else {
                        SourceError::Unavailable { backend: BACKEND }
                    })
                });
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt * attempt))).await;
        }
    }

    async fn request(
        &self,
        method: Method,
        blob: &Blob<'_>,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<reqwest::RequestBuilder, WriteError> {
        let Blob {
            location,
            name,
            comp,
            permissions,
        } = *blob;
        let mut url = self
            .endpoint
            .blob_url(&location.account, &location.container, name);
        let mut query: Vec<String> = comp.map(|c| format!("comp={c}")).into_iter().collect();
        let mut bearer = None;
        match &self.access {
            WriteAccess::AccountKey { signer, protocol } => {
                if signer.account() != location.account {
                    return Err(WriteError::Source(SourceError::Misconfigured {
                        backend: BACKEND,
                        message: "the asset lives in a storage account whose key is not configured"
                            .into(),
                    }));
                }
                let now = OffsetDateTime::now_utc();
                query.push(signer.sign(
                    SasResource::Blob {
                        container: &location.container,
                        blob: name,
                    },
                    permissions,
                    Some(now - Duration::from_secs(300)),
                    now + REQUEST_SAS_LIFETIME,
                    *protocol,
                    None,
                ));
            }
            WriteAccess::Entra(credential) => {
                let token = credential
                    .get_token(&["https://storage.azure.com/.default"], None)
                    .await
                    .map_err(|_| {
                        WriteError::Source(SourceError::Misconfigured {
                            backend: BACKEND,
                            message: "the credential could not get a token".into(),
                        })
                    })?;
                bearer = Some(token.token.secret().to_owned());
            }
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let mut request = self
            .http
            .request(method, url)
            .header("x-ms-version", SAS_VERSION)
            .header("x-ms-date", http_date(OffsetDateTime::now_utc()));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request
                .header("content-length", body.len().to_string())
                .body(body);
        }
        Ok(request)
    }
}

/// RFC 1123 (`Thu, 03 Dec 2026 17:17:33 GMT`), which `x-ms-date` takes.
fn http_date(t: OffsetDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A non-2xx answer in domain terms (`x-ms-error-code` kept: it names no secret).
fn failure(response: &reqwest::Response) -> WriteError {
    let status = response.status().as_u16();
    let code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(|c| crate::source::rest::text(c, 64))
        .unwrap_or_default();
    match status {
        401 | 403 => WriteError::Refused { status, code },
        409 | 412 => WriteError::Conflict(code),
        404 => WriteError::Source(SourceError::Upstream {
            backend: BACKEND,
            message: format!("404 {code}: the container is gone"),
        }),
        429 | 503 => WriteError::Source(SourceError::Throttled {
            backend: BACKEND,
            retry_after: None,
        }),
        _ => WriteError::Source(SourceError::Upstream {
            backend: BACKEND,
            message: format!("HTTP {status} {code}"),
        }),
    }
}

#[async_trait]
impl BlobWriter for AzureBlobWriter {
    async fn media_input(
        &self,
        location: &AssetLocation,
        name: &str,
        lifetime: Duration,
    ) -> Result<MediaInput, WriteError> {
        let _ = lifetime; // the input linker was built with the job timeout as its lifetime
        let link = self
            .inputs
            .link(location, &[name])
            .await?
            .pop()
            .ok_or_else(|| {
                WriteError::Source(SourceError::Upstream {
                    backend: BACKEND,
                    message: "no link for the input".into(),
                })
            })?;
        let protocols = if link.url.starts_with("https://") {
            "https,tls,tcp"
        } else {
            "http,tcp"
        };
        Ok(MediaInput {
            target: link.url,
            protocols,
            ca_file: self.ca_file.clone(),
        })
    }

    async fn get(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Option<Stored>, WriteError> {
        let response = self
            .send(Method::GET, Blob::new(location, name, "r"), &[], None)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(failure(&response));
        }
        let leased = response
            .headers()
            .get("x-ms-lease-state")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|s| s == "leased" || s == "breaking");
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(WriteError::Source(SourceError::Upstream {
                backend: BACKEND,
                message: format!("{name} is larger than {limit} bytes"),
            }));
        }
        let bytes = response.bytes().await.map_err(|_| {
            WriteError::Source(SourceError::Upstream {
                backend: BACKEND,
                message: "the blob could not be read".into(),
            })
        })?;
        Ok(Some(Stored { bytes, leased }))
    }

    async fn put(
        &self,
        location: &AssetLocation,
        name: &str,
        body: Bytes,
        content_type: &str,
        condition: PutCondition<'_>,
    ) -> Result<(), WriteError> {
        let mut headers = vec![
            ("x-ms-blob-type", "BlockBlob".to_owned()),
            ("content-type", content_type.to_owned()),
        ];
        match condition {
            PutCondition::Any => {}
            PutCondition::Absent => headers.push(("if-none-match", "*".to_owned())),
            PutCondition::Leased(lease) => headers.push(("x-ms-lease-id", lease.id.clone())),
        }
        let response = self
            .send(
                Method::PUT,
                Blob::new(location, name, "cw"),
                &headers,
                Some(body),
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(failure(&response))
        }
    }

    async fn delete(
        &self,
        location: &AssetLocation,
        name: &str,
        lease: Option<&Lease>,
    ) -> Result<(), WriteError> {
        let headers: Vec<(&str, String)> = lease
            .map(|l| ("x-ms-lease-id", l.id.clone()))
            .into_iter()
            .collect();
        let response = self
            .send(
                Method::DELETE,
                Blob::new(location, name, "d"),
                &headers,
                None,
            )
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(failure(&response)),
        }
    }

    async fn acquire(
        &self,
        location: &AssetLocation,
        name: &str,
        duration: Duration,
    ) -> Result<Option<Lease>, WriteError> {
        let id = uuid::Uuid::new_v4().to_string();
        let headers = [
            ("x-ms-lease-action", "acquire".to_owned()),
            ("x-ms-lease-duration", duration.as_secs().to_string()),
            ("x-ms-proposed-lease-id", id.clone()),
        ];
        let response = self
            .send(
                Method::PUT,
                Blob::lease(location, name),
                &headers,
                Some(Bytes::new()),
            )
            .await?;
        match response.status() {
            s if s.is_success() => Ok(Some(Lease {
                location: location.clone(),
                name: name.to_owned(),
                id,
                lock: None,
            })),
            StatusCode::CONFLICT => Ok(None),
            _ => Err(failure(&response)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<(), WriteError> {
        self.lease_action(lease, "renew").await
    }

    async fn release(&self, lease: &Lease) -> Result<(), WriteError> {
        self.lease_action(lease, "release").await
    }
}

impl AzureBlobWriter {
    async fn lease_action(&self, lease: &Lease, action: &str) -> Result<(), WriteError> {
        let headers = [
            ("x-ms-lease-action", action.to_owned()),
            ("x-ms-lease-id", lease.id.clone()),
        ];
        let response = self
            .send(
                Method::PUT,
                Blob::lease(&lease.location, &lease.name),
                &headers,
                Some(Bytes::new()),
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(failure(&response))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_rfc_1123() {
        let t = time::macros::datetime!(2026-12-03 17:07:03 UTC);
        assert_eq!(super::http_date(t), "Thu, 03 Dec 2026 17:07:03 GMT");
    }
}
