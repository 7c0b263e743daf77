//! `POST /assets/{assetId}/thumbnails:generate`, `GET /jobs/{jobName}` and
//! `DELETE /jobs/{jobName}`: thumbnail generation through the configured encoder (admin routes:
//! generation is a write).

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::body::{Json, JsonBody};
use super::params::{AssetPath, capture, path_params};
use super::problem::{Kind, Problem};
use crate::jobs::{GenerateRequest, Job, JobFailure, JobsError};
use crate::url_path::encode_segment;

/// Largest generate body accepted (a few short fields).
pub const GENERATE_BODY_LIMIT: usize = 4 * 1024;

/// `POST /assets/{assetId}/thumbnails:generate`: 202 with the job (new or already running),
/// 200 when that job already finished; `Location: /jobs/{name}` either way.
pub async fn generate(
    State(state): State<AppState>,
    path: AssetPath,
    body: Result<Json<GenerateRequest>, Problem>,
) -> Result<Response, Problem> {
    // Without an encoder the body does not matter: the answer is 501 whatever it holds.
    let jobs = state.jobs.as_ref().map_err(|reason| {
        Problem::from(JobsError::Unsupported {
            reason: reason.clone(),
        })
    })?;
    let Json(request) = body?;
    let submitted = jobs.generate(path.id(), &request).await?;
    Ok(job_response(
        &submitted.job,
        jobs.backend(),
        jobs.settings().poll_interval,
        true,
    ))
}

/// `GET /jobs/{jobName}`: the job as the backend reports it now. The first answer that sees it
/// finished drops the output asset's cache entry, so its thumbnails are listed afresh.
pub async fn status(State(state): State<AppState>, name: JobName) -> Result<Response, Problem> {
    let jobs = state.jobs.as_ref().map_err(|reason| {
        Problem::from(JobsError::Unsupported {
            reason: reason.clone(),
        })
    })?;
    let status = jobs.status(&name.0).await?;
    if status.newly_finished
        && let Ok(output) = crate::asset_id::AssetId::parse(&status.job.output_asset)
    {
        state.resolver.invalidate(&output).await;
    }
    Ok(job_response(
        &status.job,
        jobs.backend(),
        jobs.settings().poll_interval,
        false,
    ))
}

/// `DELETE /jobs/{jobName}`: asks the encoder to cancel the job. 202 with the job while the
/// cancel is under way (`Canceling`, or still running on the encoder's side), 200 once the job
/// is final (`Canceled`, or it had ended before: a cancel changes nothing then).
pub async fn cancel(State(state): State<AppState>, name: JobName) -> Result<Response, Problem> {
    let jobs = state.jobs.as_ref().map_err(|reason| {
        Problem::from(JobsError::Unsupported {
            reason: reason.clone(),
        })
    })?;
    let job = jobs.cancel(&name.0).await?;
    Ok(job_response(
        &job,
        jobs.backend(),
        jobs.settings().poll_interval,
        true,
    ))
}

/// No body (or an empty one): every default.
impl JsonBody for GenerateRequest {
    const WRONG_SHAPE: &'static str = "has an unknown field or a value of the wrong type; \
         fields: start, step, range, width, height, format (strings), spriteColumns (a number)";
    const NOT_JSON: &'static str = "is not valid JSON";

    fn when_empty() -> Option<Self> {
        Some(GenerateRequest::default())
    }
}

/// `{jobName}`, as given (checked by the job service).
pub struct JobName(String);

impl<S: Send + Sync> FromRequestParts<S> for JobName {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state, || {
            Problem::new(
                Kind::InvalidParameter,
                "the job name is not valid UTF-8 once percent-decoded",
            )
        })
        .await?;
        Ok(Self(
            capture(&params, "jobName").unwrap_or_default().to_owned(),
        ))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView<'a> {
    name: &'a str,
    backend: &'static str,
    transform: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
    input_asset: &'a str,
    output_asset: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a JobFailure>,
    links: Links,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    self_: String,
    /// The output's thumbnails, once the job finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    thumbnails: Option<String>,
}

fn job_response(job: &Job, backend: &'static str, poll: Duration, submit: bool) -> Response {
    let location = format!("/jobs/{}", encode_segment(&job.name));
    let finished = job.state == crate::jobs::JobState::Finished;
    let view = JobView {
        name: &job.name,
        backend,
        transform: &job.transform,
        state: job.state.as_str(),
        progress: job.progress,
        input_asset: &job.input_asset,
        output_asset: &job.output_asset,
        created: job.created.as_deref(),
        started: job.started.as_deref(),
        ended: job.ended.as_deref(),
        error: job.error.as_ref(),
        links: Links {
            self_: location.clone(),
            thumbnails: finished
                .then(|| format!("/assets/{}/thumbnails", encode_segment(&job.output_asset))),
        },
    };
    let status = if submit && !job.state.is_final() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let body = serde_json::to_vec(&view).expect("a job view serializes");
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if submit && let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    if !job.state.is_final() {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(poll.as_secs().max(1)),
        );
    }
    response
}

impl From<JobsError> for Problem {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::Unsupported { reason } => Problem::new(
                Kind::GenerationUnsupported,
                format!("thumbnail generation is unavailable: {reason}"),
            ),
            JobsError::NoVideo { pattern } => Problem::new(
                Kind::NoVideo,
                match pattern {
                    Some(p) => format!("the asset has no blob matching jobs.input_pattern ({p}) to generate thumbnails from"),
                    None => "the asset has no .mp4 video to generate thumbnails from (set jobs.input_pattern for other names)".to_owned(),
                },
            ),
            JobsError::Invalid(invalid) => Problem::new(
                Kind::InvalidBody,
                format!("{}: {}", invalid.field, invalid.message),
            ),
            JobsError::InvalidName => Problem::new(
                Kind::InvalidParameter,
                "not a job name this service gives (see the Location of a generate answer)",
            ),
            JobsError::Gone { backend, action } => Problem::new(
                Kind::AssetNotFound,
                format!(
                    "the {backend} backend answered 404 when asked to {action}: the account, \
                     project, transform or asset is gone"
                ),
            ),
            JobsError::JobNotFound => {
                Problem::new(Kind::JobNotFound, "the backend has no such job")
            }
            JobsError::Refused {
                backend,
                action,
                refusal,
            } => {
                let code = if refusal.code.is_empty() {
                    String::new()
                } else {
                    format!(" {}", refusal.code)
                };
                let message = if refusal.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", refusal.message)
                };
                Problem::new(
                    Kind::GenerationRefused,
                    format!(
                        "thumbnail generation is unavailable on this {backend} account: it \
                         refused to {action} (HTTP {}{code}{message})",
                        refusal.status
                    ),
                )
            }
            JobsError::AttemptsExhausted { last } => {
                let cause = last
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.code, e.message))
                    .unwrap_or_else(|| last.state.as_str().to_owned());
                Problem::new(
                    Kind::GenerationFailed,
                    format!(
                        "the last {} jobs for this asset and specification failed; the latest, \
                         {}, ended with {cause}",
                        crate::jobs::MAX_ATTEMPTS,
                        last.name
                    ),
                )
            }
            JobsError::Source(source) => Problem::from(&source),
        }
    }
}
