//! The encoding half shared by the fake ARM (AMS) and the fake MK.IO: thumbnail presets
//! (validation and what they produce), filename-pattern expansion, the job state machine, and
//! the Azurite side of a finished job (find the input video, write the thumbnails and sprite
//! storyboards).
//!
//! References (all under `tests/fixtures/`):
//! - AMS: `ams-examples/swagger-excerpts/Encoding-2022-07-01.thumbnails-jobs-excerpt.json`
//!   (`Image.start/step/range`, `JpgImage.spriteColumn`, `Layer`, `Format.filenamePattern` and its
//!   macros `{Basename}` (truncated to 32 characters), `{Label}`, `{Index}`, `{Extension}`,
//!   `{Resolution}`, "unsubstituted macros will be collapsed"; `JobOutput.state`, `JobError`),
//!   `ams-examples/docs-transform-generate-thumbnails-rest.json` (a PngImage transform),
//!   `ams-examples/jobs-create.json`, `ams-examples/jobs-get-by-name.json`.
//! - MK.IO: `mkio-examples/openapi-excerpts/media-api-0.26.14.transforms-jobs-locators-excerpt.json`
//!   (`ThumbnailGeneratorPreset.baseFilename` (default: the input file's name, truncated to 64
//!   characters), `ThumbnailGeneratorConfiguration` (`format` Jpeg|Png, `start` default PT10S,
//!   `range` default "1", `label` `^[A-Za-z0-9_-]+$` ≤ 64, `spriteColumn` 1..=10), output names
//!   `{BaseFilename}_{Label}{Index}{Extension}` and `{BaseFilename}_{Label}.vtt`),
//!   `mkio-examples/docs-transform-thumbnail-*.json`.
//!
//! What the fakes simplify, on purpose:
//! - The input video is never decoded: its duration is notional ([`DEFAULT_INPUT_DURATION_SECS`],
//!   settable per fake), its base name comes from the first blob with a video extension in the
//!   input asset's folder, and every image written is a bundled sample (`samples/`), the JPEG for
//!   Jpg/Jpeg and the PNG for Png, sprites included (the VTT's tiles are computed from the
//!   requested tile size, not from the sample's pixels).
//! - Frame counts (AMS `start`/`step`/`range` given as bare integers) are read at a notional
//!   [`NOTIONAL_FRAME_RATE`] frames per second; `range` "1" means one image.
//! - A missing `step` means one image (AMS documents a 10% default; the fake does not apply it).
//! - A codec (AMS) with several layers produces one set of images per layer.
//! - At most [`MAX_THUMBNAILS`] times per codec/thumbnails entry, and at least one.

use std::path::PathBuf;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::azurite::{ACCOUNT, KEY};

/// Where finished jobs write their outputs: an Azurite blob endpoint (`Azurite::blob_endpoint`,
/// e.g. "http://127.0.0.1:P/devstoreaccount1"), written with the well-known account key (account
/// SAS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSink {
    pub blob_endpoint: String,
}

/// How a job ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    Finish,
    Fail {
        code: String,
        message: String,
        category: String,
        retry: String,
    },
}

impl JobOutcome {
    /// A failure with these `JobError` fields.
    pub fn fail(code: &str, message: &str, category: &str, retry: &str) -> Self {
        JobOutcome::Fail {
            code: code.into(),
            message: message.into(),
            category: category.into(),
            retry: retry.into(),
        }
    }
}

/// A refusal of every write (PUT transform/asset/job), like a retired AMS account or a read-only
/// MK.IO token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRefusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// Seconds of (notional) input video: the base of percent values. Default 60.
pub const DEFAULT_INPUT_DURATION_SECS: u64 = 60;
/// Job GETs from creation to the final state unless told otherwise.
pub const DEFAULT_JOB_STEPS: usize = 2;
/// At most this many thumbnail times per codec / thumbnails entry.
pub const MAX_THUMBNAILS: usize = 100;
/// Frames per second assumed for frame counts (AMS `start`/`step`/`range` as bare integers).
pub const NOTIONAL_FRAME_RATE: u64 = 25;
/// Sprite tile size when the layer gives no pixel size (percentages or nothing).
pub const DEFAULT_TILE: (u32, u32) = (160, 90);
/// Extensions (case-insensitive) the fakes take for the input video.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "mxf", "ts", "mkv", "avi", "wmv", "m4v"];
/// AMS truncates `{Basename}` to this many characters (swagger `Format.filenamePattern`).
pub const AMS_BASENAME_MAX: usize = 32;
/// MK.IO truncates the default `baseFilename` to this many characters.
pub const MKIO_BASENAME_MAX: usize = 64;

/// The `JobError` of a finished job that found no video in its input asset.
pub fn no_video_error(container: &str, folder: Option<&str>) -> JobOutcome {
    let place = match folder {
        Some(folder) => format!("container '{container}' under '{folder}/'"),
        None => format!("container '{container}'"),
    };
    JobOutcome::fail(
        "ContentMalformed",
        &format!(
            "No video file was found in the input asset ({place}): expected a blob with one of \
             the extensions {}.",
            VIDEO_EXTENSIONS.join(", ")
        ),
        "Content",
        "DoNotRetry",
    )
}

// ------------------------------------------------------------------------------------------
// Time values
// ------------------------------------------------------------------------------------------

/// A `start` / `step` / `range` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeValue {
    /// An ISO 8601 duration (`PT5S`, `PT1M30S`, `PT0.5S`), in milliseconds.
    Millis(u64),
    /// `10%` of the input's duration.
    Percent(f64),
    /// A frame count (AMS; `range` "1" = one image).
    Frames(u64),
    /// AMS `{Best}` (start only): one image.
    Best,
}

impl TimeValue {
    /// Milliseconds into an input of `duration_ms`.
    pub fn millis(self, duration_ms: u64) -> u64 {
        match self {
            TimeValue::Millis(ms) => ms,
            TimeValue::Percent(p) => ((duration_ms as f64) * p / 100.0).round() as u64,
            TimeValue::Frames(n) => n * 1000 / NOTIONAL_FRAME_RATE,
            TimeValue::Best => 0,
        }
    }

    fn is_zero(self) -> bool {
        match self {
            TimeValue::Millis(ms) => ms == 0,
            TimeValue::Percent(p) => p <= 0.0,
            TimeValue::Frames(n) => n == 0,
            TimeValue::Best => false,
        }
    }
}

/// Which forms a backend accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSyntax {
    /// ISO 8601, percent, frame counts, and `{Best}` where `best` allows.
    Ams { best: bool },
    /// ISO 8601, percent, and the value "1" where `one` allows (MK.IO `range`).
    Mkio { one: bool },
}

/// Parses a time value; the error says what was wrong (without the field name).
pub fn parse_time_value(text: &str, syntax: TimeSyntax) -> Result<TimeValue, String> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok(TimeValue::Percent(p)),
            _ => Err(format!("'{text}' is not a percentage between 0% and 100%")),
        };
    }
    if t.starts_with(['P', 'p']) {
        return parse_iso8601_duration(t)
            .map(TimeValue::Millis)
            .ok_or_else(|| format!("'{text}' is not an ISO 8601 duration (e.g. PT5S, PT1M30S)"));
    }
    match syntax {
        TimeSyntax::Ams { best } => {
            if t.eq_ignore_ascii_case("{Best}") {
                return if best {
                    Ok(TimeValue::Best)
                } else {
                    Err("{Best} is only allowed for start".into())
                };
            }
            t.parse::<u64>().map(TimeValue::Frames).map_err(|_| {
                format!(
                    "'{text}' is not an ISO 8601 duration, a percentage or a frame count{}",
                    if best { " or {Best}" } else { "" }
                )
            })
        }
        TimeSyntax::Mkio { one } => {
            if one && t == "1" {
                Ok(TimeValue::Frames(1))
            } else {
                Err(format!(
                    "'{text}' is not an ISO 8601 duration or a percentage{}",
                    if one { " or the value '1'" } else { "" }
                ))
            }
        }
    }
}

/// `P[nD][T[nH][nM][n[.n]S]]` in milliseconds (years, months and weeks are not accepted).
pub fn parse_iso8601_duration(text: &str) -> Option<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0f64;
    let mut any = false;
    let mut read = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            // Units must come in order, each at most once.
            let (_, factor) = allowed.by_ref().find(|(u, _)| *u == c)?;
            let value: f64 = number.parse().ok()?;
            total += value * factor;
            number.clear();
            any = true;
        }
        number.is_empty().then_some(())
    };
    read(date, &[('D', 86_400_000.0)])?;
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        read(time, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)])?;
    }
    any.then(|| total.round() as u64)
}

/// The thumbnail times (ms) of `start`/`step`/`range` over an input of `duration_secs`:
/// `t = start, start + step, …` while `t < min(start + range, duration)`, at most
/// [`MAX_THUMBNAILS`], at least one. `{Best}` → one image at 0; no `step`, or `range` "1" (one
/// frame) → one image at `start`; no `range` → to the end of the input.
pub fn thumbnail_times(
    start: TimeValue,
    step: Option<TimeValue>,
    range: Option<TimeValue>,
    duration_secs: u64,
) -> Vec<u64> {
    let duration = duration_secs * 1000;
    let first = start.millis(duration);
    if start == TimeValue::Best {
        return vec![0];
    }
    let Some(step) = step.filter(|s| !s.is_zero()) else {
        return vec![first];
    };
    if range == Some(TimeValue::Frames(1)) {
        return vec![first];
    }
    let step = step.millis(duration).max(1);
    let end = match range {
        Some(range) => first.saturating_add(range.millis(duration)).min(duration),
        None => duration,
    };
    let mut times = Vec::new();
    let mut t = first;
    while t < end && times.len() < MAX_THUMBNAILS {
        times.push(t);
        t += step;
    }
    if times.is_empty() {
        times.push(first);
    }
    times
}

/// Where the storyboard's last cue ends: one step after the last time, within the range.
fn last_cue_end(times: &[u64], step_ms: Option<u64>, bound_ms: u64) -> u64 {
    let last = *times.last().expect("at least one time");
    let end = match step_ms {
        Some(step) => (last + step).min(bound_ms),
        None => bound_ms,
    };
    if end > last { end } else { last + 1000 }
}

/// `HH:MM:SS.mmm`
pub fn vtt_time(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A WebVTT storyboard: one cue per time, `sprite#xywh=x,y,w,h` on a grid of `columns`.
pub fn sprite_vtt(
    sprite: &str,
    times: &[u64],
    last_end: u64,
    columns: u32,
    tile: (u32, u32),
) -> String {
    let mut vtt = String::from("WEBVTT\n");
    for (i, t) in times.iter().enumerate() {
        let end = times.get(i + 1).copied().unwrap_or(last_end);
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        vtt.push_str(&format!(
            "\n{} --> {}\n{sprite}#xywh={},{},{},{}\n",
            vtt_time(*t),
            vtt_time(end),
            col * tile.0,
            row * tile.1,
            tile.0,
            tile.1
        ));
    }
    vtt
}

// ------------------------------------------------------------------------------------------
// Names
// ------------------------------------------------------------------------------------------

/// The values of an AMS `filenamePattern`'s macros.
#[derive(Clone, Debug, Default)]
pub struct PatternValues<'a> {
    pub basename: &'a str,
    pub label: &'a str,
    /// 1-based; written with 6 digits.
    pub index: usize,
    /// `.jpg` / `.png`
    pub extension: &'a str,
    /// `{w}x{h}`, or empty.
    pub resolution: &'a str,
}

/// Expands `{Basename}`, `{Label}`, `{Index}`, `{Extension}`, `{Resolution}` (macro names
/// case-insensitive); any other `{Macro}` (`{Bitrate}`, `{Codec}`, `{AudioStream}`, unknown)
/// collapses to nothing, as the swagger says.
pub fn expand_filename_pattern(pattern: &str, values: &PatternValues<'_>) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        match after[..close].to_ascii_lowercase().as_str() {
            "basename" => out.push_str(values.basename),
            "label" => out.push_str(values.label),
            "index" => out.push_str(&format!("{:06}", values.index)),
            "extension" => out.push_str(values.extension),
            "resolution" => out.push_str(values.resolution),
            _ => {}
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// MK.IO: `{BaseFilename}_{Label}{Index}{Extension}`, Index 6 digits, 1-based.
pub fn mkio_image_name(base: &str, label: &str, index: usize, extension: &str) -> String {
    format!("{base}_{label}{index:06}{extension}")
}

/// MK.IO: `{BaseFilename}_{Label}.vtt`.
pub fn mkio_vtt_name(base: &str, label: &str) -> String {
    format!("{base}_{label}.vtt")
}

/// The video's file name (no folders) without its extension, at most `max_chars` characters.
pub fn video_basename(blob_name: &str, max_chars: usize) -> String {
    let file = blob_name.rsplit('/').next().unwrap_or(blob_name);
    let stem = match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file,
    };
    stem.chars().take(max_chars).collect()
}

/// Whether a blob name has one of [`VIDEO_EXTENSIONS`].
pub fn is_video(blob_name: &str) -> bool {
    blob_name
        .rsplit_once('.')
        .is_some_and(|(_, ext)| VIDEO_EXTENSIONS.iter().any(|v| v.eq_ignore_ascii_case(ext)))
}

/// Swaps the extension of a file name (AMS sprite → storyboard: `x_000001.jpg` → `x_000001.vtt`).
fn with_extension(name: &str, extension: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => format!("{stem}{extension}"),
        _ => format!("{name}{extension}"),
    }
}

// ------------------------------------------------------------------------------------------
// Images
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
}

impl ImageKind {
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Jpeg => ".jpg",
            ImageKind::Png => ".png",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
        }
    }

    /// The bundled sample every image of this kind is a copy of.
    pub fn sample_path(self) -> PathBuf {
        let samples = super::samples_dir();
        match self {
            ImageKind::Jpeg => samples.join("builtin-preset/Thumbnail000001.jpg"),
            ImageKind::Png => {
                samples.join("virtual-folders/thumbnails/Thumbnail-harbour-000001.png")
            }
        }
    }

    pub fn sample_bytes(self) -> Vec<u8> {
        let path = self.sample_path();
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!("fake encoder: reading sample image {}: {e}", path.display())
        })
    }
}

/// One blob a finished job writes, named relative to the output asset's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputBlob {
    pub name: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// One requested series of thumbnails, backend-neutral.
#[derive(Clone, Copy)]
struct Series {
    kind: ImageKind,
    start: TimeValue,
    step: Option<TimeValue>,
    range: Option<TimeValue>,
    sprite_columns: Option<u32>,
    tile: (u32, u32),
}

impl Series {
    /// The images (or the sprite and its storyboard); `image_name(i)` names image `i` (1-based),
    /// `vtt_name(sprite)` names the storyboard of the sprite so named.
    fn render(
        &self,
        duration_secs: u64,
        image_name: impl Fn(usize) -> String,
        vtt_name: impl Fn(&str) -> String,
    ) -> Vec<OutputBlob> {
        let times = thumbnail_times(self.start, self.step, self.range, duration_secs);
        let bytes = self.kind.sample_bytes();
        let image = |name: String| OutputBlob {
            name,
            content_type: self.kind.content_type(),
            bytes: bytes.clone(),
        };
        let Some(columns) = self.sprite_columns else {
            return (1..=times.len()).map(|i| image(image_name(i))).collect();
        };
        let duration = duration_secs * 1000;
        let start = self.start.millis(duration);
        let bound = match self.range {
            Some(range) if range != TimeValue::Frames(1) => {
                start.saturating_add(range.millis(duration)).min(duration)
            }
            _ => duration,
        };
        let step = self.step.map(|s| s.millis(duration)).filter(|s| *s > 0);
        let sprite = image_name(1);
        let vtt = sprite_vtt(
            &sprite,
            &times,
            last_cue_end(&times, step, bound),
            columns,
            self.tile,
        );
        vec![
            OutputBlob {
                name: vtt_name(&sprite),
                content_type: "text/vtt",
                bytes: vtt.into_bytes(),
            },
            image(sprite),
        ]
    }
}

/// A layer / thumbnail size: digits are pixels, `N%` relative.
fn parse_size(value: &Value, field: &str) -> Result<Option<Size>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => {
            let s = s.trim();
            if let Some(p) = s.strip_suffix('%') {
                return match p.parse::<f64>() {
                    Ok(p) if p > 0.0 && p <= 100.0 => Ok(Some(Size::Percent)),
                    _ => Err(format!(
                        "{field} '{s}' must be pixels or a percentage (1%-100%)"
                    )),
                };
            }
            match s.parse::<u32>() {
                Ok(px) if px > 0 => Ok(Some(Size::Pixels(px))),
                _ => Err(format!("{field} '{s}' must be pixels or a percentage")),
            }
        }
        _ => Err(format!("{field} must be a string")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Size {
    Pixels(u32),
    Percent,
}

/// The sprite tile and the `{Resolution}` macro from a width / height.
fn tile_and_resolution(width: Option<Size>, height: Option<Size>) -> ((u32, u32), String) {
    match (width, height) {
        (Some(Size::Pixels(w)), Some(Size::Pixels(h))) => ((w, h), format!("{w}x{h}")),
        (Some(Size::Pixels(w)), None) => ((w, (w * 9 / 16).max(1)), String::new()),
        (None, Some(Size::Pixels(h))) => (((h * 16 / 9).max(1), h), String::new()),
        _ => (DEFAULT_TILE, String::new()),
    }
}

fn opt_str<'a>(object: &'a Value, key: &str, path: &str) -> Result<Option<&'a str>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{path}.{key} must be a string")),
    }
}

fn opt_int(
    object: &Value,
    key: &str,
    path: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{path}.{key} must be an integer between {min} and {max}, not {v}"
            )),
        },
    }
}

fn time_field(
    object: &Value,
    key: &str,
    path: &str,
    syntax: TimeSyntax,
) -> Result<Option<TimeValue>, String> {
    let Some(text) = opt_str(object, key, path)? else {
        return Ok(None);
    };
    let value = parse_time_value(text, syntax).map_err(|e| format!("{path}.{key}: {e}"))?;
    if key == "step" && value.is_zero() {
        return Err(format!("{path}.{key} must be greater than zero"));
    }
    Ok(Some(value))
}

fn label_ok(label: &str) -> bool {
    !label.is_empty()
        && label.chars().count() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

// ------------------------------------------------------------------------------------------
// AMS: StandardEncoderPreset with JpgImage / PngImage
// ------------------------------------------------------------------------------------------

/// AMS preset types.
pub const AMS_STANDARD_PRESET: &str = "#Microsoft.Media.StandardEncoderPreset";
pub const AMS_BUILTIN_PRESET: &str = "#Microsoft.Media.BuiltInStandardEncoderPreset";
const AMS_JPG_IMAGE: &str = "#Microsoft.Media.JpgImage";
const AMS_PNG_IMAGE: &str = "#Microsoft.Media.PngImage";
const AMS_JPG_FORMAT: &str = "#Microsoft.Media.JpgFormat";
const AMS_PNG_FORMAT: &str = "#Microsoft.Media.PngFormat";

struct AmsLayer {
    label: Option<String>,
    tile: (u32, u32),
    resolution: String,
}

struct AmsCodec {
    series: Series,
    label: Option<String>,
    layers: Vec<AmsLayer>,
}

enum AmsPreset {
    Standard {
        codecs: Vec<AmsCodec>,
        /// (kind, filenamePattern) of the image formats, in order.
        formats: Vec<(ImageKind, String)>,
    },
    /// Accepted (transforms-create.json uses one) but not encoded by the fake.
    BuiltIn(String),
}

/// Checks a Transforms_CreateOrUpdate body's `properties`; the error names the field, e.g.
/// `properties.outputs[0].preset.codecs[0].start: 'soon' is not an ISO 8601 duration, …`.
pub fn ams_validate_transform(properties: &Value) -> Result<(), String> {
    let outputs = transform_outputs(properties)?;
    for (i, output) in outputs.iter().enumerate() {
        let path = format!("properties.outputs[{i}]");
        check_enum(
            output,
            "onError",
            &path,
            &["StopProcessingJob", "ContinueJob"],
        )?;
        check_enum(
            output,
            "relativePriority",
            &path,
            &["Low", "Normal", "High"],
        )?;
        parse_ams_preset(&output["preset"], &format!("{path}.preset"))?;
    }
    Ok(())
}

fn transform_outputs(properties: &Value) -> Result<&Vec<Value>, String> {
    if !properties.is_object() {
        return Err("properties is required and must be an object".into());
    }
    match properties.get("outputs") {
        Some(Value::Array(outputs)) if !outputs.is_empty() => Ok(outputs),
        _ => Err("properties.outputs is required and must be a non-empty array".into()),
    }
}

fn check_enum(object: &Value, key: &str, path: &str, allowed: &[&str]) -> Result<(), String> {
    match opt_str(object, key, path)? {
        Some(v) if !allowed.contains(&v) => Err(format!(
            "{path}.{key} '{v}' must be one of {}",
            allowed.join(", ")
        )),
        _ => Ok(()),
    }
}

fn parse_ams_preset(preset: &Value, path: &str) -> Result<AmsPreset, String> {
    if !preset.is_object() {
        return Err(format!("{path} is required and must be an object"));
    }
    let kind = opt_str(preset, "@odata.type", path)?
        .ok_or_else(|| format!("{path}.@odata.type is required"))?;
    match kind {
        AMS_BUILTIN_PRESET => {
            let name = opt_str(preset, "presetName", path)?
                .ok_or_else(|| format!("{path}.presetName is required"))?;
            return Ok(AmsPreset::BuiltIn(name.to_owned()));
        }
        AMS_STANDARD_PRESET => {}
        other => {
            return Err(format!(
                "{path}.@odata.type '{other}' is not supported by the fake encoder: expected \
                 {AMS_STANDARD_PRESET} (or {AMS_BUILTIN_PRESET})"
            ));
        }
    }
    let Some(Value::Array(codecs_json)) = preset.get("codecs") else {
        return Err(format!("{path}.codecs is required and must be an array"));
    };
    let Some(Value::Array(formats_json)) = preset.get("formats") else {
        return Err(format!("{path}.formats is required and must be an array"));
    };
    if codecs_json.is_empty() {
        return Err(format!("{path}.codecs must not be empty"));
    }
    let mut formats = Vec::new();
    for (i, format) in formats_json.iter().enumerate() {
        let fpath = format!("{path}.formats[{i}]");
        let kind = opt_str(format, "@odata.type", &fpath)?
            .filter(|k| k.starts_with("#Microsoft.Media.") && k.ends_with("Format"))
            .ok_or_else(|| {
                format!("{fpath}.@odata.type is required and must be a #Microsoft.Media.*Format")
            })?;
        let pattern = opt_str(format, "filenamePattern", &fpath)?
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| format!("{fpath}.filenamePattern is required"))?;
        match kind {
            AMS_JPG_FORMAT => formats.push((ImageKind::Jpeg, pattern.to_owned())),
            AMS_PNG_FORMAT => formats.push((ImageKind::Png, pattern.to_owned())),
            // Other formats (Mp4Format in the docs' example) are for codecs the fake ignores.
            _ => {}
        }
    }
    let mut codecs = Vec::new();
    for (i, codec) in codecs_json.iter().enumerate() {
        let cpath = format!("{path}.codecs[{i}]");
        let kind = match opt_str(codec, "@odata.type", &cpath)? {
            Some(AMS_JPG_IMAGE) => ImageKind::Jpeg,
            Some(AMS_PNG_IMAGE) => ImageKind::Png,
            Some(other) => {
                return Err(format!(
                    "{cpath}.@odata.type '{other}' is not supported by the fake encoder: \
                     expected {AMS_JPG_IMAGE} or {AMS_PNG_IMAGE}"
                ));
            }
            None => return Err(format!("{cpath}.@odata.type is required")),
        };
        let start = time_field(codec, "start", &cpath, TimeSyntax::Ams { best: true })?
            .ok_or_else(|| format!("{cpath}.start is required"))?;
        let step = time_field(codec, "step", &cpath, TimeSyntax::Ams { best: false })?;
        let range = time_field(codec, "range", &cpath, TimeSyntax::Ams { best: false })?;
        let sprite_columns = opt_int(codec, "spriteColumn", &cpath, 1, i32::MAX.into())?;
        if sprite_columns.is_some() && kind != ImageKind::Jpeg {
            return Err(format!(
                "{cpath}.spriteColumn is only supported by {AMS_JPG_IMAGE}"
            ));
        }
        let label = opt_str(codec, "label", &cpath)?.map(str::to_owned);
        let mut layers = Vec::new();
        match codec.get("layers") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (j, layer) in items.iter().enumerate() {
                    let lpath = format!("{cpath}.layers[{j}]");
                    if !layer.is_object() {
                        return Err(format!("{lpath} must be an object"));
                    }
                    let width = parse_size(&layer["width"], &format!("{lpath}.width"))?;
                    let height = parse_size(&layer["height"], &format!("{lpath}.height"))?;
                    if kind == ImageKind::Jpeg {
                        opt_int(layer, "quality", &lpath, 0, 100)?;
                    }
                    let (tile, resolution) = tile_and_resolution(width, height);
                    layers.push(AmsLayer {
                        label: opt_str(layer, "label", &lpath)?.map(str::to_owned),
                        tile,
                        resolution,
                    });
                }
            }
            Some(_) => return Err(format!("{cpath}.layers must be an array")),
        }
        if !formats.iter().any(|(k, _)| *k == kind) {
            return Err(format!(
                "{path}.formats has no {} for {cpath} ({})",
                match kind {
                    ImageKind::Jpeg => AMS_JPG_FORMAT,
                    ImageKind::Png => AMS_PNG_FORMAT,
                },
                match kind {
                    ImageKind::Jpeg => AMS_JPG_IMAGE,
                    ImageKind::Png => AMS_PNG_IMAGE,
                }
            ));
        }
        codecs.push(AmsCodec {
            series: Series {
                kind,
                start,
                step,
                range,
                sprite_columns: sprite_columns.map(|c| c as u32),
                tile: DEFAULT_TILE,
            },
            label,
            layers,
        });
    }
    Ok(AmsPreset::Standard { codecs, formats })
}

/// What an AMS transform output's preset writes for an input video of that base name (already
/// truncated, see [`AMS_BASENAME_MAX`]): per codec, per layer (one if none), per format of the
/// codec's type, the images named by the format's `filenamePattern` (`{Label}` = the codec's
/// label, else the layer's, else empty; `{Resolution}` = `{w}x{h}` for pixel layers, else
/// empty); with `spriteColumn`, one sprite (the pattern at Index 1) plus its storyboard (the
/// sprite's name with `.vtt`). `Err` = the job fails (`ConfigurationUnsupported`).
pub fn ams_outputs(
    preset: &Value,
    basename: &str,
    duration_secs: u64,
) -> Result<Vec<OutputBlob>, String> {
    let (codecs, formats) = match parse_ams_preset(preset, "preset")? {
        AmsPreset::Standard { codecs, formats } => (codecs, formats),
        AmsPreset::BuiltIn(name) => {
            return Err(format!(
                "The fake encoder only produces thumbnails (JpgImage/PngImage codecs of a \
                 StandardEncoderPreset); built-in preset '{name}' is not supported."
            ));
        }
    };
    let mut blobs = Vec::new();
    for codec in &codecs {
        let default_layer = [AmsLayer {
            label: None,
            tile: DEFAULT_TILE,
            resolution: String::new(),
        }];
        let layers: &[AmsLayer] = if codec.layers.is_empty() {
            &default_layer
        } else {
            &codec.layers
        };
        for layer in layers {
            let label = codec
                .label
                .as_deref()
                .or(layer.label.as_deref())
                .unwrap_or("");
            let series = Series {
                tile: layer.tile,
                ..codec.series
            };
            for (_, pattern) in formats.iter().filter(|(k, _)| *k == series.kind) {
                let name = |index| {
                    expand_filename_pattern(
                        pattern,
                        &PatternValues {
                            basename,
                            label,
                            index,
                            extension: series.kind.extension(),
                            resolution: &layer.resolution,
                        },
                    )
                };
                blobs.extend(
                    series.render(duration_secs, name, |sprite| with_extension(sprite, ".vtt")),
                );
            }
        }
    }
    Ok(blobs)
}

// ------------------------------------------------------------------------------------------
// MK.IO: #MediaKind.ThumbnailGeneratorPreset
// ------------------------------------------------------------------------------------------

pub const MKIO_THUMBNAIL_PRESET: &str = "#MediaKind.ThumbnailGeneratorPreset";

struct MkioThumbnails {
    base_filename: Option<String>,
    entries: Vec<(Series, String)>,
}

/// Checks a PUT transform body's `properties` against `TransformPutProperties` /
/// `ThumbnailGeneratorPreset`; the error names the field.
pub fn mkio_validate_transform(properties: &Value) -> Result<(), String> {
    let outputs = transform_outputs(properties)?;
    for (i, output) in outputs.iter().enumerate() {
        let path = format!("properties.outputs[{i}]");
        check_enum(
            output,
            "onError",
            &path,
            &["ContinueJob", "StopProcessingJob"],
        )?;
        check_enum(
            output,
            "relativePriority",
            &path,
            &["High", "Low", "Normal"],
        )?;
        parse_mkio_preset(&output["preset"], &format!("{path}.preset"))?;
    }
    Ok(())
}

fn parse_mkio_preset(preset: &Value, path: &str) -> Result<MkioThumbnails, String> {
    if !preset.is_object() {
        return Err(format!("{path} is required and must be an object"));
    }
    match opt_str(preset, "@odata.type", path)? {
        Some(MKIO_THUMBNAIL_PRESET) => {}
        Some(other) => {
            return Err(format!(
                "{path}.@odata.type '{other}' is not supported by the fake encoder: expected \
                 {MKIO_THUMBNAIL_PRESET}"
            ));
        }
        None => return Err(format!("{path}.@odata.type is required")),
    }
    let base_filename = opt_str(preset, "baseFilename", path)?;
    if let Some(base) = base_filename
        && !label_ok(base)
    {
        return Err(format!(
            "{path}.baseFilename '{base}' must match ^[A-Za-z0-9_-]+$ and be at most 64 characters"
        ));
    }
    let Some(Value::Array(items)) = preset.get("thumbnails") else {
        return Err(format!(
            "{path}.thumbnails is required and must be an array"
        ));
    };
    if items.is_empty() {
        return Err(format!("{path}.thumbnails must have at least one item"));
    }
    let mut entries = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let tpath = format!("{path}.thumbnails[{i}]");
        if !item.is_object() {
            return Err(format!("{tpath} must be an object"));
        }
        let kind = match opt_str(item, "format", &tpath)? {
            Some("Jpeg") => ImageKind::Jpeg,
            Some("Png") => ImageKind::Png,
            Some(other) => return Err(format!("{tpath}.format '{other}' must be Jpeg or Png")),
            None => return Err(format!("{tpath}.format is required (Jpeg or Png)")),
        };
        let start = time_field(item, "start", &tpath, TimeSyntax::Mkio { one: false })?
            .unwrap_or(TimeValue::Millis(10_000));
        let step = time_field(item, "step", &tpath, TimeSyntax::Mkio { one: false })?;
        let range = time_field(item, "range", &tpath, TimeSyntax::Mkio { one: true })?
            .unwrap_or(TimeValue::Frames(1));
        let width = parse_size(&item["width"], &format!("{tpath}.width"))?;
        let height = parse_size(&item["height"], &format!("{tpath}.height"))?;
        opt_int(item, "quality", &tpath, 0, 100)?;
        let sprite_columns = opt_int(item, "spriteColumn", &tpath, 1, 10)?;
        let label = opt_str(item, "label", &tpath)?.unwrap_or("");
        if !label.is_empty() && !label_ok(label) {
            return Err(format!(
                "{tpath}.label '{label}' must match ^[A-Za-z0-9_-]+$ and be at most 64 characters"
            ));
        }
        let (tile, _) = tile_and_resolution(width, height);
        entries.push((
            Series {
                kind,
                start,
                step,
                range: Some(range),
                sprite_columns: sprite_columns.map(|c| c as u32),
                tile,
            },
            label.to_owned(),
        ));
    }
    Ok(MkioThumbnails {
        base_filename: base_filename.map(str::to_owned),
        entries,
    })
}

/// What an MK.IO `ThumbnailGeneratorPreset` writes for an input video file: per thumbnails
/// entry, `{BaseFilename}_{Label}{Index}{Extension}` (BaseFilename = the preset's
/// `baseFilename`, else the video's base name truncated to 64 characters; Label = the entry's
/// `label`, else empty: the excerpt gives no default); with `spriteColumn`, one sprite
/// `{BaseFilename}_{Label}000001{Extension}` plus `{BaseFilename}_{Label}.vtt`.
pub fn mkio_outputs(
    preset: &Value,
    video_blob: &str,
    duration_secs: u64,
) -> Result<Vec<OutputBlob>, String> {
    let parsed = parse_mkio_preset(preset, "preset")?;
    let base = parsed
        .base_filename
        .unwrap_or_else(|| video_basename(video_blob, MKIO_BASENAME_MAX));
    let mut blobs = Vec::new();
    for (series, label) in &parsed.entries {
        let name = |index| mkio_image_name(&base, label, index, series.kind.extension());
        blobs.extend(series.render(duration_secs, name, |_| mkio_vtt_name(&base, label)));
    }
    Ok(blobs)
}

// ------------------------------------------------------------------------------------------
// Azurite
// ------------------------------------------------------------------------------------------

impl OutputSink {
    /// A fresh client (no pooled connections: the fake may outlive the runtime of the test that
    /// set the sink) trusting the test CA, for Azurite over http or https.
    fn client(&self) -> reqwest::Client {
        super::tls::client_builder(super::tls::shared())
            .pool_max_idle_per_host(0)
            .build()
            .expect("fake encoder: reqwest client")
    }

    fn endpoint(&self) -> &str {
        self.blob_endpoint.trim_end_matches('/')
    }

    fn sas(&self) -> String {
        let account = self
            .endpoint()
            .rsplit('/')
            .next()
            .filter(|a| !a.is_empty() && !a.contains(':'))
            .unwrap_or(ACCOUNT);
        super::seed::account_sas(
            account,
            KEY,
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        )
    }

    /// Creates the container; "already exists" (409) is fine.
    pub async fn create_container(&self, container: &str) -> Result<(), String> {
        let url = format!(
            "{}/{container}?restype=container&{}",
            self.endpoint(),
            self.sas()
        );
        let response = self
            .client()
            .put(&url)
            .body(Vec::<u8>::new())
            .send()
            .await
            .map_err(|e| format!("Create Container {container}: {e}"))?;
        match response.status().as_u16() {
            200..=299 | 409 => Ok(()),
            status => Err(format!(
                "Create Container {container}: {status} {}",
                response.text().await.unwrap_or_default()
            )),
        }
    }

    /// The names of the blobs under `prefix` (all pages); `None` if the container does not exist.
    pub async fn list_blobs(
        &self,
        container: &str,
        prefix: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let name_re = regex::Regex::new(r"<Name>([^<]*)</Name>").expect("regex");
        let marker_re = regex::Regex::new(r"<NextMarker>([^<]+)</NextMarker>").expect("regex");
        let client = self.client();
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{container}?restype=container&comp=list&{}",
                self.endpoint(),
                self.sas()
            );
            let query = {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if !prefix.is_empty() {
                    query.append_pair("prefix", prefix);
                }
                if let Some(m) = &marker {
                    query.append_pair("marker", m);
                }
                query.finish()
            };
            if !query.is_empty() {
                url.push('&');
                url.push_str(&query);
            }
            let response = client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("List Blobs {container}: {e}"))?;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            if status == 404 {
                return Ok(None);
            }
            if !(200..300).contains(&status) {
                return Err(format!("List Blobs {container}: {status} {body}"));
            }
            // Blob names are the only <Name> elements of a List Blobs answer without delimiter.
            names.extend(name_re.captures_iter(&body).map(|c| xml_unescape(&c[1])));
            match marker_re.captures(&body) {
                Some(c) => marker = Some(xml_unescape(&c[1])),
                None => return Ok(Some(names)),
            }
        }
    }

    /// Uploads a block blob.
    pub async fn put_blob(
        &self,
        container: &str,
        name: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), String> {
        let url = format!(
            "{}/{container}/{}?{}",
            self.endpoint(),
            ams_thumbnails::url_path::encode_blob_name(name),
            self.sas()
        );
        let response = self
            .client()
            .put(&url)
            .header("x-ms-blob-type", "BlockBlob")
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .map_err(|e| format!("Put Blob {container}/{name}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "Put Blob {container}/{name}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ))
        }
    }

    /// The input video: the first blob (List Blobs order) with a video extension in `container`
    /// under `folder/`, or, when `files` names some (JobInputAsset `files`), the first of them
    /// that exists there. `None` when there is none (or no container).
    pub async fn find_input_video(
        &self,
        container: &str,
        folder: Option<&str>,
        files: &[String],
    ) -> Result<Option<String>, String> {
        let prefix = folder_prefix(folder);
        let Some(names) = self.list_blobs(container, &prefix).await? else {
            return Ok(None);
        };
        let relative: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix.as_str()))
            .collect();
        if !files.is_empty() {
            return Ok(files
                .iter()
                .find(|f| relative.contains(&f.trim_start_matches('/')))
                .map(|f| f.trim_start_matches('/').to_owned()));
        }
        Ok(relative
            .into_iter()
            .find(|n| is_video(n))
            .map(str::to_owned))
    }

    /// Writes the blobs into `container` under `folder/` (creating the container if needed).
    pub async fn write_outputs(
        &self,
        container: &str,
        folder: Option<&str>,
        blobs: &[OutputBlob],
    ) -> Result<(), String> {
        self.create_container(container).await?;
        let prefix = folder_prefix(folder);
        for blob in blobs {
            self.put_blob(
                container,
                &format!("{prefix}{}", blob.name),
                blob.bytes.clone(),
                blob.content_type,
            )
            .await?;
        }
        Ok(())
    }
}

/// `folder/` (no leading `/`), or empty.
fn folder_prefix(folder: Option<&str>) -> String {
    match folder.map(|f| f.trim_matches('/')) {
        Some(f) if !f.is_empty() => format!("{f}/"),
        _ => String::new(),
    }
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Where an asset's files are: its container and, for MK.IO, its `subPath`.
pub type AssetPlace = (String, Option<String>);

/// What a job's final GET does when the run finishes, gathered under the fake's lock and run
/// without it.
pub struct Encoding {
    /// `transform/job`, for messages.
    pub job: String,
    pub input_asset: String,
    /// `None` if the input asset no longer exists.
    pub input: Option<AssetPlace>,
    /// The JobInputAsset's `files`, if any.
    pub files: Vec<String>,
    /// Per job output: the asset's name, where it is (`None` if it no longer exists), and the
    /// preset of the corresponding transform output.
    pub outputs: Vec<(String, Option<AssetPlace>, Value)>,
}

impl Encoding {
    /// Finds the input video, plans every output with `plan(preset, video blob name relative to
    /// the input folder)`, then writes them all. `Err` = how the job fails: no video
    /// (`ContentMalformed`), a preset the fake cannot encode (`ConfigurationUnsupported`), an
    /// asset deleted meanwhile (`DownloadNotAccessible` / `UploadNotAccessible`). Azurite
    /// failing is a broken test setup and panics.
    pub async fn run(
        &self,
        sink: &OutputSink,
        plan: impl Fn(&Value, &str) -> Result<Vec<OutputBlob>, String>,
    ) -> Result<(), JobOutcome> {
        let Some((container, folder)) = &self.input else {
            return Err(JobOutcome::fail(
                "DownloadNotAccessible",
                &format!("The input asset '{}' no longer exists.", self.input_asset),
                "Download",
                "DoNotRetry",
            ));
        };
        let video = sink
            .find_input_video(container, folder.as_deref(), &self.files)
            .await
            .unwrap_or_else(|e| panic!("fake encoder, job {}: {e}", self.job));
        let Some(video) = video else {
            return Err(no_video_error(container, folder.as_deref()));
        };
        let mut planned = Vec::new();
        for (asset, place, preset) in &self.outputs {
            let Some((out_container, out_folder)) = place else {
                return Err(JobOutcome::fail(
                    "UploadNotAccessible",
                    &format!("The output asset '{asset}' no longer exists."),
                    "Upload",
                    "DoNotRetry",
                ));
            };
            let blobs = plan(preset, &video).map_err(|message| {
                JobOutcome::fail(
                    "ConfigurationUnsupported",
                    &message,
                    "Configuration",
                    "DoNotRetry",
                )
            })?;
            planned.push((out_container, out_folder, blobs));
        }
        for (out_container, out_folder, blobs) in planned {
            sink.write_outputs(out_container, out_folder.as_deref(), &blobs)
                .await
                .unwrap_or_else(|e| panic!("fake encoder, job {}: {e}", self.job));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// Jobs
// ------------------------------------------------------------------------------------------

/// `JobState` (the swagger's enum; the fakes never cancel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Error | JobState::Canceled
        )
    }
}

/// A `JobError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFailure {
    pub code: String,
    pub message: String,
    pub category: String,
    pub retry: String,
}

/// One run of a job: PUT → `Queued`; each GET advances one step; the `steps`-th GET reaches the
/// final state. With 2 steps: 1st GET `Processing` 50%; with more: `Scheduled`, then
/// `Processing` with rising progress; with 1: straight to the final state.
#[derive(Clone, Debug)]
pub struct JobRun {
    pub steps: usize,
    pub gets: usize,
    pub outcome: JobOutcome,
    pub state: JobState,
    pub progress: u32,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    pub start_time: Option<OffsetDateTime>,
    pub end_time: Option<OffsetDateTime>,
    pub failure: Option<JobFailure>,
}

/// What a GET did to a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advance {
    /// Already final, or moved to an intermediate state: answer as it is.
    Done,
    /// This GET ends the run: the caller writes the outputs (or not) and calls
    /// [`JobRun::finish`] or [`JobRun::fail`] before answering.
    Final(JobOutcome),
}

impl JobRun {
    pub fn new(steps: usize, outcome: JobOutcome) -> Self {
        assert!(steps >= 1, "a job needs at least one step");
        let now = OffsetDateTime::now_utc();
        Self {
            steps,
            gets: 0,
            outcome,
            state: JobState::Queued,
            progress: 0,
            created: now,
            last_modified: now,
            start_time: None,
            end_time: None,
            failure: None,
        }
    }

    /// One GET's worth of progress.
    pub fn advance(&mut self) -> Advance {
        if self.state.is_final() {
            return Advance::Done;
        }
        // A cancel asked for: `Canceling` as the cancel answers, `Canceled` on the next GET,
        // no outputs written.
        if self.state == JobState::Canceling {
            let now = OffsetDateTime::now_utc();
            self.state = JobState::Canceled;
            self.end_time = Some(now);
            self.last_modified = now;
            return Advance::Done;
        }
        self.gets += 1;
        let i = self.gets;
        if i >= self.steps {
            return Advance::Final(self.outcome.clone());
        }
        let now = OffsetDateTime::now_utc();
        if self.steps > 2 && i == 1 {
            self.state = JobState::Scheduled;
            self.progress = 0;
        } else {
            let (done, of) = if self.steps == 2 {
                (1, 2)
            } else {
                (i - 1, self.steps - 1)
            };
            self.state = JobState::Processing;
            self.progress = (100 * done / of) as u32;
            self.start_time.get_or_insert(now);
        }
        self.last_modified = now;
        Advance::Done
    }

    /// `cancelJob` (AMS `Jobs_CancelJob`, MK.IO's `cancelJob`): a job that is not final goes
    /// `Canceling`; a final one stays as it is (both backends answer 200 either way).
    pub fn cancel(&mut self) {
        if !self.state.is_final() {
            self.state = JobState::Canceling;
            self.last_modified = OffsetDateTime::now_utc();
        }
    }

    pub fn finish(&mut self) {
        let now = OffsetDateTime::now_utc();
        self.state = JobState::Finished;
        self.progress = 100;
        self.start_time.get_or_insert(now);
        self.end_time = Some(now);
        self.last_modified = now;
    }

    pub fn fail(&mut self, outcome: &JobOutcome) {
        let JobOutcome::Fail {
            code,
            message,
            category,
            retry,
        } = outcome
        else {
            panic!("JobRun::fail needs JobOutcome::Fail");
        };
        let now = OffsetDateTime::now_utc();
        self.state = JobState::Error;
        self.start_time.get_or_insert(now);
        self.end_time = Some(now);
        self.last_modified = now;
        self.failure = Some(JobFailure {
            code: code.clone(),
            message: message.clone(),
            category: category.clone(),
            retry: retry.clone(),
        });
    }
}

/// One output of a job (`JobOutputAsset`).
#[derive(Clone, Debug)]
pub struct JobOutputSpec {
    pub asset_name: String,
    pub label: String,
    /// The transform output's preset at job creation (a later transform update does not change
    /// a submitted job).
    pub preset: Value,
}

/// A job as both fakes keep it.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub transform: String,
    pub name: String,
    /// `properties.input` as sent (plus the backend's defaults).
    pub input: Value,
    pub outputs: Vec<JobOutputSpec>,
    pub description: Option<String>,
    pub priority: String,
    pub correlation_data: Value,
    pub run: JobRun,
}

impl JobRecord {
    /// The input's `files` (JobInputAsset), if any.
    pub fn input_files(&self) -> Vec<String> {
        self.input["files"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn input_asset(&self) -> &str {
        self.input["assetName"].as_str().unwrap_or_default()
    }

    /// `JobProperties` now; `error_details` adds the ARM `JobError.details` array.
    pub fn properties_json(&self, error_details: bool) -> Value {
        let run = &self.run;
        let time = |t: &OffsetDateTime| json!(t.format(&Rfc3339).expect("RFC 3339"));
        let outputs: Vec<Value> = self
            .outputs
            .iter()
            .map(|o| {
                let mut out = Map::new();
                out.insert(
                    "@odata.type".into(),
                    json!("#Microsoft.Media.JobOutputAsset"),
                );
                out.insert("state".into(), json!(run.state.as_str()));
                out.insert("progress".into(), json!(run.progress));
                out.insert("label".into(), json!(o.label));
                out.insert("assetName".into(), json!(o.asset_name));
                if let Some(t) = &run.start_time {
                    out.insert("startTime".into(), time(t));
                }
                if let Some(t) = &run.end_time {
                    out.insert("endTime".into(), time(t));
                }
                if let Some(f) = &run.failure {
                    let mut error = json!({
                        "code": f.code,
                        "message": f.message,
                        "category": f.category,
                        "retry": f.retry,
                    });
                    if error_details {
                        error["details"] = json!([]);
                    }
                    out.insert("error".into(), error);
                }
                Value::Object(out)
            })
            .collect();
        let mut props = Map::new();
        props.insert("created".into(), time(&run.created));
        props.insert("state".into(), json!(run.state.as_str()));
        props.insert("input".into(), self.input.clone());
        props.insert("lastModified".into(), time(&run.last_modified));
        props.insert("outputs".into(), Value::Array(outputs));
        props.insert("priority".into(), json!(self.priority));
        props.insert("correlationData".into(), self.correlation_data.clone());
        if let Some(d) = &self.description {
            props.insert("description".into(), json!(d));
        }
        if let Some(t) = &run.start_time {
            props.insert("startTime".into(), time(t));
        }
        if let Some(t) = &run.end_time {
            props.insert("endTime".into(), time(t));
        }
        Value::Object(props)
    }
}

/// The parts of a Jobs PUT body both backends share; the error names the field.
pub struct JobRequest {
    pub input: Value,
    pub input_asset: String,
    pub output_assets: Vec<(String, Option<String>)>,
    pub description: Option<String>,
    pub priority: String,
    pub correlation_data: Value,
}

pub fn parse_job_request(body: &Value) -> Result<JobRequest, String> {
    let props = &body["properties"];
    if !props.is_object() {
        return Err("properties is required and must be an object".into());
    }
    let input = &props["input"];
    match input["@odata.type"].as_str() {
        Some("#Microsoft.Media.JobInputAsset") => {}
        Some(other) => {
            return Err(format!(
                "properties.input.@odata.type '{other}' is not supported by the fake: expected \
                 #Microsoft.Media.JobInputAsset"
            ));
        }
        None => return Err("properties.input.@odata.type is required".into()),
    }
    let input_asset = opt_str(input, "assetName", "properties.input")?
        .filter(|a| !a.is_empty())
        .ok_or("properties.input.assetName is required")?
        .to_owned();
    let Some(Value::Array(outputs)) = props.get("outputs") else {
        return Err("properties.outputs is required and must be an array".into());
    };
    if outputs.is_empty() {
        return Err("properties.outputs must not be empty".into());
    }
    let mut output_assets = Vec::new();
    for (i, output) in outputs.iter().enumerate() {
        let path = format!("properties.outputs[{i}]");
        if output["@odata.type"].as_str() != Some("#Microsoft.Media.JobOutputAsset") {
            return Err(format!(
                "{path}.@odata.type must be #Microsoft.Media.JobOutputAsset"
            ));
        }
        let asset = opt_str(output, "assetName", &path)?
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("{path}.assetName is required"))?;
        let label = opt_str(output, "label", &path)?.map(str::to_owned);
        output_assets.push((asset.to_owned(), label));
    }
    check_enum(props, "priority", "properties", &["Low", "Normal", "High"])?;
    let correlation_data = match props.get("correlationData") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => return Err("properties.correlationData must be an object".into()),
    };
    Ok(JobRequest {
        input: input.clone(),
        input_asset,
        output_assets,
        description: opt_str(props, "description", "properties")?.map(str::to_owned),
        priority: opt_str(props, "priority", "properties")?
            .unwrap_or("Normal")
            .to_owned(),
        correlation_data,
    })
}

/// `{presetName}_{outputIndex}` (JobOutput.label's default): the preset's `@odata.type` without
/// its namespace, e.g. `StandardEncoderPreset_0`, `BuiltInStandardEncoderPreset_0` (as in
/// jobs-create.json), `ThumbnailGeneratorPreset_0`.
pub fn default_output_label(preset: &Value, index: usize) -> String {
    let kind = preset["@odata.type"].as_str().unwrap_or("Preset");
    let name = kind.rsplit('.').next().unwrap_or(kind);
    format!("{name}_{index}")
}

/// The transform outputs' defaults (`onError`, `relativePriority`) filled in, as in
/// transforms-create.json's answer.
pub fn transform_properties_with_defaults(properties: &Value) -> Value {
    let mut props = properties.clone();
    if let Some(outputs) = props["outputs"].as_array_mut() {
        for output in outputs {
            if let Some(o) = output.as_object_mut() {
                o.entry("onError").or_insert(json!("StopProcessingJob"));
                o.entry("relativePriority").or_insert(json!("Normal"));
            }
        }
    }
    props
}
