//! What one ffmpeg run does, worked out before it starts: the frame times, the scale, the
//! sprite's grid, the output names and the command line (never a URL or path from a request:
//! the input comes from the writer, the outputs go to a folder of this service).

use std::path::Path;

use crate::jobs::spec::{ImageFormat, ThumbnailSpec};

/// Most thumbnails one job makes.
pub const MAX_THUMBNAILS: usize = 10_000;
/// AMS truncates `{Basename}` to this many characters.
const BASENAME_MAX: usize = 32;
/// The `{Label}` of generated thumbnails.
pub const LABEL: &str = "Thumbnail";

/// The input as ffprobe saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub duration: f64,
    pub width: u32,
    pub height: u32,
}

/// One run: thumbnail *i* (1-based) is the frame at `times[i-1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub start: f64,
    pub step: f64,
    /// Where reading stops (seconds from the start of the video).
    pub end: f64,
    pub times: Vec<f64>,
    /// The `scale` filter's arguments, when the size changes.
    pub scale: Option<String>,
    pub format: ImageFormat,
    /// Sprite grid (columns, rows), when a sprite is asked for.
    pub grid: Option<(u32, u32)>,
    /// `{Basename}` of the outputs: the video's stem, cut to 32 characters.
    pub basename: String,
}

/// Why there is nothing to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub code: &'static str,
    pub message: String,
}

impl Plan {
    pub fn new(spec: &ThumbnailSpec, probe: Probe, video_name: &str) -> Result<Self, PlanError> {
        let duration = probe.duration;
        if !(duration.is_finite() && duration > 0.0) {
            return Err(PlanError {
                code: "ContentMalformed",
                message: "the input has no duration (not a video?)".into(),
            });
        }
        let start = seconds(&spec.start, duration);
        let step = seconds(&spec.step, duration);
        let range = seconds(&spec.range, duration);
        if start >= duration {
            return Err(PlanError {
                code: "InvalidRange",
                message: format!(
                    "start ({start:.3} s) is at or past the end of the video ({duration:.3} s)"
                ),
            });
        }
        let end = (start + range).min(duration);
        let mut times = Vec::new();
        // Thumbnail i at start + (i-1)*step, while inside [start, end) (the first always).
        loop {
            let t = start + step * times.len() as f64;
            if !times.is_empty() && t >= end - 1e-6 {
                break;
            }
            if times.len() == MAX_THUMBNAILS {
                return Err(PlanError {
                    code: "TooManyThumbnails",
                    message: format!(
                        "this step and range give more than {MAX_THUMBNAILS} thumbnails"
                    ),
                });
            }
            times.push(round_ms(t));
        }
        let scale = match (&spec.width, &spec.height) {
            (None, None) => None,
            (Some(w), h) if w.ends_with('%') => {
                let _ = h;
                let p = w.trim_end_matches('%');
                Some(format!("trunc(iw*{p}/200)*2:trunc(ih*{p}/200)*2"))
            }
            (w, h) => Some(format!(
                "{}:{}",
                w.as_deref().unwrap_or("-2"),
                h.as_deref().unwrap_or("-2")
            )),
        };
        let grid = spec.sprite_columns.map(|columns| {
            let rows = times.len().div_ceil(columns as usize) as u32;
            (columns, rows.max(1))
        });
        Ok(Self {
            start,
            step,
            end,
            times,
            scale,
            format: spec.format,
            grid,
            basename: basename(video_name),
        })
    }

    pub fn extension(&self) -> &'static str {
        match self.format {
            ImageFormat::Jpg => "jpg",
            ImageFormat::Png => "png",
        }
    }

    /// Thumbnail `index`'s file name (`{Basename}_{Label}_{Index}{Extension}`).
    pub fn thumbnail_name(&self, index: usize) -> String {
        format!("{}_{LABEL}_{index:06}.{}", self.basename, self.extension())
    }

    pub fn sprite_name(&self) -> String {
        format!("{}_sprite.jpg", self.basename)
    }

    pub fn vtt_name(&self) -> String {
        format!("{}_sprite.vtt", self.basename)
    }

    /// ffmpeg's arguments: read `input` (with only `protocols`), write numbered thumbnails and
    /// the sprite into `out`, report progress on stdout.
    pub fn arguments(
        &self,
        input: &str,
        protocols: &str,
        ca_file: Option<&Path>,
        out: &Path,
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-progress",
            "pipe:1",
            "-protocol_whitelist",
            protocols,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if protocols.contains("tls") {
            args.extend(["-tls_verify".into(), "1".into()]);
            if let Some(ca) = ca_file {
                args.extend(["-ca_file".into(), ca.to_string_lossy().into_owned()]);
            }
        }
        if self.start > 0.0 {
            args.extend(["-ss".into(), format!("{:.3}", self.start)]);
        }
        args.extend([
            "-t".into(),
            format!("{:.3}", self.end - self.start),
            "-i".into(),
            input.into(),
        ]);
        // The first frame at or after each time (half a millisecond of slack for timestamp
        // rounding); input seeking makes `t` count from `start`.
        let mut chain = format!(
            "[0:v:0]select='gte(t+0.0005\\,selected_n*{:.6})'",
            self.step
        );
        if let Some(scale) = &self.scale {
            chain.push_str(&format!(",scale={scale}"));
        }
        let n = self.times.len();
        let graph = match self.grid {
            Some((columns, rows)) => format!(
                "{chain},split=2[th][sp];[sp]tile=layout={columns}x{rows}:nb_frames={n}[sprite]"
            ),
            None => format!("{chain}[th]"),
        };
        args.extend(["-filter_complex".into(), graph]);
        let pattern = out.join(format!("t_%06d.{}", self.extension()));
        args.extend([
            "-map".into(),
            "[th]".into(),
            "-fps_mode".into(),
            "passthrough".into(),
            "-frames:v".into(),
            n.to_string(),
            "-start_number".into(),
            "1".into(),
        ]);
        if self.format == ImageFormat::Jpg {
            args.extend(["-q:v".into(), "3".into()]);
        }
        args.extend([
            "-f".into(),
            "image2".into(),
            pattern.to_string_lossy().into_owned(),
        ]);
        if self.grid.is_some() {
            args.extend([
                "-map".into(),
                "[sprite]".into(),
                "-frames:v".into(),
                "1".into(),
                "-q:v".into(),
                "3".into(),
                "-update".into(),
                "1".into(),
                "-f".into(),
                "image2".into(),
                out.join("sprite.jpg").to_string_lossy().into_owned(),
            ]);
        }
        args
    }

    /// The storyboard: cue *i* spans thumbnail *i*'s time to the next one's (the last to the
    /// end of the range) and points at its tile of the sprite.
    pub fn vtt(&self, tile_width: u32, tile_height: u32) -> String {
        let columns = self.grid.map_or(1, |g| g.0) as usize;
        let mut out = String::from("WEBVTT\n\n");
        for (i, &t) in self.times.iter().enumerate() {
            let next = self
                .times
                .get(i + 1)
                .copied()
                .unwrap_or(self.end.max(t + 0.001));
            let (x, y) = (
                (i % columns) as u32 * tile_width,
                (i / columns) as u32 * tile_height,
            );
            out.push_str(&format!(
                "{} --> {}\n{}#xywh={x},{y},{tile_width},{tile_height}\n\n",
                timestamp(t),
                timestamp(next),
                self.sprite_name()
            ));
        }
        out
    }
}

/// A spec time value (`PT1M30S`, `10%`) in seconds of a video of `duration`.
fn seconds(value: &str, duration: f64) -> f64 {
    if let Some(p) = value.strip_suffix('%') {
        return duration * p.parse::<f64>().unwrap_or(0.0) / 100.0;
    }
    let mut rest = value.trim_start_matches("PT");
    let mut total = 0.0;
    for (unit, factor) in [('H', 3600.0), ('M', 60.0), ('S', 1.0)] {
        if let Some(i) = rest.find(unit) {
            total += rest[..i].parse::<f64>().unwrap_or(0.0) * factor;
            rest = &rest[i + 1..];
        }
    }
    total
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// `HH:MM:SS.mmm`.
fn timestamp(t: f64) -> String {
    let ms = (t * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The video's file stem, as AMS's `{Basename}` (at most 32 characters), made safe for a blob
/// name's last segment.
fn basename(video: &str) -> String {
    let file = video.rsplit('/').next().unwrap_or(video);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(BASENAME_MAX)
        .collect();
    if cleaned.is_empty() {
        "video".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{GenerateDefaults, GenerateRequest};

    fn spec(request: GenerateRequest) -> ThumbnailSpec {
        ThumbnailSpec::resolve(&request, &GenerateDefaults::default()).unwrap()
    }

    fn probe(duration: f64) -> Probe {
        Probe {
            duration,
            width: 1280,
            height: 720,
        }
    }

    #[test]
    fn thumbnail_i_is_at_start_plus_i_minus_one_steps() {
        let s = spec(GenerateRequest {
            start: Some("PT5S".into()),
            step: Some("PT10S".into()),
            range: Some("PT1M".into()),
            width: Some("320".into()),
            height: Some("180".into()),
            sprite_columns: Some(4),
            ..Default::default()
        });
        let plan = Plan::new(&s, probe(600.0), "media/Big Buck.mp4").unwrap();
        assert_eq!(plan.times, vec![5.0, 15.0, 25.0, 35.0, 45.0, 55.0]);
        assert_eq!(plan.end, 65.0);
        assert_eq!(plan.grid, Some((4, 2)));
        assert_eq!(plan.scale.as_deref(), Some("320:180"));
        assert_eq!(plan.thumbnail_name(2), "Big-Buck_Thumbnail_000002.jpg");
        let vtt = plan.vtt(320, 180);
        assert!(vtt.starts_with(
            "WEBVTT\n\n00:00:05.000 --> 00:00:15.000\nBig-Buck_sprite.jpg#xywh=0,0,320,180\n"
        ));
        assert!(
            vtt.contains("00:00:45.000 --> 00:00:55.000\nBig-Buck_sprite.jpg#xywh=0,180,320,180")
        );
        assert!(
            vtt.contains("00:00:55.000 --> 00:01:05.000\nBig-Buck_sprite.jpg#xywh=320,180,320,180")
        );
        let parsed = crate::recognise::vtt::parse("f/Big-Buck_sprite.vtt", &vtt).unwrap();
        assert_eq!(parsed.sprite_name, "f/Big-Buck_sprite.jpg");
        assert_eq!(parsed.tiles.len(), 6);
    }

    #[test]
    fn percentages_are_of_the_duration_and_the_range_stops_at_the_end() {
        // The defaults: 0%, every 10%, 100%, 25% of the size.
        let plan = Plan::new(&spec(GenerateRequest::default()), probe(100.0), "v.mp4").unwrap();
        assert_eq!(plan.times.len(), 10);
        assert_eq!(plan.times[9], 90.0);
        assert_eq!(
            plan.scale.as_deref(),
            Some("trunc(iw*25/200)*2:trunc(ih*25/200)*2")
        );
        let late = spec(GenerateRequest {
            start: Some("PT95S".into()),
            step: Some("PT10S".into()),
            ..Default::default()
        });
        assert_eq!(
            Plan::new(&late, probe(100.0), "v.mp4").unwrap().times,
            vec![95.0]
        );
        let past = spec(GenerateRequest {
            start: Some("PT100S".into()),
            ..Default::default()
        });
        assert_eq!(
            Plan::new(&past, probe(100.0), "v.mp4").unwrap_err().code,
            "InvalidRange"
        );
        let dense = spec(GenerateRequest {
            step: Some("PT0.001S".into()),
            ..Default::default()
        });
        assert_eq!(
            Plan::new(&dense, probe(100.0), "v.mp4").unwrap_err().code,
            "TooManyThumbnails"
        );
        assert_eq!(
            Plan::new(&dense, probe(f64::NAN), "v.mp4")
                .unwrap_err()
                .code,
            "ContentMalformed"
        );
    }

    #[test]
    fn the_command_reads_only_with_the_given_protocols_and_writes_only_to_its_folder() {
        let s = spec(GenerateRequest {
            step: Some("PT10S".into()),
            sprite_columns: Some(10),
            ..Default::default()
        });
        let plan = Plan::new(&s, probe(600.0), "v.mp4").unwrap();
        let args = plan.arguments(
            "https://a.blob/c/v.mp4?sig=x",
            "https,tls,tcp",
            None,
            Path::new("/work/out"),
        );
        let at = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(at("-protocol_whitelist"), "https,tls,tcp");
        assert_eq!(at("-tls_verify"), "1");
        assert_eq!(at("-i"), "https://a.blob/c/v.mp4?sig=x");
        assert!(at("-filter_complex").contains("tile=layout=10x6:nb_frames=60"));
        assert!(args.iter().any(|a| a == "/work/out/t_%06d.jpg"));
        assert!(args.iter().any(|a| a == "/work/out/sprite.jpg"));
        assert!(!args.iter().any(|a| a == "-ss"), "start 0: no seek");
    }
}
