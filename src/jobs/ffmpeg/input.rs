//! Which blob of an asset is the video a job reads.

use super::{Inner, Place};
use crate::jobs::JobsError;

impl Inner {
    /// The input video: the configured pattern's largest match, else the largest `.mp4`
    /// beside an `.ism` manifest, else the largest `.mp4`. Outputs of jobs are never inputs.
    pub(super) async fn video(&self, place: &Place) -> Result<String, JobsError> {
        let blobs = self.parts.store.list(&place.location).await?;
        let outputs_root = self
            .parts
            .settings
            .output_folder
            .split("{spec}")
            .next()
            .unwrap_or_default()
            .to_owned();
        // Names inside the asset (a catalog's prefix taken off).
        let relative = |name: &'_ str| -> String {
            name.strip_prefix(&place.location.prefix)
                .unwrap_or(name)
                .to_owned()
        };
        let candidates: Vec<_> = blobs
            .iter()
            .filter(|b| outputs_root.is_empty() || !relative(&b.name).starts_with(&outputs_root))
            .collect();
        let chosen = match &self.parts.settings.input_pattern {
            Some(pattern) => candidates
                .iter()
                .filter(|b| glob(pattern, &relative(&b.name)))
                .max_by_key(|b| b.size)
                .copied(),
            None => {
                let mp4s: Vec<_> = candidates
                    .iter()
                    .filter(|b| b.name.to_ascii_lowercase().ends_with(".mp4"))
                    .collect();
                let ism_folders: Vec<&str> = candidates
                    .iter()
                    .filter(|b| b.name.to_ascii_lowercase().ends_with(".ism"))
                    .map(|b| folder_of(&b.name))
                    .collect();
                mp4s.iter()
                    .filter(|b| ism_folders.contains(&folder_of(&b.name)))
                    .max_by_key(|b| b.size)
                    .or_else(|| mp4s.iter().max_by_key(|b| b.size))
                    .map(|b| **b)
            }
        };
        chosen
            .map(|b| b.name.clone())
            .ok_or_else(|| JobsError::NoVideo {
                pattern: self.parts.settings.input_pattern.clone(),
            })
    }
}

fn folder_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(f, _)| f)
}

/// `*` (any run of characters) and `?` (one character), over the whole name.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("*.mp4", "video_1280x720.mp4"));
        assert!(glob("media/*_????.mp4", "media/a_1080.mp4"));
        assert!(!glob("*.mp4", "video.mp4.bak"));
        assert!(!glob("media/*.mp4", "other/v.mp4"));
        assert!(glob("*", ""));
    }
}
