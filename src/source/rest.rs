//! The JSON REST client the AMS (ARM) and MK.IO backends share: bearer auth, and a retry loop
//! of our own with a per-call budget (the SDK pipeline's policy has no budget per call).
//!
//! - 5xx and connection errors back off (200 ms doubling to 2 s, ±25 % jitter);
//! - 429 waits `Retry-After` (seconds or an HTTP date), else backs off;
//! - every retry must fit `upstream.max_retries` and `upstream.retry_budget`, else the call
//!   ends at once with `Throttled` / `Timeout` / `Unavailable` instead of waiting past it.
//!
//! Reads and writes differ only in how a refusal is read: a 403 (or another 4xx) on a read
//! means the service is misconfigured; on a write (transform, asset, job PUTs) it means the
//! backend does not take writes from us (a retired AMS account, a read-only role or token),
//! which the caller reports as such.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use bytes::Bytes;
use serde::Deserialize;
use tracing::Instrument;
use url::Url;

use super::SourceError;
use crate::config::UpstreamSettings;
use crate::secret::Secret;

/// How the client authenticates.
pub enum Bearer {
    /// An Entra ID token for `scope` (ARM).
    Credential {
        credential: Arc<dyn TokenCredential>,
        scope: String,
    },
    /// A static token (MK.IO).
    Token(Secret),
}

/// Which error envelope the backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorEnvelope {
    /// ARM: `{"error":{"code","message"}}`.
    Arm,
    /// MK.IO: `{"error":{"code","detail"},"status","ref"}`.
    Mkio,
}

/// Whether a call reads or writes (how a 4xx refusal is reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The answer to a call that did not fail.
#[derive(Debug)]
pub enum Reply {
    /// A 2xx, with its status and body.
    Ok { status: u16, body: Bytes },
    /// 404.
    NotFound,
    /// A write the backend refused (4xx other than 401, 404, 429), with its error.
    Refused(Refusal),
}

/// A backend's refusal of a write, as it explained it (code and message, sanitised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// The backend's error, read from its envelope.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub code: String,
    pub message: String,
    pub reference: String,
}

impl BackendError {
    /// `" Code, ref R"`, `" Code"` or `""`: for details and logs (never the message, which
    /// may quote request data).
    pub fn summary(&self) -> String {
        match (self.code.is_empty(), self.reference.is_empty()) {
            (false, false) => format!(" {}, ref {}", self.code, self.reference),
            (false, true) => format!(" {}", self.code),
            (true, false) => format!(" ref {}", self.reference),
            (true, true) => String::new(),
        }
    }
}

pub struct RestClient {
    http: reqwest::Client,
    /// Metric and problem name of the backend: `ams`, `mkio`.
    backend: &'static str,
    /// The backend's name in log lines ("AMS", "MK.IO").
    display: &'static str,
    /// How refusals of our identity are phrased ("ARM refused the service's identity").
    identity_refused: &'static str,
    bearer: Bearer,
    envelope: ErrorEnvelope,
    upstream: UpstreamSettings,
    /// A rejected configuration is logged once, not on every request.
    misconfiguration_logged: AtomicBool,
}

impl RestClient {
    pub fn new(
        http: reqwest::Client,
        backend: &'static str,
        display: &'static str,
        identity_refused: &'static str,
        bearer: Bearer,
        envelope: ErrorEnvelope,
        upstream: &UpstreamSettings,
    ) -> Self {
        Self {
            http,
            backend,
            display,
            identity_refused,
            bearer,
            envelope,
            upstream: upstream.clone(),
            misconfiguration_logged: AtomicBool::new(false),
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// A GET: the body of a 2xx, `None` for 404.
    pub async fn get(
        &self,
        url: &Url,
        operation: &'static str,
    ) -> Result<Option<Bytes>, SourceError> {
        match self
            .call(reqwest::Method::GET, url, None, Access::Read, operation)
            .await?
        {
            Reply::Ok { body, .. } => Ok(Some(body)),
            Reply::NotFound => Ok(None),
            Reply::Refused(_) => unreachable!("reads are never `Refused`"),
        }
    }

    /// One call with retries (see the module doc).
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        access: Access,
        operation: &'static str,
    ) -> Result<Reply, SourceError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header("accept", "application/json");
            request = match &self.bearer {
                Bearer::Credential { credential, scope } => {
                    let token = credential
                        .get_token(&[scope.as_str()], None)
                        .await
                        .map_err(|_| self.misconfigured("the credential could not get a token"))?;
                    request.bearer_auth(token.token.secret())
                }
                Bearer::Token(token) => request.bearer_auth(token.expose()),
            };
            if let Some(body) = body {
                request = request.json(body);
            }
            // One client span per try; the callee continues the trace from it.
            let span = crate::propagation::client_span(method.as_str(), url, attempt, self.backend);
            for (name, value) in crate::propagation::outgoing(&span) {
                request = request.header(name, value);
            }
            let sent = request.send().instrument(span.clone()).await;
            match &sent {
                Ok(response) => {
                    crate::propagation::record_status(&span, response.status().as_u16())
                }
                Err(e) => crate::propagation::record_error(&span, transport_error(e)),
            }
            drop(span);
            let retry_in = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
                    match status {
                        200..=299 => {
                            let body = response.bytes().await.map_err(|e| {
                                if e.is_timeout() {
                                    SourceError::Timeout {
                                        backend: self.backend,
                                    }
                                } else {
                                    self.upstream(&format!("{operation}: the answer was cut off"))
                                }
                            })?;
                            return Ok(Reply::Ok { status, body });
                        }
                        404 => return Ok(Reply::NotFound),
                        401 => {
                            let error = self.error(response).await;
                            return Err(self.misconfigured(&format!(
                                "{} ({status}{})",
                                self.identity_refused,
                                error.summary()
                            )));
                        }
                        403 if access == Access::Read => {
                            let error = self.error(response).await;
                            return Err(self.misconfigured(&format!(
                                "{} ({status}{})",
                                self.identity_refused,
                                error.summary()
                            )));
                        }
                        429 => {
                            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                            if !self.fits(started, attempt, wait) {
                                // The server's hint only: a backoff of ours is no promise.
                                return Err(SourceError::Throttled {
                                    backend: self.backend,
                                    retry_after,
                                });
                            }
                            wait
                        }
                        500..=599 => {
                            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                            if !self.fits(started, attempt, wait) {
                                return Err(if status == 503 {
                                    SourceError::Throttled {
                                        backend: self.backend,
                                        retry_after,
                                    }
                                } else {
                                    let error = self.error(response).await;
                                    self.upstream(&format!(
                                        "{operation}: HTTP {status}{}",
                                        error.summary()
                                    ))
                                });
                            }
                            wait
                        }
                        _ if access == Access::Write => {
                            let error = self.error(response).await;
                            return Ok(Reply::Refused(Refusal {
                                status,
                                code: error.code,
                                message: error.message,
                            }));
                        }
                        _ => {
                            let error = self.error(response).await;
                            return Err(self.upstream(&format!(
                                "{operation}: HTTP {status}{}",
                                error.summary()
                            )));
                        }
                    }
                }
                Err(e) => {
                    let wait = backoff(attempt);
                    if !self.fits(started, attempt, wait) {
                        return Err(if e.is_timeout() {
                            SourceError::Timeout {
                                backend: self.backend,
                            }
                        } else {
                            SourceError::Unavailable {
                                backend: self.backend,
                            }
                        });
                    }
                    wait
                }
            };
            attempt += 1;
            tracing::debug!(
                backend = self.backend,
                operation,
                attempt,
                wait_ms = retry_in.as_millis() as u64,
                "retrying call"
            );
            tokio::time::sleep(retry_in).await;
        }
    }

    /// Whether another try after `wait` stays within the retry count and time budget.
    fn fits(&self, started: Instant, attempt: u32, wait: Duration) -> bool {
        attempt < self.upstream.max_retries
            && started.elapsed() + wait <= self.upstream.retry_budget
    }

    pub fn misconfigured(&self, message: &str) -> SourceError {
        if !self.misconfiguration_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                backend = self.backend,
                cause = message,
                "{} rejects the configuration; answering 503 until fixed",
                self.display
            );
        }
        SourceError::Misconfigured {
            backend: self.backend,
            message: message.to_owned(),
        }
    }

    pub fn upstream(&self, message: &str) -> SourceError {
        SourceError::Upstream {
            backend: self.backend,
            message: message.to_owned(),
        }
    }

    async fn error(&self, response: reqwest::Response) -> BackendError {
        match response.bytes().await {
            Ok(body) => parse_error(self.envelope, &body),
            Err(_) => BackendError::default(),
        }
    }
}

/// How a try that got no answer failed, for its span.
fn transport_error(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// The backend's error from its envelope, each field sanitised (printable, bounded).
pub fn parse_error(envelope: ErrorEnvelope, body: &[u8]) -> BackendError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
        #[serde(rename = "ref", default)]
        reference: Option<String>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        detail: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Envelope>(body) else {
        return BackendError::default();
    };
    let message = match envelope {
        ErrorEnvelope::Arm => parsed.error.message,
        ErrorEnvelope::Mkio => parsed.error.detail.or(parsed.error.message),
    };
    BackendError {
        code: token(parsed.error.code.as_deref().unwrap_or_default(), 64),
        message: text(message.as_deref().unwrap_or_default(), 300),
        reference: token(parsed.reference.as_deref().unwrap_or_default(), 64),
    }
}

/// Visible ASCII only, at most `max` characters (codes, references).
fn token(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect()
}

/// No control characters, white space collapsed, at most `max` characters (messages).
pub fn text(value: &str, max: usize) -> String {
    let collapsed = value
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out: String = collapsed.chars().take(max).collect();
    if collapsed.chars().count() > max {
        out.push('…');
    }
    out
}

/// 200 ms, 400 ms, 800 ms, … capped at 2 s, with ±25 % jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(4)).min(2000);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 51) as u64; // 0..=50 %
    Duration::from_millis(base * (75 + jitter) / 100)
}

/// `Retry-After`: delay-seconds, or an HTTP date (the time left until it, 0 if past).
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_and_mkio_errors_are_read_and_sanitised() {
        let arm = parse_error(
            ErrorEnvelope::Arm,
            br#"{"error":{"code":"BadRequest","message":"Media Services\naccount is retired."}}"#,
        );
        assert_eq!(arm.code, "BadRequest");
        assert_eq!(arm.message, "Media Services account is retired.");
        assert_eq!(arm.summary(), " BadRequest");
        let mkio = parse_error(
            ErrorEnvelope::Mkio,
            br#"{"error":{"code":"Forbidden","detail":"read-only token"},"status":403,"ref":"abc 123"}"#,
        );
        assert_eq!(mkio.code, "Forbidden");
        assert_eq!(mkio.message, "read-only token");
        assert_eq!(mkio.summary(), " Forbidden, ref abc123");
        assert_eq!(
            parse_error(ErrorEnvelope::Arm, b"<html>"),
            BackendError::default()
        );
        assert_eq!(text(&"x".repeat(400), 300).chars().count(), 301);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = time::macros::datetime!(2026-01-01 00:00:00 UTC);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        for attempt in 0..8 {
            let base = 200u64 * (1 << attempt.min(4));
            let base = base.min(2000);
            let wait = backoff(attempt).as_millis() as u64;
            assert!(
                wait >= base * 75 / 100 && wait <= base * 125 / 100,
                "{attempt}: {wait}"
            );
        }
    }

    /// Every try carries a `traceparent` of the caller's trace, naming that try's own span.
    #[tokio::test]
    async fn every_try_sends_the_callers_trace() {
        use opentelemetry::trace::{TraceContextExt, TracerProvider};
        use std::sync::{Arc, Mutex};
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        use tracing_subscriber::layer::SubscriberExt;

        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let recorded = seen.clone();
        let app = axum::Router::new().route(
            "/subscriptions/s/assets",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let recorded = recorded.clone();
                async move {
                    let mut seen = recorded.lock().unwrap();
                    seen.push(
                        headers
                            .get("traceparent")
                            .map(|v| v.to_str().unwrap().to_owned()),
                    );
                    // The first try is throttled: the second is a retry.
                    let status = if seen.len() == 1 { 503 } else { 200 };
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("retry-after", "0")],
                        "{}",
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _default = tracing::subscriber::set_default(subscriber);
        crate::propagation::enable();

        let client = RestClient::new(
            reqwest::Client::new(),
            "ams",
            "AMS",
            "ARM refused the service's identity",
            Bearer::Token(Secret::new("token")),
            ErrorEnvelope::Arm,
            &UpstreamSettings::default(),
        );
        let url = Url::parse(&format!(
            "http://{addr}/subscriptions/s/assets?api-version=2023-01-01"
        ))
        .unwrap();
        let caller = tracing::info_span!("locate");
        let trace_id = caller.context().span().span_context().trace_id();
        let body = client
            .get(&url, "list assets")
            .instrument(caller)
            .await
            .unwrap();
        assert_eq!(body.as_deref(), Some(&b"{}"[..]));

        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let parents: Vec<String> = seen
            .iter()
            .map(|traceparent| {
                let traceparent = traceparent.as_deref().expect("a traceparent on every try");
                let parts: Vec<&str> = traceparent.split('-').collect();
                assert_eq!(parts[0], "00");
                assert_eq!(parts[1], trace_id.to_string(), "the caller's trace");
                assert_eq!(parts[3], "01", "sampled");
                parts[2].to_owned()
            })
            .collect();
        assert_ne!(parents[0], parents[1], "one span per try");
    }
}
