//! `[recognition]`: how thumbnails are recognised among an asset's blobs. The patterns are
//! compiled (and so checked) once, when the recogniser is built at start-up.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecognitionSettings {
    /// AMS `filenamePattern`s, in priority order (the first that explains a name best wins).
    pub patterns: Vec<String>,
    /// Image extensions (case-insensitive, without the dot).
    pub extensions: Vec<String>,
    /// Sizes of the preset's layers, by label: reported as width/height of matching thumbnails.
    pub layers: Vec<LayerSize>,
    /// The preset's start and step, when thumbnails have no storyboard to take times from.
    pub timing: Option<Timing>,
}

impl Default for RecognitionSettings {
    fn default() -> Self {
        Self {
            patterns: [
                "Thumbnail{Index}{Extension}",
                "Thumbnail-{Basename}-{Index}{Extension}",
                "{Basename}_{Resolution}_{Index}{Extension}",
                "{Basename}_{Label}_{Index}{Extension}",
                "{Basename}_{Index}{Extension}",
                // MediaKind MK.IO's ThumbnailGeneratorPreset outputs.
                "{BaseFilename}_{Label}{Index}{Extension}",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            extensions: ["jpg", "jpeg", "png", "bmp"]
                .into_iter()
                .map(String::from)
                .collect(),
            layers: Vec::new(),
            timing: None,
        }
    }
}

impl RecognitionSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if let Some(t) = &self.timing
            && t.step.is_zero()
        {
            return Err(Invalid::new(
                "recognition.timing.step",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LayerSize {
    pub label: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Time of the thumbnail with index 1.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// Time between two consecutive indices.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
}
