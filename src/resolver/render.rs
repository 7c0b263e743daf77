//! Everything a hit serves, rendered once at load time: the JSON answer (plain and gzip), its
//! strong ETag, and the storyboard as WebVTT and JSON.

use std::io::Write;

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::model::{AssetThumbnails, StoryboardTile};

/// The pre-rendered bodies of one asset.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: Bytes,
    pub json_gzip: Bytes,
    /// Strong ETag of `json` (quoted).
    pub etag: String,
    pub storyboard_vtt: Option<Bytes>,
    pub storyboard_json: Option<Bytes>,
}

/// `GET /assets/{id}/storyboard.json`, in the spirit of Mux's storyboard.json.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoryboardDocument<'a> {
    asset_id: &'a str,
    url: &'a str,
    content_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    expires_at: Option<OffsetDateTime>,
    tiles: &'a [StoryboardTile],
}

pub fn render(asset: &AssetThumbnails) -> Result<Rendered, serde_json::Error> {
    let json = Bytes::from(serde_json::to_vec(asset)?);
    let (storyboard_vtt, storyboard_json) = match &asset.storyboard {
        Some(sb) => {
            let doc = StoryboardDocument {
                asset_id: &asset.asset_id,
                url: &sb.url,
                content_type: &sb.content_type,
                width: sb.width,
                height: sb.height,
                expires_at: asset.expires_at,
                tiles: &sb.tiles,
            };
            (
                Some(Bytes::from(vtt(&sb.url, &sb.tiles))),
                Some(Bytes::from(serde_json::to_vec(&doc)?)),
            )
        }
        None => (None, None),
    };
    Ok(Rendered {
        json_gzip: gzip(&json),
        etag: etag(&json),
        json,
        storyboard_vtt,
        storyboard_json,
    })
}

/// The storyboard VTT with every cue pointing at the sprite's working URL.
fn vtt(sprite_url: &str, tiles: &[StoryboardTile]) -> String {
    let mut out = String::from("WEBVTT\n");
    for t in tiles {
        out.push_str(&format!(
            "\n{} --> {}\n{sprite_url}#xywh={},{},{},{}\n",
            timestamp(t.start),
            timestamp(t.end),
            t.x,
            t.y,
            t.w,
            t.h
        ));
    }
    out
}

/// `hh:mm:ss.mmm`.
fn timestamp(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `"` + 32 hex digits of SHA-256 + `"`.
pub fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("writing to memory");
    Bytes::from(encoder.finish().expect("writing to memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0.0), "00:00:00.000");
        assert_eq!(timestamp(62.5), "00:01:02.500");
        assert_eq!(timestamp(3725.0015), "01:02:05.002");
    }

    #[test]
    fn vtt_points_every_cue_at_the_url() {
        let tiles = [
            StoryboardTile {
                start: 0.0,
                end: 2.0,
                x: 0,
                y: 0,
                w: 160,
                h: 90,
            },
            StoryboardTile {
                start: 2.0,
                end: 4.0,
                x: 160,
                y: 0,
                w: 160,
                h: 90,
            },
        ];
        let text = vtt("https://a/s.jpg?sig=x", &tiles);
        let parsed = crate::recognise::vtt::parse("s.vtt", &text).expect("our VTT parses");
        assert_eq!(parsed.tiles, tiles);
        assert!(text.contains("https://a/s.jpg?sig=x#xywh=160,0,160,90"));
    }

    #[test]
    fn gzip_round_trips_and_etag_is_strong() {
        use std::io::Read;
        let body = br#"{"assetId":"a","thumbnails":[]}"#;
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzip(body)[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), body);
        let tag = etag(body);
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
        assert_ne!(tag, etag(b"other"));
    }
}
