//! The HTTP API: routes, the middleware stack and the shared state. Handlers stay thin: they
//! parse, call the resolver and shape the answer.

mod assets;
mod health;
pub mod params;
pub mod problem;

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
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

/// State shared by all handlers (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub settings: Settings,
    pub resolver: Resolver,
}

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl AppState {
    pub fn new(settings: Settings, backend: Backend) -> Self {
        let resolver = Resolver::new(&settings, backend);
        Self(Arc::new(AppStateInner { settings, resolver }))
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
        (Method::GET, "/healthz", get(health::healthz)),
        (Method::GET, "/readyz", get(health::readyz)),
        (Method::GET, "/openapi.yaml", get(openapi)),
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
    table
}

/// The application: routes plus middleware (request id, tracing, timeout, panic guard).
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in api_routes() {
        router = router.route(path, handler);
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
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(
            ServiceBuilder::new()
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
