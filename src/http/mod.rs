//! The HTTP API: routes, the middleware stack and the shared state. Handlers stay thin: they
//! parse, call the resolver and shape the answer.

mod assets;
pub mod auth;
mod batch;
mod demo;
mod gate;
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
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use tower::ServiceBuilder;
use tower::service_fn;
use tower_http::catch_panic::CatchPanicLayer;
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
    let cors = cors_layer(&state.settings.api.cors_allowed_origins);
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
    // One layer (so one boxed route level) for the whole stack, outermost first: request ids,
    // the request span, the panic guard, CORS, then metrics, security headers, limits, auth,
    // load shedding and the timeout (`gate`).
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(gate::RequestIds)
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|request: &Request<Body>| {
                            let request_id = request
                                .headers()
                                .get(&REQUEST_ID)
                                .and_then(|id| id.to_str().ok())
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
                .layer(CatchPanicLayer::custom(|_| {
                    // The panic message stays in the log (printed by the panic hook), never in
                    // the response.
                    Problem::new(Kind::Internal, "the service failed to answer this request")
                        .into_response()
                }))
                .layer(tower::util::option_layer(cors))
                .layer(gate::Gate::new(&state.settings.server, guard)),
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
