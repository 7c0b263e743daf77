//! The middleware stack as two hand-written tower services instead of a layer per concern.
//!
//! Each `axum::middleware::from_fn` layer costs every request a clone of the boxed inner route
//! and a boxed future, and each `Router::layer` call adds one more boxed route level; the
//! service ran seven of them. Here the same checks run in plain code, in the same order, with
//! no allocation of their own on the common path:
//!
//! - [`RequestIds`] (outermost): a caller's `x-request-id` is kept when usable in logs (1 to
//!   128 visible ASCII characters), else a fresh UUID v4 is set on the request; the answer
//!   carries it.
//! - [`Gate`] (innermost, after tracing, the panic guard and CORS): request count and latency
//!   by route template, `nosniff`/`no-referrer` on every answer, the hostile-input limits, the
//!   auth guard, load shedding and the request timeout. The guard and shedding apply the
//!   matched route's [`Policy`] from the route table; a path that matches no route goes
//!   straight to the `404` fallback. Only a bearer token to validate or a full admission queue
//!   take a boxed, asynchronous path; the timeout's timer is armed only when the handler does
//!   not answer on its first poll.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http_body::Body as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service, ServiceExt};

use super::auth::{Check, Guard};
use super::body::{BodyLimits, read_body};
use super::problem::{Kind, Problem};
use super::request_metrics::record_request;
use super::routes::{Policies, Policy, Shedding};
use super::{MAX_HEADER_BYTES, MAX_URI_BYTES, REQUEST_ID};
use crate::config::ServerSettings;

// --- Request ids ---------------------------------------------------------------------------

/// Keeps a usable caller `x-request-id` or sets a fresh one, and puts it on the answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIds;

impl<S> Layer<S> for RequestIds {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

/// 1 to 128 visible ASCII characters: safe to log.
fn usable_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic())
}

impl<S, B> Service<Request> for RequestIdService<S>
where
    S: Service<Request, Response = axum::http::Response<B>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = match request.headers().get(&REQUEST_ID) {
            Some(id) if usable_request_id(id) => id.clone(),
            _ => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID.clone(), id.clone());
                id
            }
        };
        RequestIdFuture {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pub struct RequestIdFuture<F> {
    inner: F,
    id: Option<HeaderValue>,
}

impl<F, B, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<axum::http::Response<B>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut response = ready!(Pin::new(&mut this.inner).poll(cx))?;
        if let Some(id) = this.id.take() {
            response.headers_mut().entry(&REQUEST_ID).or_insert(id);
        }
        Poll::Ready(Ok(response))
    }
}

/// A UUID v4 from a per-thread generator seeded from the OS once (request ids need to be
/// unique, not secret: no system call per request).
fn new_request_id() -> HeaderValue {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"),
        ));
    }
    // SplitMix64.
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next().to_le_bytes());
    bytes[8..].copy_from_slice(&next().to_le_bytes());
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

// --- The gate ------------------------------------------------------------------------------

/// Metrics, security headers, limits, auth, load shedding and the request timeout.
#[derive(Clone)]
pub struct Gate {
    shared: Arc<Shared>,
}

struct Shared {
    timeout: Duration,
    body: BodyLimits,
    admission: Admission,
    guard: Arc<Guard>,
    policies: Arc<Policies>,
}

impl Gate {
    pub fn new(server: &ServerSettings, guard: Arc<Guard>, policies: Arc<Policies>) -> Self {
        Self {
            shared: Arc::new(Shared {
                timeout: server.request_timeout,
                body: BodyLimits {
                    timeout: server.body_read_timeout,
                    min_rate: server.body_min_rate,
                },
                admission: Admission::new(server),
                guard,
                policies,
            }),
        }
    }
}

impl<S> Layer<S> for Gate {
    type Service = GateService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for GateService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + Unpin + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let policy = self.shared.policies.of(route.as_ref());
        let finish = Finish {
            started: Instant::now(),
            route,
            method: request.method().clone(),
        };
        let state = match self.enter(&mut request, policy) {
            Entered::Refused(response) => State::Done(Some(response)),
            Entered::Admitted(permit) => State::Running {
                future: self.inner.call(request),
                _permit: permit,
                timer: None,
            },
            Entered::Slow { token, policy } => {
                // The ready service goes into the boxed path; a clone stays for the next call.
                let inner = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, inner);
                State::Boxed(Box::pin(slow_path(
                    self.shared.clone(),
                    inner,
                    request,
                    token,
                    policy,
                )))
            }
        };
        GateFuture {
            state,
            timeout: self.shared.timeout,
            finish,
        }
    }
}

enum Entered {
    Refused(Response),
    /// Through, holding a permit unless the route is exempt from load shedding.
    Admitted(Option<OwnedSemaphorePermit>),
    /// A bearer token to validate, or no permit free at once: wait for it.
    Slow {
        token: bool,
        policy: Policy,
    },
}

impl<S> GateService<S> {
    /// Limits, then the matched route's guard, then admission, without waiting. A path that
    /// matched no route goes on to the `404` fallback: it needs no credential, and takes no
    /// permit (nothing runs for it).
    fn enter(&self, request: &mut Request, policy: Option<Policy>) -> Entered {
        if let Some(problem) = limits(request) {
            return Entered::Refused(problem.into_response());
        }
        let Some(policy) = policy else {
            return Entered::Admitted(None);
        };
        match self.shared.guard.check(request, policy.access) {
            Check::Pass => {}
            Check::Refuse(response) => return Entered::Refused(response),
            Check::Token => {
                return Entered::Slow {
                    token: true,
                    policy,
                };
            }
        }
        if policy.shedding == Shedding::Exempt {
            return Entered::Admitted(None);
        }
        // A body is read before the request takes a permit: a slow one must not hold a slot.
        if !request.body().is_end_stream() {
            return Entered::Slow {
                token: false,
                policy,
            };
        }
        match self.shared.admission.permits.clone().try_acquire_owned() {
            Ok(permit) => Entered::Admitted(Some(permit)),
            Err(_) => Entered::Slow {
                token: false,
                policy,
            },
        }
    }
}

/// The asynchronous path: validate a bearer token, read the body, wait in the admission queue,
/// then run the handler under the request timeout.
async fn slow_path<S>(
    shared: Arc<Shared>,
    inner: S,
    mut request: Request,
    token: bool,
    policy: Policy,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    if token
        && let Check::Refuse(response) = shared.guard.check_async(&mut request, policy.access).await
    {
        return response;
    }
    let _permit = if policy.shedding == Shedding::Exempt {
        None
    } else {
        if !request.body().is_end_stream() {
            request = match read_body(request, shared.body).await {
                Ok(request) => request,
                Err(problem) => return problem,
            };
        }
        match shared.admission.admit().await {
            Some(permit) => Some(permit),
            None => return overloaded(),
        }
    };
    match tokio::time::timeout(shared.timeout, inner.oneshot(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => timed_out(shared.timeout),
    }
}

pub struct GateFuture<F> {
    state: State<F>,
    timeout: Duration,
    finish: Finish,
}

enum State<F> {
    Done(Option<Response>),
    Running {
        future: F,
        /// Released when the handler is done (or dropped).
        _permit: Option<OwnedSemaphorePermit>,
        /// Armed on the first poll that finds the handler not done.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    },
    Boxed(BoxFuture<'static, Response>),
}

impl<F> Future for GateFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = match &mut this.state {
            State::Done(response) => response.take().expect("polled after completion"),
            State::Running { future, timer, .. } => match Pin::new(future).poll(cx) {
                Poll::Ready(Ok(response)) => response,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => {
                    let timeout = this.timeout;
                    let started = this.finish.started;
                    let timer = timer.get_or_insert_with(|| {
                        let deadline = tokio::time::Instant::from_std(started) + timeout;
                        Box::pin(tokio::time::sleep_until(deadline))
                    });
                    ready!(timer.as_mut().poll(cx));
                    timed_out(timeout)
                }
            },
            State::Boxed(future) => ready!(future.as_mut().poll(cx)),
        };
        // Handler (and permit) released before the answer leaves.
        this.state = State::Done(None);
        Poll::Ready(Ok(this.finish.finish(response)))
    }
}

/// What every answer gets on its way out.
struct Finish {
    started: Instant,
    route: Option<MatchedPath>,
    method: Method,
}

impl Finish {
    fn finish(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers
            .entry(header::X_CONTENT_TYPE_OPTIONS)
            .or_insert(HeaderValue::from_static("nosniff"));
        headers
            .entry(header::REFERRER_POLICY)
            .or_insert(HeaderValue::from_static("no-referrer"));
        let route = self.route.as_ref().map_or("unmatched", |r| r.as_str());
        record_request(
            route,
            &self.method,
            response.status().as_u16(),
            self.started.elapsed().as_secs_f64(),
        );
        response
    }
}

fn timed_out(timeout: Duration) -> Response {
    Problem::new(
        Kind::RequestTimeout,
        format!("the request took longer than {}s", timeout.as_secs_f64()),
    )
    .into_response()
}

// --- Limits --------------------------------------------------------------------------------

/// Hostile-input limits before anything else runs.
fn limits(request: &Request) -> Option<Problem> {
    if uri_len(request.uri()) > MAX_URI_BYTES {
        return Some(Problem::new(
            Kind::UriTooLong,
            format!("the request target exceeds {MAX_URI_BYTES} bytes"),
        ));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(Problem::new(
            Kind::HeadersTooLarge,
            format!("the request headers exceed {MAX_HEADER_BYTES} bytes"),
        ));
    }
    None
}

/// `uri.to_string().len()` without building the string.
fn uri_len(uri: &axum::http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
}

// --- Load shedding -------------------------------------------------------------------------

/// Load shedding: `max_concurrent_requests` at once, `max_queued_requests` waiting (each at
/// most `queue_timeout`); beyond, `503 overloaded` at once rather than every request timing
/// out. Routes whose policy says so (probes, metrics) are never shed.
struct Admission {
    permits: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

impl Admission {
    fn new(settings: &ServerSettings) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            queued: Default::default(),
            max_queued: settings.max_queued_requests,
            queue_timeout: settings.queue_timeout,
        }
    }

    /// A permit, at once or after waiting in the queue; None: overloaded.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let waited =
            tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(permit)) => Some(permit),
            _ => None,
        }
    }
}

fn overloaded() -> Response {
    metrics::counter!("http_requests_shed_total").increment(1);
    let mut problem = Problem::new(
        Kind::Overloaded,
        "the service is at capacity; retry shortly",
    );
    problem.retry_after = Some(Duration::from_secs(1));
    problem.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_length_matches_its_display() {
        for uri in [
            "/",
            "/assets/x/thumbnails",
            "/assets/x/poster?time=12.5&width=100",
            "http://example.com/a?b",
            "http://example.com:8080/",
            "https://user@example.com/p",
            "*",
        ] {
            let uri: axum::http::Uri = uri.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{uri}");
        }
    }

    #[test]
    fn request_ids_are_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a.len(), 36);
    }
}
