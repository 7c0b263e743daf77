//! The names of a generation: transform `{prefix}-{S}`, job `{prefix}-{S}-{I}` (then `-2`…
//! for new attempts), output asset `{input}-thumbnails-{S}`: derived from the request, so that
//! a repeat finds the same job instead of starting another.

use super::MAX_ATTEMPTS;
use super::spec::{self, ThumbnailSpec};

/// Longest input-name part of an output asset name.
const MAX_OUTPUT_BASE: usize = 200;

/// The names of one asset's generation under one specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub transform: String,
    /// Job name of the first attempt.
    job_base: String,
    pub output: String,
    /// The output's container where the backend lets us name it (MK.IO).
    pub output_container: String,
}

impl Names {
    pub fn new(prefix: &str, spec: &ThumbnailSpec, input: &str) -> Self {
        let s = spec.digest();
        let i = spec::hex_digest(input.as_bytes(), 12);
        let output = if input.chars().count() <= MAX_OUTPUT_BASE {
            format!("{input}-thumbnails-{s}")
        } else {
            let cut: String = input.chars().take(MAX_OUTPUT_BASE).collect();
            format!("{cut}-{i}-thumbnails-{s}")
        };
        Self {
            transform: format!("{prefix}-{s}"),
            job_base: format!("{prefix}-{s}-{i}"),
            output,
            output_container: format!("thumbnails-{s}-{i}"),
        }
    }

    /// The job name of attempt `n` (1-based).
    pub fn job(&self, attempt: u32) -> String {
        if attempt <= 1 {
            self.job_base.clone()
        } else {
            format!("{}-{attempt}", self.job_base)
        }
    }

    pub(super) fn stripe(&self, stripes: usize) -> usize {
        let digest = spec::hex_digest(self.job_base.as_bytes(), 8);
        usize::from_str_radix(&digest, 16).unwrap_or(0) % stripes
    }

    /// The transform a job name of this service belongs to; `None` for other names.
    pub fn transform_of(prefix: &str, job: &str) -> Option<String> {
        let rest = job.strip_prefix(prefix)?.strip_prefix('-')?;
        let mut parts = rest.split('-');
        let s = parts.next()?;
        let i = parts.next()?;
        let attempt = parts.next();
        let hex = |v: &str, n: usize| {
            v.len() == n
                && v.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        };
        let attempt_ok = attempt.is_none_or(|a| {
            a.parse::<u32>()
                .is_ok_and(|n| (2..=MAX_ATTEMPTS).contains(&n) && !a.starts_with('0'))
        });
        (hex(s, 8) && hex(i, 12) && attempt_ok && parts.next().is_none())
            .then(|| format!("{prefix}-{s}"))
    }
}
