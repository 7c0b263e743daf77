//! `/healthz` (the process answers) and `/readyz` (a report per dependency).

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;

/// Longest a single dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Serialize)]
struct Alive {
    status: &'static str,
}

/// Health answers describe this instant: never cached.
const NO_STORE: (header::HeaderName, HeaderValue) =
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"));

pub async fn healthz() -> Response {
    ([NO_STORE], Json(Alive { status: "ok" })).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness {
    status: &'static str,
    checks: Vec<Check>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Check {
    name: String,
    required: bool,
    status: &'static str,
    latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    // Checks run concurrently, each bounded by CHECK_TIMEOUT.
    let handles: Vec<_> = state
        .resolver
        .backend()
        .health
        .iter()
        .cloned()
        .map(|dep| {
            tokio::spawn(async move {
                let started = Instant::now();
                let result = tokio::time::timeout(CHECK_TIMEOUT, dep.check())
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs()))
                    });
                Check {
                    name: dep.name().to_owned(),
                    required: dep.required(),
                    status: if result.is_ok() { "up" } else { "down" },
                    latency_ms: started.elapsed().as_millis() as u64,
                    detail: result.err(),
                }
            })
        })
        .collect();
    let mut checks = Vec::with_capacity(handles.len());
    for handle in handles {
        checks.push(handle.await.unwrap_or_else(|_| Check {
            name: "unknown".into(),
            required: true,
            status: "down",
            latency_ms: 0,
            detail: Some("the check panicked".into()),
        }));
    }
    // The shared tier is never a reason to stop serving: without it each replica answers
    // from its own cache and the source.
    let started = Instant::now();
    if let Some(healthy) = state.resolver.shared_tier_check().await {
        checks.push(Check {
            name: "shared-cache".into(),
            required: false,
            status: if healthy { "up" } else { "degraded" },
            latency_ms: started.elapsed().as_millis() as u64,
            detail: (!healthy).then(|| {
                "Redis unreachable or slow: answering from this replica's cache and the source"
                    .into()
            }),
        });
    }
    if state.is_draining() {
        checks.push(Check {
            name: "shutdown".into(),
            required: true,
            status: "down",
            latency_ms: 0,
            detail: Some("shutting down: finishing requests, taking no new ones soon".into()),
        });
    }
    let ready = checks.iter().all(|c| !c.required || c.status == "up");
    let degraded = checks.iter().any(|c| c.status != "up");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: match (ready, degraded) {
            (false, _) => "unavailable",
            (true, true) => "degraded",
            (true, false) => "ready",
        },
        checks,
    };
    (status, [NO_STORE], Json(body)).into_response()
}
