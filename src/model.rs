//! What the service knows about an asset, independent of where it came from.

use serde::Serialize;
use time::OffsetDateTime;

/// One blob of an asset container, as a lister reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Full blob name, virtual folders included (`thumbs/Thumbnail000001.jpg`).
    pub name: String,
    pub size: u64,
    /// Content type stored with the blob, when the store keeps one.
    pub content_type: Option<String>,
    /// Pixel size, when the store knows it without an extra request (local files: their header).
    pub dimensions: Option<(u32, u32)>,
}

/// A working URL for a blob, with the time it stops working (None: it does not expire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub url: String,
    pub expires_at: Option<OffsetDateTime>,
}

/// The API's answer for one asset (`GET /assets/{id}/thumbnails`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AssetThumbnails {
    pub asset_id: String,
    pub thumbnails: Vec<Thumbnail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storyboard: Option<Storyboard>,
    /// Earliest expiry of any URL in the answer.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Thumbnail {
    /// The `{Index}` of the name (1-based).
    pub index: u64,
    pub name: String,
    pub url: String,
    pub content_type: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Position in the video, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

/// A sprite sheet with its WebVTT map: what a player's scrubbing preview needs.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Storyboard {
    /// Blob name of the sprite image.
    pub name: String,
    pub url: String,
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Blob name of the WebVTT file.
    pub vtt_name: String,
    pub tiles: Vec<StoryboardTile>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct StoryboardTile {
    /// Seconds.
    pub start: f64,
    /// Seconds.
    pub end: f64,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl AssetThumbnails {
    /// Renditions of one index, in list order.
    pub fn at_index(&self, index: u64) -> impl Iterator<Item = &Thumbnail> {
        self.thumbnails.iter().filter(move |t| t.index == index)
    }
}

/// Content type implied by a blob name's extension.
pub fn content_type_for(name: &str) -> String {
    mime_guess::from_path(name)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// The state document an ffmpeg job of this service writes next to its outputs; the resolver
/// takes the generated thumbnails' times from its `outputs`.
pub const JOB_DOCUMENT: &str = "ams-thumbnails-job.json";

/// A thumbnail a job of this service generated: its blob name, index and frame time.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GeneratedOutput {
    pub name: String,
    pub index: u64,
    /// Seconds from the start of the video.
    pub time: f64,
}
