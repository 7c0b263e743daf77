//! The HTTP API: routes, the middleware stack and the shared state. Handlers stay thin: they
//! parse, call the resolver and shape the answer.

mod assets;
pub mod auth;
mod batch;
mod body;
pub mod client_addr;
mod cors;
mod demo;
pub mod events;
mod gate;
mod health;
mod jobs;
pub mod params;
pub mod problem;
mod rate_limit;
mod request_metrics;
pub mod routes;
mod trace;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::{ApiSettings, BenchSettings, ServerSettings};
use crate::resolver::Resolver;
use crate::source::HealthCheck;
use problem::{Kind, Problem};

/// The OpenAPI document served at `/openapi.yaml` (and checked against the router by a test).
/// Longest request target accepted (path and query).
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes accepted (names and values).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The largest request body any route takes (`POST /assets:batchGet`: 100 ids of 260
/// characters fit many times over); the gate reads bodies
/// up to one byte past it before a route's own limit answers `413`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// State shared by all handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

/// What the HTTP layer is given, built once by the composition root (`server::compose`).
pub struct AppParts {
    pub resolver: Resolver,
    /// Thumbnail generation, or why there is none (the 501 says it).
    pub jobs: Result<crate::jobs::Jobs, String>,
    /// The dependencies `/readyz` reports on.
    pub health: Vec<Arc<dyn HealthCheck>>,
    /// Folder served under `/local/`, when the source is local.
    pub local_root: Option<PathBuf>,
    /// `source.kind`, for answers that depend on it.
    pub source_kind: &'static str,
    pub guard: Arc<auth::Guard>,
    pub api: ApiSettings,
    pub server: ServerSettings,
    pub bench: BenchSettings,
    /// Set on SIGTERM (see [`AppState::start_draining`]).
    pub draining: std::sync::atomic::AtomicBool,
    /// `/metrics` has a listener of its own (`metrics.listen`, [`metrics_app`]): the public
    /// router leaves it out.
    pub metrics_apart: bool,
}

impl Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }

    /// From now on `/readyz` fails (`draining`), while everything else still answers: the
    /// load balancer takes this replica out before it stops accepting.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Every (method, path) the service answers, in OpenAPI path syntax.
pub fn route_table(state: &AppState) -> Vec<(Method, String)> {
    routes::table(state)
        .iter()
        .map(|r| (r.method.clone(), r.openapi_path()))
        .collect()
}

/// The application: the route table's router under the middleware (request ids, the client
/// address, the request span, the panic guard, CORS, then the gate: metrics, security headers, limits, auth, load
/// shedding and the timeout, each by the matched route's policy).
pub fn app(state: AppState) -> Router {
    let routes = routes::table(&state);
    stack(state, routes)
}

/// The metrics listener's application (`metrics.listen`): `GET /metrics` alone, under the same
/// middleware and access policy as on the public listener.
pub fn metrics_app(state: AppState) -> Router {
    stack(state, vec![routes::metrics()])
}

fn stack(state: AppState, routes: Vec<routes::Route>) -> Router {
    let (router, policies) = routes::build(routes);
    let policies = Arc::new(policies);
    let cors = cors::layer(&state.api.cors_allowed_origins);
    crate::metrics::handle();
    // One layer (so one boxed route level) for the whole stack, outermost first.
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(gate::RequestIds)
                .layer(client_addr::ClientAddrLayer::new(
                    &state.server.trusted_proxies,
                ))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(trace::RequestSpan::new(policies.clone()))
                        .on_response(trace::Finished)
                        .on_failure(trace::Failed),
                )
                .layer(CatchPanicLayer::custom(|_| {
                    // The panic message stays in the log (printed by the panic hook), never in
                    // the response.
                    Problem::new(Kind::Internal, "the service failed to answer this request")
                        .into_response()
                }))
                .layer(tower::util::option_layer(cors))
                .layer(gate::Gate::new(
                    &state.server,
                    state.guard.clone(),
                    policies,
                )),
        )
        .with_state(state)
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(State(state): State<AppState>) -> Response {
    metrics::gauge!("cache_entries").set(state.resolver.entry_count().await as f64);
    metrics::gauge!("cache_bytes").set(state.resolver.weighted_size().await as f64);
    metrics::gauge!("cache_max_bytes").set(state.resolver.max_bytes() as f64);
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        crate::metrics::render(),
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
