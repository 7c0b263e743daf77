//! Thumbnail generation as the API offers it: `POST /assets/{id}/thumbnails:generate`,
//! `GET /jobs/{name}`, `DELETE /jobs/{name}`, the same on every encoder ([`Generator`]):
//! - [`rest::RestJobs`]: the backend's own encoder, AMS ([`ams`]) or MK.IO ([`mkio`]);
//! - [`ffmpeg::FfmpegJobs`]: ffmpeg, run by this service, for the `storage` and `local` sources.
//!
//! This module holds what they share (the request, names, states, failures); it knows neither
//! the HTTP status codes of its own API nor caching.

pub mod ams;
pub mod ffmpeg;
pub mod mkio;
mod names;
pub mod rest;
pub mod spec;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::asset_id::AssetId;
use crate::config::Invalid;
pub use crate::config::JobSettings;
use crate::source::SourceError;
use crate::source::rest::Refusal;
pub use names::Names;
pub use spec::{GenerateDefaults, GenerateRequest, InvalidSpec, ThumbnailSpec};

/// New attempts made after failed ones before giving up.
pub const MAX_ATTEMPTS: u32 = 5;

/// Checks `[jobs]`: the section's own checks, then the defaults as if a request had left
/// every field out (they are understood here, not in configuration).
pub fn check_settings(settings: &JobSettings) -> Result<(), Invalid> {
    settings.validate()?;
    ThumbnailSpec::resolve(&GenerateRequest::default(), &settings.defaults)
        .map_err(|e| Invalid::new(format!("jobs.defaults.{}", snake(e.field)), e.message))?;
    Ok(())
}

fn snake(field: &str) -> String {
    if field == "spriteColumns" {
        "sprite_columns".into()
    } else {
        field.into()
    }
}

/// A job's state, as both backends name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Scheduled,
    Processing,
    Finished,
    Error,
    Canceling,
    Canceled,
}

impl JobState {
    /// No further change will come.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Error | JobState::Canceled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "Queued",
            JobState::Scheduled => "Scheduled",
            JobState::Processing => "Processing",
            JobState::Finished => "Finished",
            JobState::Error => "Error",
            JobState::Canceling => "Canceling",
            JobState::Canceled => "Canceled",
        }
    }
}

/// Why a job failed, as the backend said (`JobError`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `DoNotRetry` or `MayRetry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// A job as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub transform: String,
    pub state: JobState,
    /// Percent, when the backend gives it.
    pub progress: Option<u8>,
    pub input_asset: String,
    pub output_asset: String,
    pub created: Option<String>,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub error: Option<JobFailure>,
}

/// Generation failures, in domain terms (the HTTP layer picks the status).
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobsError {
    /// No encoder is configured; the reason says why (and what would give one).
    #[error("thumbnail generation is unavailable: {reason}")]
    Unsupported { reason: String },
    /// The asset has no video to generate from (ffmpeg encoder).
    #[error("the asset has no video")]
    NoVideo { pattern: Option<String> },
    #[error("invalid request: {0}")]
    Invalid(#[from] InvalidSpec),
    /// Not a job name this service gives.
    #[error("not a job name of this service")]
    InvalidName,
    #[error("no such job")]
    JobNotFound,
    /// The backend refused a write (retired AMS account, read-only role or token).
    #[error("{backend} refused to {action}")]
    Refused {
        backend: &'static str,
        action: &'static str,
        refusal: Refusal,
    },
    /// A write's target is gone (404): the account, project, transform or asset.
    #[error("{backend} answered 404 to {action}")]
    Gone {
        backend: &'static str,
        action: &'static str,
    },
    /// The last attempts all failed; the latest is given.
    #[error("{MAX_ATTEMPTS} attempts failed")]
    AttemptsExhausted { last: Box<Job> },
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The outcome of a generate request.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: Job,
    /// False when a job for the same asset and specification already existed.
    pub created: bool,
}

/// The outcome of a status request.
#[derive(Debug, Clone)]
pub struct Status {
    pub job: Job,
    /// This answer is the first to see the job finished (drop the output's cache entry now).
    pub newly_finished: bool,
}

/// An encoder behind the jobs API.
#[async_trait]
pub trait Generator: Send + Sync {
    /// `ams`, `mkio`, `ffmpeg`.
    fn backend(&self) -> &'static str;
    /// Finds or starts the job generating `request`'s thumbnails for asset `id`.
    async fn generate(
        &self,
        id: &AssetId,
        request: &GenerateRequest,
    ) -> Result<Submitted, JobsError>;
    /// The job `name`, as the encoder reports it now.
    async fn status(&self, name: &str) -> Result<Status, JobsError>;
    /// Asks the encoder to cancel the job `name`; the job as it is once asked.
    async fn cancel(&self, name: &str) -> Result<Job, JobsError>;
}

/// The configured encoder and the `[jobs]` settings the API answers with.
#[derive(Clone)]
pub struct Jobs {
    generator: Arc<dyn Generator>,
    settings: JobSettings,
}

impl Jobs {
    pub fn new(generator: Arc<dyn Generator>, settings: JobSettings) -> Self {
        Self {
            generator,
            settings,
        }
    }

    pub fn backend(&self) -> &'static str {
        self.generator.backend()
    }

    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    pub async fn generate(
        &self,
        id: &AssetId,
        request: &GenerateRequest,
    ) -> Result<Submitted, JobsError> {
        self.generator.generate(id, request).await
    }

    pub async fn status(&self, name: &str) -> Result<Status, JobsError> {
        self.generator.status(name).await
    }

    pub async fn cancel(&self, name: &str) -> Result<Job, JobsError> {
        self.generator.cancel(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert!(check_settings(&JobSettings::default()).is_ok());
        let bad = JobSettings {
            name_prefix: "bad prefix".into(),
            ..Default::default()
        };
        assert!(
            check_settings(&bad)
                .unwrap_err()
                .to_string()
                .contains("jobs.name_prefix")
        );
        let mut bad = JobSettings::default();
        bad.defaults.sprite_columns = 20;
        assert!(
            check_settings(&bad)
                .unwrap_err()
                .to_string()
                .contains("jobs.defaults.sprite_columns")
        );
    }
}
