//! `POST /assets:batchGet`: many assets in one request, resolved concurrently through the
//! same cache. Each cached answer is spliced in as it was rendered: no re-serialization.

use std::collections::HashSet;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::auth::Identity;
use super::body::{Json, JsonBody};
use super::problem::{Kind, Problem};
use crate::asset_id::AssetId;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRequest {
    asset_ids: Vec<String>,
}

/// Lookups run at once per batch (the cache coalesces duplicates across requests anyway).
const CONCURRENCY: usize = 16;

impl JsonBody for BatchRequest {
    const WRONG_SHAPE: &'static str = "has the wrong shape; expected {\"assetIds\": [\"...\"]}";
    const NOT_JSON: &'static str = "is not valid JSON; expected {\"assetIds\": [\"...\"]}";
}

pub async fn batch_get(
    State(state): State<AppState>,
    identity: Option<Extension<Identity>>,
    Json(request): Json<BatchRequest>,
) -> Result<Response, Problem> {
    // Duplicates are resolved (and answered) once, in order of first appearance.
    let mut seen = HashSet::new();
    let ids: Vec<String> = request
        .asset_ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let limit = state.api.batch_limit;
    if ids.len() > limit {
        return Err(Problem::new(
            Kind::InvalidBody,
            format!(
                "{} distinct asset ids; at most {limit} per request",
                ids.len()
            ),
        ));
    }
    state.guard.charge_batch(identity.as_deref(), ids.len())?;
    let lookups = ids.iter().cloned().map(|raw| {
        let state = state.clone();
        async move {
            match AssetId::parse(&raw) {
                Err(e) => Err(Problem::new(Kind::InvalidAssetId, e.to_string())),
                Ok(id) => state.resolver.resolve(&id).await.map_err(Problem::from),
            }
        }
    });
    let results: Vec<_> = futures::stream::iter(lookups)
        .buffered(CONCURRENCY)
        .collect()
        .await;

    let mut out = Vec::with_capacity(64 + results.len() * 512);
    out.extend_from_slice(b"{\"results\":[");
    for (i, (raw, result)) in ids.iter().zip(results).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"assetId\":");
        out.extend_from_slice(&serde_json::to_vec(raw).expect("strings serialize"));
        match result {
            Ok(resolved) => {
                out.extend_from_slice(b",\"status\":200,\"result\":");
                out.extend_from_slice(resolved.body());
            }
            Err(problem) => {
                out.extend_from_slice(
                    format!(",\"status\":{},\"problem\":", problem.status().as_u16()).as_bytes(),
                );
                out.extend_from_slice(&problem.to_json());
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    let mut response = (StatusCode::OK, out).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
