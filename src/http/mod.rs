//! The HTTP API: routes, the middleware stack and the shared state. Handlers stay thin: they
//! parse, call the resolver and shape the answer.

mod assets;
pub mod auth;
mod batch;
mod demo;
mod health;
mod jobs;
pub mod params;
pub mod problem;

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use tower::ServiceBuilder;
use tower::service_fn;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::services::ServeDir;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Settings;
use crate::resolver::Resolver;
use crate::source::Backend;
use problem::{Kind, Problem};

/// The OpenAPI document served at `/openapi.yaml` (and checked against the router by a test).
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest `POST /assets:batchGet` body (100 ids of 260 characters fit many times over).
const BATCH_BODY_LIMIT: usize = 256 * 1024;

/// State shared by all handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub settings: Settings,
    pub resolver: Resolver,
    /// Thumbnail generation, when the backend has an encoder.
    pub jobs: Option<crate::jobs::Jobs>,
}

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl AppState {
    pub fn new(settings: Settings, backend: Backend) -> Self {
        let jobs = backend
            .encoder
            .clone()
            .map(|encoder| crate::jobs::Jobs::new(encoder, settings.jobs.clone()));
        let resolver = Resolver::new(&settings, backend);
        Self(Arc::new(AppStateInner {
            settings,
            resolver,
            jobs,
        }))
    }
}

/// The API's routes as (method, OpenAPI path, handler): the single list the router is built
/// from and the OpenAPI test compares with `openapi.yaml`.
fn api_routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (
            Method::GET,
            "/assets/{assetId}/thumbnails",
            get(assets::list),
        ),
        (
            Method::GET,
            "/assets/{assetId}/thumbnails/{index}",
            get(assets::thumbnail),
        ),
        (Method::GET, "/assets/{assetId}/poster", get(assets::poster)),
        (
            Method::GET,
            "/assets/{assetId}/storyboard.vtt",
            get(assets::storyboard_vtt),
        ),
        (
            Method::GET,
            "/assets/{assetId}/storyboard.json",
            get(assets::storyboard_json),
        ),
        (
            Method::DELETE,
            "/assets/{assetId}/cache",
            delete(assets::invalidate),
        ),
        (
            Method::POST,
            "/assets/{assetId}/thumbnails:generate",
            post(jobs::generate).layer(DefaultBodyLimit::max(jobs::GENERATE_BODY_LIMIT)),
        ),
        (Method::GET, "/jobs/{jobName}", get(jobs::status)),
        (
            Method::POST,
            "/assets:batchGet",
            post(batch::batch_get).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        ),
        (Method::GET, "/healthz", get(health::healthz)),
        (Method::GET, "/readyz", get(health::readyz)),
        (Method::GET, "/metrics", get(metrics_text)),
        (Method::GET, "/openapi.yaml", get(openapi)),
        (Method::GET, "/", get(demo::index)),
        (Method::GET, "/demo/app.js", get(demo::script)),
        (Method::GET, "/demo/app.css", get(demo::style)),
    ]
}

/// Path under which the local source's files are served (when the source is local).
pub const LOCAL_FILES_ROUTE: &str = "/local/{container}/{blob}";

/// Every (method, path) the service answers, in OpenAPI path syntax.
pub fn route_table(state: &AppState) -> Vec<(Method, &'static str)> {
    let mut table: Vec<_> = api_routes().into_iter().map(|(m, p, _)| (m, p)).collect();
    if state.resolver.backend().local_root.is_some() {
        table.push((Method::GET, LOCAL_FILES_ROUTE));
    }
    if state.settings.bench.bare_body_bytes > 0 {
        table.push((Method::GET, "/bench/bare/{assetId}"));
    }
    table
}

/// The application: routes plus middleware (request id, tracing, timeout, panic guard).
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in api_routes() {
        router = router.route(path, handler);
    }
    if state.settings.bench.bare_body_bytes > 0 {
        let body = bytes::Bytes::from(vec![b' '; state.settings.bench.bare_body_bytes]);
        router = router.route(
            "/bench/bare/{assetId}",
            get(move |_: axum::extract::Path<String>| {
                let body = body.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        body,
                    )
                }
            }),
        );
    }
    if let Some(root) = &state.resolver.backend().local_root {
        let files = ServeDir::new(root)
            .append_index_html_on_directories(false)
            .not_found_service(service_fn(|_| async {
                Ok::<_, Infallible>(
                    Problem::new(Kind::FileNotFound, "no such file in this asset").into_response(),
                )
            }));
        // Only files inside a container folder (not the root's own README or scripts), and no
        // hidden or dot segments.
        router = router.nest(
            crate::source::local::ROUTE_PREFIX,
            Router::new()
                .route_service("/{container}/{*blob}", files)
                .layer(middleware::from_fn(guard_local_path)),
        );
    }
    let timeout = state.settings.server.request_timeout;
    let cors = cors_layer(&state.settings.api.cors_allowed_origins);
    let admission = Arc::new(Admission::new(&state.settings.server));
    let jwt = state.settings.auth.jwt.clone().map(|jwt| {
        let http = crate::azure::http_client(&state.settings.upstream)
            .expect("the JWKS client builds (checked by Settings::validate)");
        auth::JwtValidator::new(jwt, http)
    });
    let guard = Arc::new(auth::Guard::with_jwt(
        &state.settings.auth,
        &state.settings.rate_limit,
        jwt,
    ));
    crate::metrics::handle();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(middleware::from_fn_with_state(admission, admit))
        .layer(middleware::from_fn_with_state(guard, auth::authenticate))
        .layer(middleware::from_fn(limits))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(record_metrics))
        .layer(tower::util::option_layer(cors))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(drop_unusable_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request<Body>| {
                            let request_id = request
                                .extensions()
                                .get::<RequestId>()
                                .and_then(|id| id.header_value().to_str().ok())
                                .unwrap_or_default();
                            // The path only: query strings may carry tokens.
                            tracing::info_span!(
                                "request",
                                method = %request.method(),
                                path = %request.uri().path(),
                                request_id,
                                client = tracing::field::Empty,
                            )
                        })
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
                .layer(CatchPanicLayer::custom(|_| {
                    // The panic message stays in the log (printed by the panic hook), never in
                    // the response.
                    Problem::new(Kind::Internal, "the service failed to answer this request")
                        .into_response()
                })),
        )
        .with_state(state)
}

/// Refuses local file paths with a segment starting with `.` (`.`, `..`, hidden files) or a
/// backslash, once percent-decoded: the file server's own checks are the second line.
async fn guard_local_path(request: Request, next: Next) -> Response {
    let decoded = percent_encoding::percent_decode_str(request.uri().path()).decode_utf8_lossy();
    if decoded.contains('\\') || decoded.split('/').any(|s| s.starts_with('.')) {
        return Problem::new(Kind::FileNotFound, "no such file in this asset").into_response();
    }
    next.run(request).await
}

/// CORS for the configured origins (none: no CORS headers, browsers refuse cross-origin use).
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            REQUEST_ID.clone(),
        ])
        .expose_headers([
            header::ETAG,
            header::CACHE_CONTROL,
            header::RETRY_AFTER,
            header::LOCATION,
            REQUEST_ID.clone(),
        ])
        .max_age(Duration::from_secs(600));
    Some(layer)
}

/// Request count and latency by route template (never the raw path: unbounded labels).
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Longest request target accepted (path and query).
const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes accepted (names and values).
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Hostile-input limits before anything else runs.
async fn limits(request: Request, next: Next) -> Response {
    if request.uri().to_string().len() > MAX_URI_BYTES {
        return Problem::new(
            Kind::UriTooLong,
            format!("the request target exceeds {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Problem::new(
            Kind::HeadersTooLarge,
            format!("the request headers exceed {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// `nosniff` and `no-referrer` on every answer (problems from the limits included).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    response
}

/// A caller's `x-request-id` is kept only when usable in logs: 1 to 128 visible ASCII
/// characters. Anything else is replaced by a fresh id.
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let usable = request.headers().get(&REQUEST_ID).is_none_or(|v| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic())
    });
    if !usable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(State(state): State<AppState>) -> Response {
    metrics::gauge!("cache_entries").set(state.resolver.entry_count().await as f64);
    metrics::gauge!("cache_bytes").set(state.resolver.weighted_size().await as f64);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        crate::metrics::handle().render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        )],
        OPENAPI_YAML,
    )
        .into_response()
}

async fn not_found(request: Request) -> Problem {
    // `/assets//thumbnails`: the router cannot capture an empty segment; say what is wrong.
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/assets/")
        && rest.starts_with('/')
    {
        return Problem::new(Kind::InvalidAssetId, "the asset id is empty");
    }
    Problem::new(
        Kind::RouteNotFound,
        "no route matches this path; see /openapi.yaml",
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        Kind::MethodNotAllowed,
        "this route does not accept that method; see /openapi.yaml",
    )
}

/// Load shedding: `max_concurrent_requests` at once, `max_queued_requests` waiting (each at
/// most `queue_timeout`); beyond, `503 overloaded` at once rather than every request timing
/// out. Probes and metrics are never shed.
struct Admission {
    permits: tokio::sync::Semaphore,
    queued: std::sync::atomic::AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

impl Admission {
    fn new(settings: &crate::config::ServerSettings) -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(settings.max_concurrent_requests),
            queued: Default::default(),
            max_queued: settings.max_queued_requests,
            queue_timeout: settings.queue_timeout,
        }
    }
}

async fn admit(State(admission): State<Arc<Admission>>, request: Request, next: Next) -> Response {
    use std::sync::atomic::Ordering;
    if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    let overloaded = || {
        metrics::counter!("http_requests_shed_total").increment(1);
        let mut problem = Problem::new(
            Kind::Overloaded,
            "the service is at capacity; retry shortly",
        );
        problem.retry_after = Some(Duration::from_secs(1));
        problem.into_response()
    };
    let _permit = match admission.permits.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            if admission.queued.fetch_add(1, Ordering::SeqCst) >= admission.max_queued {
                admission.queued.fetch_sub(1, Ordering::SeqCst);
                return overloaded();
            }
            let waited =
                tokio::time::timeout(admission.queue_timeout, admission.permits.acquire()).await;
            admission.queued.fetch_sub(1, Ordering::SeqCst);
            match waited {
                Ok(Ok(permit)) => permit,
                _ => return overloaded(),
            }
        }
    };
    next.run(request).await
}

async fn request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            Kind::RequestTimeout,
            format!("the request took longer than {}s", timeout.as_secs_f64()),
        )
        .into_response(),
    }
}
