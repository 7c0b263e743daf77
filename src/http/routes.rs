//! The route table: every route the service answers, each with its method, path, policy (who
//! may call it, whether load shedding may refuse it) and handler. The router is built from
//! it, the gate and the auth guard read the matched route's policy from it, and a test holds
//! it against `openapi.yaml`. A path that matches no route gets `404` from everyone: nothing
//! is guessed from the path's text.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, get_service, options, post};
use tower::service_fn;
use tower_http::services::ServeDir;
use tower_http::services::fs::ServeFileSystemResponseBody;

use super::problem::{Kind, Problem};
use super::{AppState, assets, batch, demo, events, health, jobs};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the demo page, the spec, `/healthz`, the local sample files (an `<img>` cannot
    /// send a key).
    Public,
    /// `/readyz`, `/metrics`: a credential with the `ops` role when `auth.ops = "api-key"`.
    Ops,
    /// Writes (cache invalidation, generation) and job states: always a credential with the
    /// `admin` role.
    Admin,
    /// The asset routes: a credential with the `api` role when `auth.api = "api-key"`.
    Api,
    /// `/events/storage`: an Event Grid delivery's own credential (`[events]`: the `code`
    /// secret, or an Entra ID token for `events.entra`); while `events.enabled` is off, `404`
    /// as for a path no route matches.
    Events,
}

/// Whether load shedding may refuse a route when the service is at capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shedding {
    /// Takes an admission permit (and may get `503 overloaded`).
    Shed,
    /// Probes and metrics: answered even when the service is at capacity.
    Exempt,
}

/// What the gate applies to a matched route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub access: Access,
    pub shedding: Shedding,
}

/// One route.
pub struct Route {
    pub method: Method,
    /// In axum's syntax (`{*blob}` for a rest capture).
    pub path: &'static str,
    pub policy: Policy,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn new(
        method: Method,
        path: &'static str,
        access: Access,
        shedding: Shedding,
        handler: MethodRouter<AppState>,
    ) -> Self {
        Self {
            method,
            path,
            policy: Policy { access, shedding },
            handler,
        }
    }

    /// The path in OpenAPI syntax (`{blob}` for a rest capture).
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }
}

/// Every route of this configuration.
pub fn table(state: &AppState) -> Vec<Route> {
    use Access::{Admin, Api, Events, Ops, Public};
    use Shedding::{Exempt, Shed};
    let mut routes = vec![
        Route::new(
            Method::GET,
            "/assets/{assetId}/thumbnails",
            Api,
            Shed,
            get(assets::list),
        ),
        Route::new(
            Method::GET,
            "/assets/{assetId}/thumbnails/{index}",
            Api,
            Shed,
            get(assets::thumbnail),
        ),
        Route::new(
            Method::GET,
            "/assets/{assetId}/poster",
            Api,
            Shed,
            get(assets::poster),
        ),
        Route::new(
            Method::GET,
            "/assets/{assetId}/storyboard.vtt",
            Api,
            Shed,
            get(assets::storyboard_vtt),
        ),
        Route::new(
            Method::GET,
            "/assets/{assetId}/storyboard.json",
            Api,
            Shed,
            get(assets::storyboard_json),
        ),
        Route::new(
            Method::DELETE,
            "/assets/{assetId}/cache",
            Admin,
            Shed,
            delete(assets::invalidate),
        ),
        Route::new(
            Method::POST,
            "/assets/{assetId}/thumbnails:generate",
            Admin,
            Shed,
            post(jobs::generate).layer(DefaultBodyLimit::max(jobs::GENERATE_BODY_LIMIT)),
        ),
        Route::new(
            Method::GET,
            "/jobs/{jobName}",
            Admin,
            Shed,
            get(jobs::status),
        ),
        Route::new(
            Method::DELETE,
            "/jobs/{jobName}",
            Admin,
            Shed,
            delete(jobs::cancel),
        ),
        Route::new(
            Method::POST,
            "/assets:batchGet",
            Api,
            Shed,
            post(batch::batch_get).layer(DefaultBodyLimit::max(super::MAX_BODY_BYTES)),
        ),
        // One path, one policy: the handshake needs the delivery's credential too.
        Route::new(
            Method::POST,
            "/events/storage",
            Events,
            Shed,
            post(events::receive).layer(DefaultBodyLimit::max(super::MAX_BODY_BYTES)),
        ),
        Route::new(
            Method::OPTIONS,
            "/events/storage",
            Events,
            Shed,
            options(events::handshake),
        ),
        Route::new(
            Method::GET,
            "/healthz",
            Public,
            Exempt,
            get(health::healthz),
        ),
        Route::new(Method::GET, "/readyz", Ops, Exempt, get(health::readyz)),
        Route::new(
            Method::GET,
            "/openapi.yaml",
            Public,
            Shed,
            get(super::openapi),
        ),
        Route::new(Method::GET, "/", Public, Shed, get(demo::index)),
        Route::new(Method::GET, "/demo/app.js", Public, Shed, get(demo::script)),
        Route::new(Method::GET, "/demo/app.css", Public, Shed, get(demo::style)),
    ];
    if !state.metrics_apart {
        routes.push(metrics());
    }
    if let Some(root) = &state.local_root {
        let files = ServeDir::new(root)
            .append_index_html_on_directories(false)
            .not_found_service(service_fn(|_| async {
                Ok::<_, Infallible>(
                    Problem::new(Kind::FileNotFound, "no such file in this asset").into_response(),
                )
            }));
        // Only files inside a container folder (not the root's own README or scripts), and no
        // hidden or dot segments. The file server sees the path below `/local`.
        let files = tower::ServiceBuilder::new()
            .map_request(strip_local_prefix)
            .map_response(file_problems)
            .service(files);
        routes.push(Route::new(
            Method::GET,
            "/local/{container}/{*blob}",
            Public,
            Shed,
            get_service(files).layer(middleware::from_fn(guard_local_path)),
        ));
    }
    if state.bench.bare_body_bytes > 0 {
        let body = bytes::Bytes::from(vec![b' '; state.bench.bare_body_bytes]);
        routes.push(Route::new(
            Method::GET,
            "/bench/bare/{assetId}",
            Api,
            Shed,
            // The same shape as the asset routes: a path capture extracted, then a body.
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
        ));
    }
    routes
}

/// `GET /metrics`: in the table, or alone on the metrics listener (`metrics.listen`).
pub fn metrics() -> Route {
    Route::new(
        Method::GET,
        "/metrics",
        Access::Ops,
        Shedding::Exempt,
        get(super::metrics_text),
    )
}

/// The router of a table, and the policies by path for the gate.
pub fn build(routes: Vec<Route>) -> (axum::Router<AppState>, Policies) {
    let mut router = axum::Router::new();
    let mut policies = Policies::default();
    for route in routes {
        let previous = policies.0.insert(route.path, route.policy);
        assert!(
            previous.is_none_or(|p| p == route.policy),
            "{}: one policy per path",
            route.path
        );
        router = router.route(route.path, route.handler);
    }
    (router, policies)
}

/// Each route's policy, by its path (what axum's `MatchedPath` gives).
#[derive(Debug, Default)]
pub struct Policies(HashMap<&'static str, Policy, foldhash::fast::RandomState>);

impl Policies {
    /// The policy of the matched route; `None` for a path that matched none.
    #[inline]
    pub fn of(&self, matched: Option<&axum::extract::MatchedPath>) -> Option<Policy> {
        matched.map(|path| {
            // Every route is in the table the router was built from; a path missing from it
            // would be a bug, and gets the strictest policy rather than none.
            self.0.get(path.as_str()).copied().unwrap_or(Policy {
                access: Access::Admin,
                shedding: Shedding::Shed,
            })
        })
    }
}

/// `/local/{container}/{blob}` -> `/{container}/{blob}` for the file server.
fn strip_local_prefix(mut request: Request) -> Request {
    let uri = request.uri();
    if let Some(rest) = uri.path().strip_prefix(crate::source::local::ROUTE_PREFIX) {
        let path_and_query = match uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        if let Ok(pq) = path_and_query.parse() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}

/// Refuses local file paths with a segment starting with `.` (`.`, `..`, hidden files) or a
/// backslash, once percent-decoded: the file server's own checks are the second line.
/// The file server's own error answers (a range it cannot serve, a failed precondition, a read
/// error) as problems: it answers them with the file's content type and a plain-text or empty
/// body.
fn file_problems(response: Response<ServeFileSystemResponseBody>) -> Response {
    let problem = match response.status() {
        StatusCode::RANGE_NOT_SATISFIABLE => Problem::new(
            Kind::RangeNotSatisfiable,
            "the range cannot be served: one range of bytes within the file, please",
        ),
        StatusCode::PRECONDITION_FAILED => Problem::new(
            Kind::PreconditionFailed,
            "the file was modified since If-Unmodified-Since",
        ),
        status if status.is_server_error() => {
            Problem::new(Kind::Internal, "the file could not be read")
        }
        _ => return response.map(axum::body::Body::new),
    };
    let content_range = response.headers().get(header::CONTENT_RANGE).cloned();
    let mut answer = problem.into_response();
    if let Some(range) = content_range {
        answer.headers_mut().insert(header::CONTENT_RANGE, range);
    }
    answer
}

async fn guard_local_path(request: Request, next: Next) -> Response {
    let decoded = percent_encoding::percent_decode_str(request.uri().path()).decode_utf8_lossy();
    if decoded.contains('\\') || decoded.split('/').any(|s| s.starts_with('.')) {
        return Problem::new(Kind::FileNotFound, "no such file in this asset").into_response();
    }
    next.run(request).await
}
