//! `POST /assets:batchGet`: many assets in one request, resolved concurrently through the
//! same cache. Each cached answer is spliced in as it was rendered: no re-serialization.

use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::params::{body_bytes, is_json};
use super::problem::{Kind, Problem};
use crate::asset_id::AssetId;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchRequest {
    asset_ids: Vec<String>,
}

/// Lookups run at once per batch (the cache coalesces duplicates across requests anyway).
const CONCURRENCY: usize = 16;

pub async fn batch_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    if !is_json(&headers) {
        return Err(Problem::new(
            Kind::UnsupportedMediaType,
            "the body must be application/json",
        ));
    }
    let body = body_bytes(body)?;
    // The detail names what is wrong, never echoes the client's bytes.
    let request: BatchRequest = serde_json::from_slice(&body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "has the wrong shape",
            _ => "is not valid JSON",
        };
        Problem::new(
            Kind::InvalidBody,
            format!("the body {what}; expected {{\"assetIds\": [\"...\"]}}"),
        )
    })?;
    // Duplicates are resolved (and answered) once, in order of first appearance.
    let mut seen = HashSet::new();
    let ids: Vec<String> = request
        .asset_ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let limit = state.settings.api.batch_limit;
    if ids.len() > limit {
        return Err(Problem::new(
            Kind::InvalidBody,
            format!(
                "{} distinct asset ids; at most {limit} per request",
                ids.len()
            ),
        ));
    }
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
