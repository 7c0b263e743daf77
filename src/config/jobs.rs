//! `[jobs]`: thumbnail generation. The defaults are checked as a request would be, by the
//! generation module, when the service is put together (`server::compose`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Prefix of the transforms and jobs this service creates.
    pub name_prefix: String,
    /// `Retry-After` on answers about jobs still running: how often clients should poll.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// AMS: api-version of Transforms and Jobs (Encoding.json).
    pub transform_api_version: String,
    /// What a request leaves out.
    pub defaults: GenerateDefaults,
    /// Which encoder runs jobs; unset: the backend's (AMS, MK.IO) where there is one, else
    /// ffmpeg when `ffmpeg_path` runs, else none (generation answers 501 and says why).
    pub encoder: Option<EncoderChoice>,
    /// The ffmpeg binary (a name looked up on PATH, or a path).
    pub ffmpeg_path: PathBuf,
    /// The ffprobe binary; unset: `ffprobe` beside `ffmpeg_path` (or on PATH).
    pub ffprobe_path: Option<PathBuf>,
    /// ffmpeg processes at once on this replica; more jobs wait in `Queued`.
    pub max_concurrent: usize,
    /// A job still running after this is stopped (the process killed) and reported `Error`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most bytes one job may write (thumbnails and sprite together).
    pub max_output_bytes: u64,
    /// Where a job's outputs go inside the asset: `{spec}` is the specification's 8 hex digits.
    pub output_folder: String,
    /// The input video's blob name pattern (`*` and `?`); unset: the largest `.mp4` beside the
    /// asset's `.ism` manifest, else the largest `.mp4`.
    pub input_pattern: Option<String>,
    /// The blob lease a running job holds on its state document (15 s to 60 s), renewed at a
    /// third of it: a replica that dies mid-job lets another take the job over after this.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

/// `jobs.encoder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderChoice {
    /// The source's own encoder: AMS or MK.IO.
    Backend,
    /// ffmpeg, run by this service (`storage` and `local` sources).
    Ffmpeg,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            name_prefix: "ams-thumbnails".into(),
            poll_interval: Duration::from_secs(5),
            transform_api_version: "2022-07-01".into(),
            defaults: GenerateDefaults::default(),
            encoder: None,
            ffmpeg_path: PathBuf::from("ffmpeg"),
            ffprobe_path: None,
            max_concurrent: 1,
            timeout: Duration::from_secs(3600),
            max_output_bytes: 256 * 1024 * 1024,
            output_folder: "thumbnails/{spec}".into(),
            input_pattern: None,
            lease: Duration::from_secs(30),
        }
    }
}

impl JobSettings {
    /// Checks the prefix (the defaults are checked where they are understood).
    pub fn validate(&self) -> Result<(), Invalid> {
        let prefix_ok = !self.name_prefix.is_empty()
            && self.name_prefix.len() <= 40
            && self
                .name_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !self.name_prefix.starts_with('-')
            && !self.name_prefix.ends_with('-');
        if !prefix_ok {
            return Err(Invalid::new(
                "jobs.name_prefix",
                "must be 1 to 40 letters, digits or inner hyphens",
            ));
        }
        if self.max_concurrent == 0 || self.max_concurrent > 64 {
            return Err(Invalid::new("jobs.max_concurrent", "must be 1 to 64"));
        }
        if self.timeout < Duration::from_secs(1) {
            return Err(Invalid::new("jobs.timeout", "must be at least 1s"));
        }
        if !(Duration::from_secs(15)..=Duration::from_secs(60)).contains(&self.lease) {
            return Err(Invalid::new(
                "jobs.lease",
                "must be 15s to 60s (Blob Storage's lease durations)",
            ));
        }
        if self.max_output_bytes == 0 {
            return Err(Invalid::new("jobs.max_output_bytes", "must be above 0"));
        }
        let folder = &self.output_folder;
        let folder_ok = folder.contains("{spec}")
            && !folder.starts_with('/')
            && !folder.ends_with('/')
            && folder.len() <= 200
            && folder
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && folder
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./{}".contains(c));
        if !folder_ok {
            return Err(Invalid::new(
                "jobs.output_folder",
                "must be a relative folder of letters, digits, '-', '_', '.' and '/' holding {spec} (like \"thumbnails/{spec}\")",
            ));
        }
        if let Some(pattern) = &self.input_pattern
            && (pattern.is_empty() || pattern.len() > 200 || pattern.contains(".."))
        {
            return Err(Invalid::new(
                "jobs.input_pattern",
                "must be a blob name pattern of 1 to 200 characters (`*`, `?`), without '..'",
            ));
        }
        Ok(())
    }
}

/// Defaults for what a request leaves out (`[jobs.defaults]`), checked at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateDefaults {
    pub start: String,
    pub step: String,
    pub range: String,
    /// "" for the source's own size.
    pub width: String,
    pub height: String,
    pub format: String,
    pub sprite_columns: u32,
}

impl Default for GenerateDefaults {
    fn default() -> Self {
        Self {
            start: "0%".into(),
            step: "10%".into(),
            range: "100%".into(),
            width: "25%".into(),
            height: "25%".into(),
            format: "jpg".into(),
            sprite_columns: 0,
        }
    }
}
