//! What to generate: the optional body of `POST /assets/{id}/thumbnails:generate`, checked
//! against the rules both AMS (`JpgImage`/`PngImage`, Encoding.json 2022-07-01) and MK.IO
//! (`ThumbnailGeneratorConfiguration`, Media API 0.26.14) accept, then completed from the
//! configured defaults.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::config::GenerateDefaults;

/// Most sprite columns (MK.IO's `spriteColumn` maximum; AMS accepts the same range).
pub const MAX_SPRITE_COLUMNS: u32 = 10;
/// Largest pixel size accepted for width or height.
pub const MAX_PIXELS: u32 = 8192;

/// The request body; every field optional (defaults from `[jobs.defaults]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateRequest {
    /// First thumbnail: ISO 8601 duration (`PT5S`) or percent of the video (`10%`).
    pub start: Option<String>,
    /// Interval: ISO 8601 duration or percent.
    pub step: Option<String>,
    /// How far after `start` thumbnails are taken: ISO 8601 duration or percent.
    pub range: Option<String>,
    /// Pixels (`320`) or percent of the source (`25%`).
    pub width: Option<String>,
    pub height: Option<String>,
    /// `jpg` or `png`.
    pub format: Option<String>,
    /// Also produce a sprite of this many columns, with a WebVTT storyboard (0: none).
    pub sprite_columns: Option<u32>,
}

/// The image format of the thumbnails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpg,
    Png,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Jpg => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

/// A complete, valid specification of the thumbnails to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailSpec {
    pub start: String,
    pub step: String,
    pub range: String,
    pub width: Option<String>,
    pub height: Option<String>,
    pub format: ImageFormat,
    /// `None`: no sprite.
    pub sprite_columns: Option<u32>,
}

/// What is wrong with a request (or a default), naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field,
        message: message.into(),
    }
}

impl ThumbnailSpec {
    /// The request over the defaults, each value checked.
    pub fn resolve(
        request: &GenerateRequest,
        defaults: &GenerateDefaults,
    ) -> Result<Self, InvalidSpec> {
        let pick = |given: &Option<String>, default: &str| {
            given.clone().unwrap_or_else(|| default.to_owned())
        };
        let start = time_value("start", &pick(&request.start, &defaults.start))?;
        let step = time_value("step", &pick(&request.step, &defaults.step))?;
        let range = time_value("range", &pick(&request.range, &defaults.range))?;
        if is_zero(&step) {
            return Err(invalid("step", "must be greater than zero"));
        }
        let width = size_value("width", &pick(&request.width, &defaults.width))?;
        let height = size_value("height", &pick(&request.height, &defaults.height))?;
        if let (Some(w), Some(h)) = (&width, &height)
            && (w.ends_with('%') || h.ends_with('%'))
            && w != h
        {
            return Err(invalid(
                "height",
                "when width or height is a percentage, both must be the same percentage",
            ));
        }
        let format = match pick(&request.format, &defaults.format)
            .to_ascii_lowercase()
            .as_str()
        {
            "jpg" | "jpeg" => ImageFormat::Jpg,
            "png" => ImageFormat::Png,
            _ => return Err(invalid("format", "must be \"jpg\" or \"png\"")),
        };
        let columns = request.sprite_columns.unwrap_or(defaults.sprite_columns);
        if columns > MAX_SPRITE_COLUMNS {
            return Err(invalid(
                "spriteColumns",
                format!("must be between 0 (no sprite) and {MAX_SPRITE_COLUMNS}"),
            ));
        }
        Ok(Self {
            start,
            step,
            range,
            width,
            height,
            format,
            sprite_columns: (columns > 0).then_some(columns),
        })
    }

    /// The request that gives exactly this specification, whatever the defaults.
    pub fn as_request(&self) -> GenerateRequest {
        GenerateRequest {
            start: Some(self.start.clone()),
            step: Some(self.step.clone()),
            range: Some(self.range.clone()),
            width: Some(self.width.clone().unwrap_or_default()),
            height: Some(self.height.clone().unwrap_or_default()),
            format: Some(self.format.as_str().to_owned()),
            sprite_columns: Some(self.sprite_columns.unwrap_or(0)),
        }
    }

    /// 8 hex digits naming this specification (transform names, output names).
    pub fn digest(&self) -> String {
        let canonical = format!(
            "v1|{}|{}|{}|{}|{}|{}|{}",
            self.start,
            self.step,
            self.range,
            self.width.as_deref().unwrap_or_default(),
            self.height.as_deref().unwrap_or_default(),
            self.format.as_str(),
            self.sprite_columns.unwrap_or(0)
        );
        hex8(canonical.as_bytes())
    }
}

/// The first `n` hex digits of SHA-256.
pub fn hex_digest(bytes: &[u8], n: usize) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(n);
    out
}

fn hex8(bytes: &[u8]) -> String {
    hex_digest(bytes, 8)
}

/// A time value both backends accept: an ISO 8601 duration of hours, minutes and seconds
/// (`PT1M30S`, `PT0.5S`), or a percentage of the video (`0%` … `100%`). Returned normalised
/// (upper-case duration, trimmed).
fn time_value(field: &'static str, raw: &str) -> Result<String, InvalidSpec> {
    let value = raw.trim();
    if let Some(percent) = value.strip_suffix('%') {
        return match percent.parse::<f64>() {
            Ok(p)
                if (0.0..=100.0).contains(&p)
                    && percent.len() <= 8
                    && !percent.starts_with('+') =>
            {
                Ok(value.to_owned())
            }
            _ => Err(invalid(field, "a percentage must be between 0% and 100%")),
        };
    }
    let upper = value.to_ascii_uppercase();
    if is_iso_duration(&upper) {
        return Ok(upper);
    }
    Err(invalid(
        field,
        "must be an ISO 8601 duration (PT5S, PT1M30S) or a percentage (10%)",
    ))
}

/// `PT[nH][nM][n[.n]S]` with at least one part, each in order.
fn is_iso_duration(value: &str) -> bool {
    let Some(mut rest) = value.strip_prefix("PT") else {
        return false;
    };
    if rest.is_empty() || value.len() > 24 {
        return false;
    }
    let mut parts = 0;
    for unit in ['H', 'M', 'S'] {
        if let Some(i) = rest.find(unit) {
            let number = &rest[..i];
            let fractional_ok = unit == 'S';
            let valid = !number.is_empty()
                && number.chars().filter(|c| *c == '.').count() <= usize::from(fractional_ok)
                && !number.starts_with('.')
                && !number.ends_with('.')
                && number.chars().all(|c| c.is_ascii_digit() || c == '.');
            if !valid {
                return false;
            }
            rest = &rest[i + 1..];
            parts += 1;
        }
    }
    rest.is_empty() && parts > 0
}

fn is_zero(value: &str) -> bool {
    let digits_zero = |s: &str| s.chars().all(|c| c == '0' || c == '.');
    match value.strip_suffix('%') {
        Some(p) => digits_zero(p),
        None => value
            .trim_start_matches("PT")
            .split(['H', 'M', 'S'])
            .all(digits_zero),
    }
}

/// Pixels (1 … 8192) or a percentage (1% … 100%); "" means the source's size.
fn size_value(field: &'static str, raw: &str) -> Result<Option<String>, InvalidSpec> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(percent) = value.strip_suffix('%') {
        return match percent.parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) && !percent.starts_with('+') => {
                Ok(Some(format!("{p}%")))
            }
            _ => Err(invalid(
                field,
                "a percentage must be a whole number from 1% to 100%",
            )),
        };
    }
    match value.parse::<u32>() {
        Ok(px) if (1..=MAX_PIXELS).contains(&px) && !value.starts_with('+') => {
            Ok(Some(px.to_string()))
        }
        _ => Err(invalid(
            field,
            format!("must be pixels (1 to {MAX_PIXELS}) or a percentage (25%)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(request: GenerateRequest) -> Result<ThumbnailSpec, InvalidSpec> {
        ThumbnailSpec::resolve(&request, &GenerateDefaults::default())
    }

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let spec = resolve(GenerateRequest::default()).unwrap();
        assert_eq!(
            spec,
            ThumbnailSpec {
                start: "0%".into(),
                step: "10%".into(),
                range: "100%".into(),
                width: Some("25%".into()),
                height: Some("25%".into()),
                format: ImageFormat::Jpg,
                sprite_columns: None,
            }
        );
        let spec = resolve(GenerateRequest {
            start: Some("pt5s".into()),
            step: Some("PT1M30.5S".into()),
            range: Some("PT1H".into()),
            width: Some("320".into()),
            height: Some("180".into()),
            format: Some("PNG".into()),
            sprite_columns: Some(5),
        })
        .unwrap();
        assert_eq!(spec.start, "PT5S");
        assert_eq!(spec.step, "PT1M30.5S");
        assert_eq!(spec.format, ImageFormat::Png);
        assert_eq!(spec.sprite_columns, Some(5));
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                GenerateRequest {
                    start: Some("5s".into()),
                    ..Default::default()
                },
                "start",
            ),
            (
                GenerateRequest {
                    start: Some("101%".into()),
                    ..Default::default()
                },
                "start",
            ),
            (
                GenerateRequest {
                    step: Some("PT0S".into()),
                    ..Default::default()
                },
                "step",
            ),
            (
                GenerateRequest {
                    step: Some("0%".into()),
                    ..Default::default()
                },
                "step",
            ),
            (
                GenerateRequest {
                    range: Some("PTS".into()),
                    ..Default::default()
                },
                "range",
            ),
            (
                GenerateRequest {
                    range: Some("PT1S1M".into()),
                    ..Default::default()
                },
                "range",
            ),
            (
                GenerateRequest {
                    width: Some("0".into()),
                    ..Default::default()
                },
                "width",
            ),
            (
                GenerateRequest {
                    width: Some("9000".into()),
                    ..Default::default()
                },
                "width",
            ),
            (
                GenerateRequest {
                    width: Some("-5".into()),
                    ..Default::default()
                },
                "width",
            ),
            (
                GenerateRequest {
                    width: Some("50%".into()),
                    height: Some("180".into()),
                    ..Default::default()
                },
                "height",
            ),
            (
                GenerateRequest {
                    format: Some("gif".into()),
                    ..Default::default()
                },
                "format",
            ),
            (
                GenerateRequest {
                    sprite_columns: Some(11),
                    ..Default::default()
                },
                "spriteColumns",
            ),
        ];
        for (request, field) in cases {
            let err = resolve(request.clone()).unwrap_err();
            assert_eq!(err.field, field, "{request:?}: {err}");
        }
    }

    #[test]
    fn the_digest_names_the_specification() {
        let a = resolve(GenerateRequest::default()).unwrap();
        let b = resolve(GenerateRequest {
            format: Some("jpeg".into()),
            ..Default::default()
        })
        .unwrap();
        let c = resolve(GenerateRequest {
            sprite_columns: Some(4),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.digest(), b.digest(), "jpeg and jpg are one format");
        assert_ne!(a.digest(), c.digest());
        assert_eq!(a.digest().len(), 8);
        assert!(a.digest().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn iso_durations() {
        for ok in ["PT5S", "PT1M", "PT1H", "PT1H2M3S", "PT0.5S", "PT10M0S"] {
            assert!(is_iso_duration(ok), "{ok}");
        }
        for bad in [
            "PT", "P1D", "PT1.5M", "PT.5S", "PT5.S", "PTS", "PT5X", "T5S", "PT1S1H",
        ] {
            assert!(!is_iso_duration(bad), "{bad}");
        }
    }
}
