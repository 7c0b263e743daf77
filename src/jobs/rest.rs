//! Generation through a REST encoder (AMS, MK.IO): a transform with a thumbnail preset, an
//! output asset and a job, under names derived from the request so that a repeat finds the
//! same job instead of starting another.
//!
//! Names (prefix `jobs.name_prefix`, default `ams-thumbnails`; `S` = 8 hex digits of the
//! specification, `I` = 12 hex digits of the input asset's name):
//! - transform `{prefix}-{S}`: one per specification, shared by every asset;
//! - job `{prefix}-{S}-{I}`, then `-2`, `-3`, … for new attempts after a failed one (the job
//!   name alone tells which transform it belongs to, so `GET /jobs/{name}` needs nothing else);
//! - output asset `{input}-thumbnails-{S}` (the input name cut to 200 characters plus `-{I}`
//!   when longer).
//!
//! The backends ([`super::ams::AmsEncoder`], [`super::mkio::MkioEncoder`]) say where (URLs)
//! and what (the preset, the output asset); this module makes the calls, the same on both, and
//! knows neither the HTTP status codes of its own API nor caching.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    GenerateRequest, Generator, Job, JobFailure, JobSettings, JobState, JobsError, MAX_ATTEMPTS,
    Names, Status, Submitted, ThumbnailSpec,
};
use crate::asset_id::AssetId;
use crate::source::rest::RestClient;
use crate::source::{AssetRecord, SourceError};

/// What differs between the AMS and MK.IO encoding APIs: URLs and the preset's shape. Jobs
/// have the same shape on both (MK.IO mirrors AMS), so [`RestJobs`] makes the calls itself.
#[async_trait]
pub trait Encoder: Send + Sync {
    /// `ams`, `mkio`.
    fn backend(&self) -> &'static str;
    fn rest(&self) -> &RestClient;
    /// The asset an id names.
    async fn input(&self, id: &AssetId) -> Result<AssetRecord, SourceError>;
    fn transform_url(&self, name: &str) -> url::Url;
    fn job_url(&self, transform: &str, name: &str) -> url::Url;
    /// `POST {job}/cancelJob`: AMS `Jobs_CancelJob` (Encoding.json 2022-07-01), MK.IO
    /// `POST …/media/transforms/{t}/jobs/{j}/cancelJob` (Media API 0.26.14).
    fn cancel_url(&self, transform: &str, name: &str) -> url::Url {
        let mut url = self.job_url(transform, name);
        url.path_segments_mut()
            .expect("a job URL is a base URL")
            .push("cancelJob");
        url
    }
    fn asset_url(&self, name: &str) -> url::Url;
    /// The transform output's `preset` for `spec`.
    fn preset(&self, spec: &ThumbnailSpec) -> serde_json::Value;
    /// The output asset's `properties` (it goes to the input's storage).
    fn output_asset_properties(&self, input: &AssetRecord, container: &str) -> serde_json::Value;
}

/// Generation through a REST encoder: names, idempotency, attempts.
pub struct RestJobs {
    encoder: Arc<dyn Encoder>,
    settings: JobSettings,
    /// Submissions for one asset and specification go one at a time (64 stripes, bounded).
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Jobs seen finished (bounded): the output's cache entry is dropped once, not per poll.
    finished: moka::future::Cache<String, ()>,
}

impl RestJobs {
    pub fn new(encoder: Arc<dyn Encoder>, settings: JobSettings) -> Self {
        Self {
            encoder,
            settings,
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            finished: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
        }
    }

    /// Finds or starts the job generating `request`'s thumbnails for asset `id`.
    async fn submit(
        &self,
        id: &AssetId,
        request: &GenerateRequest,
    ) -> Result<Submitted, JobsError> {
        let spec = ThumbnailSpec::resolve(request, &self.settings.defaults)?;
        let input = self.timed("input", self.encoder.input(id)).await?;
        let names = Names::new(&self.settings.name_prefix, &spec, &input.name);
        let stripe = &self.stripes[names.stripe(self.stripes.len())];
        let _one_at_a_time = stripe.lock().await;
        let mut last_failed = None;
        let mut free_name = None;
        for attempt in 1..=MAX_ATTEMPTS {
            let name = names.job(attempt);
            match self
                .timed("get_job", self.get_job(&names.transform, &name))
                .await?
            {
                None => {
                    free_name = Some(name);
                    break;
                }
                Some(job) if matches!(job.state, JobState::Error | JobState::Canceled) => {
                    last_failed = Some(job);
                }
                Some(job) => {
                    metrics::counter!("thumbnail_jobs_submitted_total", "backend" => self.backend(), "result" => "existing").increment(1);
                    return Ok(Submitted {
                        job,
                        created: false,
                    });
                }
            }
        }
        let Some(job_name) = free_name else {
            let last = last_failed.expect("every attempt was looked at");
            return Err(JobsError::AttemptsExhausted {
                last: Box::new(last),
            });
        };
        let result = async {
            let preset = self.encoder.preset(&spec);
            self.timed(
                "put_transform",
                self.put(
                    self.encoder.transform_url(&names.transform),
                    transform_body(preset),
                    "create the transform",
                ),
            )
            .await?;
            let properties = self
                .encoder
                .output_asset_properties(&input, &names.output_container);
            self.timed(
                "put_asset",
                self.put(
                    self.encoder.asset_url(&names.output),
                    serde_json::json!({ "properties": properties }),
                    "create the output asset",
                ),
            )
            .await?;
            let body = self
                .timed(
                    "put_job",
                    self.put(
                        self.encoder.job_url(&names.transform, &job_name),
                        job_body(&input.name, &names.output),
                        "submit the job",
                    ),
                )
                .await?;
            self.job_from(&names.transform, &body, "put job")
        }
        .await;
        let outcome = match &result {
            Ok(_) => "created",
            Err(JobsError::Refused { .. }) => "refused",
            Err(_) => "error",
        };
        metrics::counter!("thumbnail_jobs_submitted_total", "backend" => self.backend(), "result" => outcome).increment(1);
        let job = result?;
        tracing::info!(
            backend = self.backend(),
            job = job.name,
            transform = job.transform,
            output = job.output_asset,
            "thumbnail job submitted"
        );
        Ok(Submitted { job, created: true })
    }

    /// The job `name`, as the backend reports it now.
    async fn poll(&self, name: &str) -> Result<Status, JobsError> {
        let transform =
            Names::transform_of(&self.settings.name_prefix, name).ok_or(JobsError::InvalidName)?;
        let job = self
            .timed("get_job", self.get_job(&transform, name))
            .await?
            .ok_or(JobsError::JobNotFound)?;
        let mut newly_finished = false;
        if job.state.is_final()
            && self
                .finished
                .entry(name.to_owned())
                .or_insert(())
                .await
                .is_fresh()
        {
            newly_finished = job.state == JobState::Finished;
            metrics::counter!("thumbnail_jobs_completed_total", "backend" => self.backend(), "state" => job.state.as_str()).increment(1);
        }
        Ok(Status {
            job,
            newly_finished,
        })
    }

    /// An encoder call with the upstream metrics every backend call has.
    async fn timed<T, E>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E>
    where
        E: Into<JobsError> + Clone,
    {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => match e.clone().into() {
                JobsError::Refused { .. } => "refused",
                JobsError::Source(s) => crate::source::instrumented::outcome_of(&s),
                _ => "error",
            },
        };
        metrics::counter!("upstream_requests_total", "backend" => self.backend(), "operation" => operation, "outcome" => outcome).increment(1);
        metrics::histogram!("upstream_request_duration_seconds", "backend" => self.backend(), "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl Generator for RestJobs {
    fn backend(&self) -> &'static str {
        self.encoder.backend()
    }

    async fn generate(
        &self,
        id: &AssetId,
        request: &GenerateRequest,
    ) -> Result<Submitted, JobsError> {
        self.submit(id, request).await
    }

    async fn status(&self, name: &str) -> Result<Status, JobsError> {
        self.poll(name).await
    }

    /// Asks the backend to cancel a job that is not final yet (a final one is answered as
    /// is, with no call), then answers the job as the backend reports it after.
    async fn cancel(&self, name: &str) -> Result<Job, JobsError> {
        let transform =
            Names::transform_of(&self.settings.name_prefix, name).ok_or(JobsError::InvalidName)?;
        let job = self
            .timed("get_job", self.get_job(&transform, name))
            .await?
            .ok_or(JobsError::JobNotFound)?;
        if job.state.is_final() || job.state == JobState::Canceling {
            return Ok(job);
        }
        let canceled = self
            .timed(
                "cancel_job",
                self.write(
                    reqwest::Method::POST,
                    self.encoder.cancel_url(&transform, name),
                    None,
                    "cancel the job",
                ),
            )
            .await;
        match canceled {
            Ok(_) => {}
            // Gone between the two calls: as if never there.
            Err(JobsError::Gone { .. }) => return Err(JobsError::JobNotFound),
            Err(e) => return Err(e),
        }
        tracing::info!(
            backend = self.backend(),
            job = name,
            "thumbnail job cancel requested"
        );
        self.timed("get_job", self.get_job(&transform, name))
            .await?
            .ok_or(JobsError::JobNotFound)
    }
}

// ---- the calls, the same on both APIs ----

impl RestJobs {
    /// A PUT whose refusal is reported as such (`action` says what was refused); the 2xx body.
    async fn put(
        &self,
        url: url::Url,
        body: serde_json::Value,
        action: &'static str,
    ) -> Result<bytes::Bytes, JobsError> {
        self.write(reqwest::Method::PUT, url, Some(&body), action)
            .await
    }

    /// A write, mapped as reads are: 401 is the credential refused (`503`, the service's
    /// configuration), 404 is what it addresses gone (`404`); any other 4xx is the backend
    /// refusing writes (`409 generation-refused`).
    async fn write(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&serde_json::Value>,
        action: &'static str,
    ) -> Result<bytes::Bytes, JobsError> {
        use crate::source::rest::{Access, Reply};
        let rest = self.encoder.rest();
        match rest.call(method, &url, body, Access::Write, action).await? {
            Reply::Ok { body, .. } => Ok(body),
            Reply::Refused(refusal) => Err(JobsError::Refused {
                backend: rest.backend(),
                action,
                refusal,
            }),
            Reply::NotFound => Err(JobsError::Gone {
                backend: rest.backend(),
                action,
            }),
        }
    }

    /// GET the job; `None` when the backend has no such job (or transform).
    async fn get_job(&self, transform: &str, name: &str) -> Result<Option<Job>, JobsError> {
        let url = self.encoder.job_url(transform, name);
        match self.encoder.rest().get(&url, "get job").await? {
            Some(body) => self.job_from(transform, &body, "get job").map(Some),
            None => Ok(None),
        }
    }

    fn job_from(&self, transform: &str, body: &[u8], operation: &str) -> Result<Job, JobsError> {
        parse_job(transform, body).map_err(|why| {
            JobsError::Source(self.encoder.rest().upstream(&format!("{operation}: {why}")))
        })
    }
}

/// The `PUT .../transforms/{name}` body around one output's `preset` (both APIs).
pub fn transform_body(preset: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "properties": {
            "description": "Thumbnails (ams-thumbnails)",
            "outputs": [ {
                "onError": "StopProcessingJob",
                "relativePriority": "Normal",
                "preset": preset,
            } ]
        }
    })
}

// ---- the job resource, shared by ARM and MK.IO (MK.IO mirrors AMS's JobSchema) ----

#[derive(Debug, Deserialize)]
struct JobResource {
    #[serde(default)]
    name: String,
    properties: JobProperties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobProperties {
    state: Option<JobState>,
    input: Option<serde_json::Value>,
    #[serde(default)]
    outputs: Vec<JobOutput>,
    created: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobOutput {
    asset_name: Option<String>,
    state: Option<JobState>,
    progress: Option<i64>,
    error: Option<JobErrorBody>,
}

#[derive(Debug, Deserialize)]
struct JobErrorBody {
    code: Option<String>,
    message: Option<String>,
    category: Option<String>,
    retry: Option<String>,
}

/// The `PUT .../jobs/{name}` body: one input asset, one output asset (both APIs).
pub fn job_body(input: &str, output: &str) -> serde_json::Value {
    serde_json::json!({
        "properties": {
            "description": "Thumbnails generated by ams-thumbnails",
            "input": { "@odata.type": "#Microsoft.Media.JobInputAsset", "assetName": input },
            "outputs": [ { "@odata.type": "#Microsoft.Media.JobOutputAsset", "assetName": output } ],
            "priority": "Normal",
            "correlationData": { "createdBy": "ams-thumbnails" }
        }
    })
}

/// A job resource (ARM `Job`, MK.IO `JobSchema`) in domain terms.
pub fn parse_job(transform: &str, body: &[u8]) -> Result<Job, String> {
    let job: JobResource = serde_json::from_slice(body)
        .map_err(|e| format!("malformed job: {}", e.classify_name()))?;
    let p = job.properties;
    let output = p.outputs.first();
    // The job's own state; an output's when the job gives none.
    let state = p
        .state
        .or_else(|| output.and_then(|o| o.state))
        .ok_or("the job has no state")?;
    let input_asset = p
        .input
        .as_ref()
        .and_then(input_asset_name)
        .unwrap_or_default();
    let error = p
        .outputs
        .iter()
        .find_map(|o| o.error.as_ref())
        .map(|e| JobFailure {
            code: crate::source::rest::text(e.code.as_deref().unwrap_or("Unknown"), 64),
            message: crate::source::rest::text(e.message.as_deref().unwrap_or_default(), 500),
            category: e
                .category
                .as_deref()
                .map(|c| crate::source::rest::text(c, 64)),
            retry: e.retry.as_deref().map(|r| crate::source::rest::text(r, 64)),
        });
    Ok(Job {
        name: job.name,
        transform: transform.to_owned(),
        state,
        progress: output
            .and_then(|o| o.progress)
            .map(|p| p.clamp(0, 100) as u8),
        input_asset,
        output_asset: output
            .and_then(|o| o.asset_name.clone())
            .unwrap_or_default(),
        created: p.created,
        started: p.start_time,
        ended: p.end_time,
        error,
    })
}

/// `JobInputAsset.assetName`, or the first of `JobInputs.inputs` (jobs-get-by-name.json).
fn input_asset_name(input: &serde_json::Value) -> Option<String> {
    if let Some(name) = input.get("assetName").and_then(|v| v.as_str()) {
        return Some(name.to_owned());
    }
    input
        .get("inputs")?
        .as_array()?
        .iter()
        .find_map(|i| i.get("assetName").and_then(|v| v.as_str()))
        .map(str::to_owned)
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Data => "unexpected shape",
            _ => "not JSON",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::GenerateDefaults;

    fn spec() -> ThumbnailSpec {
        ThumbnailSpec::resolve(&GenerateRequest::default(), &GenerateDefaults::default()).unwrap()
    }

    #[test]
    fn names_are_derived_and_job_names_lead_back_to_their_transform() {
        let names = Names::new("ams-thumbnails", &spec(), "intro-video");
        let s = spec().digest();
        assert_eq!(names.transform, format!("ams-thumbnails-{s}"));
        assert_eq!(names.output, format!("intro-video-thumbnails-{s}"));
        assert!(names.output_container.len() <= 63);
        let first = names.job(1);
        let third = names.job(3);
        assert_eq!(third, format!("{first}-3"));
        for job in [&first, &third] {
            assert_eq!(
                Names::transform_of("ams-thumbnails", job).as_deref(),
                Some(names.transform.as_str())
            );
        }
        assert_eq!(names, Names::new("ams-thumbnails", &spec(), "intro-video"));
        assert_ne!(
            names.job(1),
            Names::new("ams-thumbnails", &spec(), "outro-video").job(1)
        );
        for other in [
            "job1",
            "ams-thumbnails",
            "ams-thumbnails-xyz",
            &format!("{first}-1"),
            &format!("{first}-6"),
            &format!("{first}-02"),
            &format!("{first}-2-2"),
            &first.to_uppercase(),
            &format!("other-{}", &first["ams-thumbnails-".len()..]),
        ] {
            assert_eq!(
                Names::transform_of("ams-thumbnails", other),
                None,
                "{other}"
            );
        }
        let long = "x".repeat(260);
        let output = Names::new("p", &spec(), &long).output;
        assert!(output.len() <= 260, "{}", output.len());
        assert!(crate::asset_id::AssetId::parse(&output).is_ok());
    }

    #[test]
    fn jobs_parse_from_the_official_examples() {
        let example: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/ams-examples/jobs-get-by-name.json"
        ))
        .unwrap();
        let body = serde_json::to_vec(&example["responses"]["200"]["body"]).unwrap();
        let job = parse_job("exampleTransform", &body).unwrap();
        assert_eq!(job.name, "job1");
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.progress, Some(0));
        assert_eq!(job.input_asset, "job1-InputAsset");
        assert_eq!(job.output_asset, "job1-OutputAsset");
        assert_eq!(job.created.as_deref(), Some("2021-06-01T00:00:00Z"));
        let example: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/ams-examples/jobs-create.json"
        ))
        .unwrap();
        let body = serde_json::to_vec(&example["responses"]["201"]["body"]).unwrap();
        let job = parse_job("exampleTransform", &body).unwrap();
        assert_eq!(job.input_asset, "job1-InputAsset");
        assert_eq!(job.error, None);

        let failed = serde_json::json!({
            "name": "j", "properties": { "state": "Error", "outputs": [ {
                "@odata.type": "#Microsoft.Media.JobOutputAsset", "assetName": "out",
                "state": "Error", "progress": 100,
                "error": { "code": "ContentMalformed", "message": "no\nvideo", "category": "Content", "retry": "DoNotRetry" }
            } ] }
        });
        let job = parse_job("t", &serde_json::to_vec(&failed).unwrap()).unwrap();
        assert_eq!(job.state, JobState::Error);
        assert_eq!(
            job.error,
            Some(JobFailure {
                code: "ContentMalformed".into(),
                message: "no video".into(),
                category: Some("Content".into()),
                retry: Some("DoNotRetry".into()),
            })
        );
        assert!(parse_job("t", b"{}").is_err());
    }
}
