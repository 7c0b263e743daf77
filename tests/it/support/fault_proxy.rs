//! A fault-injecting HTTP reverse proxy for Azurite (plain HTTP, 127.0.0.1:0).
//!
//! Every request (method, path and query, headers, body) is forwarded to the upstream and its
//! answer returned as is, unless a queued [`Fault`] applies to it. Faults are consumed in order,
//! each by the next request its [`Target`] matches:
//!
//! - [`Fault::Delay`]: wait, then forward (to trip the client's per-try timeout);
//! - [`Fault::Status`]: answer that status at once with an Azure Storage XML error body and
//!   `x-ms-error-code` (the upstream is not contacted);
//! - [`Fault::Reset`]: no answer at all; the TCP connection is reset (`SO_LINGER` 0, then
//!   closed), so the client sees `ECONNRESET` on a request it already sent;
//! - [`Fault::MalformedXml`]: forward, then answer 200 with the real body cut in half;
//! - [`Fault::TooManyRequests`]: 503 `ServerBusy` with `Retry-After`, as Azure Storage throttles.
//!
//! Besides the one-shot faults, [`FaultProxy::set_marker_loop`] makes every listing page that
//! was asked for with a `marker` point back to itself (`NextMarker` = its own marker): a
//! continuation that never ends.
//!
//! When the upstream cannot be reached (Azurite stopped), the client's connection is closed
//! without an answer, as a dead server would leave it; such requests are counted in
//! [`FaultProxy::upstream_failures`].
//!
//! Point the service at it with `storage.endpoint = "{proxy}/{account}"`: the signed URLs the
//! service hands out then point at the proxy too, which forwards them like anything else.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What happens to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Wait this long, then forward.
    Delay(Duration),
    /// This status with an Azure Storage XML error body; not forwarded.
    Status(u16),
    /// No answer: the connection is reset.
    Reset,
    /// Forward, then answer 200 with the upstream's body cut in half.
    MalformedXml,
    /// 503 `ServerBusy` with `Retry-After`; not forwarded.
    TooManyRequests { retry_after_secs: u64 },
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Delay(_) => FaultKind::Delay,
            Fault::Status(_) => FaultKind::Status,
            Fault::Reset => FaultKind::Reset,
            Fault::MalformedXml => FaultKind::MalformedXml,
            Fault::TooManyRequests { .. } => FaultKind::TooManyRequests,
        }
    }
}

/// A [`Fault`] without its parameters: what the per-fault counters are kept by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    Delay,
    Status,
    Reset,
    MalformedXml,
    TooManyRequests,
}

/// Which requests a fault may apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Requests whose query has `comp=list` (List Blobs, every page).
    Listing,
    /// Any request.
    All,
    /// `PUT` requests (Put Blob, Lease Blob): writes.
    Writes,
}

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query, the value of `sig` replaced by `REDACTED`.
    pub target: String,
    pub fault: Option<FaultKind>,
    /// The W3C `traceparent` the request carried, if any.
    pub traceparent: Option<String>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        if let Some(fault) = self.fault {
            write!(f, " [{fault:?}]")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct ProxyState {
    faults: VecDeque<(Target, Fault)>,
    marker_loop: bool,
    total: usize,
    listing: usize,
    applied: HashMap<FaultKind, usize>,
    upstream_failures: usize,
    seen: Vec<Seen>,
}

/// The running proxy. Cheap to clone: clones share state; the server stops when the last clone
/// is dropped (connections already open end with the test's runtime).
#[derive(Clone)]
pub struct FaultProxy {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<ProxyState>,
    upstream: String,
    client: reqwest::Client,
    addr: Mutex<Option<SocketAddr>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.accept.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 in front of `upstream` (`http://127.0.0.1:P`).
    pub async fn start(upstream: &str) -> Self {
        // Only the origin counts: Azurite's blob endpoint (`.../devstoreaccount1`) works too.
        let upstream = url::Url::parse(upstream)
            .expect("upstream URL")
            .origin()
            .ascii_serialization();
        let client = reqwest::Client::builder()
            // Bytes as stored: never decompress what is passed through.
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            // A fresh connection per request: after an upstream restart no stale pooled
            // connection fails a request, and no pool outlives the test's runtime.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("proxy client");
        let proxy = Self {
            shared: Arc::new(Shared {
                state: Mutex::new(ProxyState::default()),
                upstream,
                client,
                addr: Mutex::new(None),
                accept: Mutex::new(None),
            }),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        *proxy.shared.addr.lock().unwrap() = Some(listener.local_addr().expect("local addr"));
        // The accept loop holds a weak reference: dropping the last `FaultProxy` stops it.
        let weak = Arc::downgrade(&proxy.shared);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Some(shared) = weak.upgrade() else { return };
                tokio::spawn(serve_connection(FaultProxy { shared }, tcp));
            }
        });
        *proxy.shared.accept.lock().unwrap() = Some(task);
        proxy
    }

    /// `http://127.0.0.1:P`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://127.0.0.1:P/{account}`: the `storage.endpoint` template that goes through the
    /// proxy.
    pub fn endpoint_template(&self) -> String {
        format!("{}/{{account}}", self.base_url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr.lock().unwrap().expect("bound")
    }

    fn state(&self) -> MutexGuard<'_, ProxyState> {
        // A failed assertion elsewhere must not poison the proxy for the rest of the test.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- faults ----

    /// Queues `fault` for the next request `target` matches.
    pub fn push_fault(&self, target: Target, fault: Fault) {
        self.push_faults(target, fault, 1);
    }

    /// Queues `fault` for the next `times` requests `target` matches.
    pub fn push_faults(&self, target: Target, fault: Fault, times: usize) {
        self.state()
            .faults
            .extend(std::iter::repeat_n((target, fault), times));
    }

    /// Faults queued and not applied yet.
    pub fn pending_faults(&self) -> usize {
        self.state().faults.len()
    }

    /// While on, a listing page asked for with `marker=M` answers `NextMarker` M: the
    /// continuation loops on that page forever (the first page, without a marker, is intact).
    pub fn set_marker_loop(&self, on: bool) {
        self.state().marker_loop = on;
    }

    // ---- counters ----

    /// Requests with `comp=list` received (faulted or not).
    pub fn listing_hits(&self) -> usize {
        self.state().listing
    }

    /// Requests without `comp=list` (blob reads, SAS URL fetches, readiness probes).
    pub fn other_hits(&self) -> usize {
        let s = self.state();
        s.total - s.listing
    }

    /// How many times a fault of this kind was applied.
    pub fn applied(&self, kind: FaultKind) -> usize {
        self.state().applied.get(&kind).copied().unwrap_or(0)
    }

    /// Requests that could not be forwarded (upstream unreachable); their connection was closed.
    pub fn upstream_failures(&self) -> usize {
        self.state().upstream_failures
    }

    /// Every request received so far, in order (SAS signatures redacted).
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// The last 30 requests of [`Self::seen`], one a line, for assertion messages.
    pub fn journal(&self) -> String {
        let seen = self.seen();
        let skipped = seen.len().saturating_sub(30);
        let mut lines: Vec<String> = seen[skipped..].iter().map(ToString::to_string).collect();
        if skipped > 0 {
            lines.insert(0, format!("({skipped} earlier requests)"));
        }
        lines.join("\n")
    }
}

/// Resets the connection when notified (the [`Fault::Reset`] handler cannot fail otherwise).
#[derive(Clone)]
struct Kill(Arc<Notify>);

async fn serve_connection(proxy: FaultProxy, tcp: tokio::net::TcpStream) {
    // A second handle on the socket, to set SO_LINGER 0 before closing it: the close then sends
    // RST, not FIN.
    let Ok(std_tcp) = tcp.into_std() else { return };
    let Ok(twin) = std_tcp.try_clone() else {
        return;
    };
    let Ok(tcp) = tokio::net::TcpStream::from_std(std_tcp) else {
        return;
    };
    let kill = Arc::new(Notify::new());
    let router = Router::new()
        .fallback(handle)
        .with_state(proxy)
        .layer(Extension(Kill(kill.clone())))
        .layer(DefaultBodyLimit::disable());
    let service = TowerToHyperService::new(router);
    let builder = ConnBuilder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::select! {
        _ = connection => {}
        _ = kill.notified() => {
            if let Ok(twin) = tokio::net::TcpStream::from_std(twin) {
                let _ = twin.set_zero_linger();
            }
            // `connection` (and the socket it owns) is dropped here: RST.
        }
    }
}

async fn handle(
    State(proxy): State<FaultProxy>,
    Extension(kill): Extension<Kill>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let listing = query.iter().any(|(k, v)| k == "comp" && v == "list");
    let marker = query
        .iter()
        .find(|(k, _)| k == "marker")
        .map(|(_, v)| v.clone());

    let (fault, marker_loop) = {
        let mut s = proxy.state();
        s.total += 1;
        if listing {
            s.listing += 1;
        }
        let position = s.faults.iter().position(|(target, _)| match target {
            Target::All => true,
            Target::Listing => listing,
            Target::Writes => method == Method::PUT,
        });
        let fault = position.and_then(|i| s.faults.remove(i)).map(|(_, f)| f);
        if let Some(fault) = &fault {
            *s.applied.entry(fault.kind()).or_default() += 1;
        }
        s.seen.push(Seen {
            method: method.clone(),
            target: redact_sig(&path_and_query),
            fault: fault.as_ref().map(Fault::kind),
            traceparent: headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        (fault, s.marker_loop && listing && marker.is_some())
    };

    match fault {
        None => {}
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Status(status)) => return storage_error(status, None),
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            return storage_error(503, Some(retry_after_secs));
        }
        Some(Fault::Reset) => return reset(&kill).await,
        Some(Fault::MalformedXml) => {
            let Some((_, headers, body)) =
                forward(&proxy, &method, &path_and_query, &headers, body).await
            else {
                return reset(&kill).await;
            };
            let cut = body.slice(..body.len() / 2);
            return respond(StatusCode::OK, &headers, cut, false);
        }
    }

    let Some((status, response_headers, mut response_body)) =
        forward(&proxy, &method, &path_and_query, &headers, body).await
    else {
        return reset(&kill).await;
    };
    if marker_loop
        && status == StatusCode::OK
        && let Some(marker) = marker
    {
        response_body = loop_next_marker(&response_body, &marker);
    }
    respond(
        status,
        &response_headers,
        response_body,
        method == Method::HEAD,
    )
}

/// Ends the connection without an answer (the handler's future is dropped with it).
async fn reset(kill: &Kill) -> Response {
    kill.0.notify_one();
    std::future::pending().await
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), plus the ones
/// the forwarding client or this server set themselves.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// Sends the request upstream; `None` when the upstream cannot be reached.
async fn forward(
    proxy: &FaultProxy,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Option<(StatusCode, HeaderMap, Bytes)> {
    let url = format!("{}{path_and_query}", proxy.shared.upstream);
    let mut request = proxy.shared.client.request(method.clone(), url);
    for (name, value) in headers {
        if !is_hop_by_hop(name) {
            request = request.header(name, value);
        }
    }
    let result = async {
        let response = request.body(body).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, headers, body))
    }
    .await;
    match result {
        Ok(answer) => Some(answer),
        Err(_) => {
            proxy.state().upstream_failures += 1;
            None
        }
    }
}

fn respond(status: StatusCode, headers: &HeaderMap, body: Bytes, head: bool) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        // A HEAD answer keeps the upstream's Content-Length (of the body it did not send).
        if !is_hop_by_hop(name) || (head && name == header::CONTENT_LENGTH) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

/// An Azure Storage error answer: XML body, `x-ms-error-code`, `x-ms-request-id`, and
/// `Retry-After` when given.
fn storage_error(status: u16, retry_after_secs: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).expect("fault status is a valid code");
    let (code, message) = match status.as_u16() {
        500 => (
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        ),
        503 => (
            "ServerBusy",
            "The server is currently unable to receive requests. Please retry your request.",
        ),
        504 | 408 => (
            "OperationTimedOut",
            "The operation could not be completed within the permitted time.",
        ),
        // What Storage answers an identity with a read-only role (Storage Blob Data Reader).
        403 => (
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        ),
        _ => ("InternalError", "Fault injected by the test proxy."),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\n\
         RequestId:{id}\nTime:{time}</Message></Error>",
        id = uuid::Uuid::new_v4(),
        time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339"),
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    h.insert("x-ms-error-code", HeaderValue::from_static(code));
    h.insert(
        "x-ms-request-id",
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID"),
    );
    if let Some(secs) = retry_after_secs {
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("digits"),
        );
    }
    response
}

/// The listing page with its `NextMarker` (`<NextMarker>m</NextMarker>`, or `<NextMarker/>` on
/// the last page) replaced by `marker`.
fn loop_next_marker(body: &Bytes, marker: &str) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let escaped = marker
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let element = format!("<NextMarker>{escaped}</NextMarker>");
    let span = match (text.find("<NextMarker>"), text.find("</NextMarker>")) {
        (Some(start), Some(end)) if start < end => Some((start, end + "</NextMarker>".len())),
        _ => ["<NextMarker/>", "<NextMarker />"]
            .iter()
            .find_map(|empty| text.find(empty).map(|start| (start, start + empty.len()))),
    };
    match span {
        Some((start, end)) => Bytes::from(format!("{}{element}{}", &text[..start], &text[end..])),
        None => body.clone(),
    }
}

/// `sig=...` replaced by `sig=REDACTED` (journals end up in assertion messages).
fn redact_sig(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("sig=") {
                "sig=REDACTED".to_owned()
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}
