//! A job's state document: a small JSON blob next to its outputs
//! (`{asset prefix}{jobs.output_folder}/ams-thumbnails-job.json`), so that any replica answers
//! `GET /jobs/{name}`, and the resolver gives each generated thumbnail its time from it.

use serde::{Deserialize, Serialize};

use crate::jobs::{Job, JobFailure, JobState};
use crate::model::GeneratedOutput;

/// The document's blob name inside the job's folder.
pub use crate::model::JOB_DOCUMENT;
/// Written beside the document by `DELETE /jobs/{name}` on a replica that does not run the job;
/// the replica that does sees it within a second.
pub const CANCEL_MARKER: &str = "ams-thumbnails-job.cancel";
/// Largest document read (a job of 100,000 thumbnails is ~8 MB; far beyond any real one).
pub const DOCUMENT_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDocument {
    pub version: u32,
    /// The current attempt's job name.
    pub name: String,
    pub transform: String,
    /// The asset id the job was asked for (its input, and where its outputs are listed).
    pub asset_id: String,
    /// The specification, every field given (a takeover runs the same work).
    pub request: crate::jobs::GenerateRequest,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The input video's blob name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DocumentError>,
    /// 1 for the first attempt, then 2… after failed or canceled ones.
    pub attempt: u32,
    /// How often a replica took the job over from one that stopped renewing its lease.
    #[serde(default)]
    pub takeovers: u32,
    /// Earlier attempts, as they ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousAttempt>,
    /// The generated thumbnails with their times (the resolver reads these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<GeneratedOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sprite: Option<GeneratedSprite>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousAttempt {
    pub name: String,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DocumentError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedSprite {
    pub image: String,
    pub vtt: String,
}

impl JobDocument {
    pub fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec_pretty(self)
            .expect("a job document serializes")
            .into()
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed job document: {e}"))
    }

    /// The job as the API shows it (input and output are the same asset).
    pub fn job(&self) -> Job {
        Job {
            name: self.name.clone(),
            transform: self.transform.clone(),
            state: self.state,
            progress: self.progress,
            input_asset: self.asset_id.clone(),
            output_asset: self.asset_id.clone(),
            created: Some(self.created.clone()),
            started: self.started.clone(),
            ended: self.ended.clone(),
            error: self.error.as_ref().map(DocumentError::failure),
        }
    }

    /// An earlier attempt of this document, by its job name.
    pub fn previous_job(&self, name: &str) -> Option<Job> {
        let p = self.previous.iter().find(|p| p.name == name)?;
        Some(Job {
            name: p.name.clone(),
            state: p.state,
            progress: None,
            started: None,
            ended: p.ended.clone(),
            error: p.error.as_ref().map(DocumentError::failure),
            ..self.job()
        })
    }
}

impl DocumentError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn failure(&self) -> JobFailure {
        JobFailure {
            code: self.code.clone(),
            message: self.message.clone(),
            category: None,
            retry: None,
        }
    }
}

/// Now, as the documents write times (RFC 3339, UTC).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
