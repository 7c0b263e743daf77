//! Everything a hit serves, rendered once at load time: the JSON answer, its strong ETag, and
//! the storyboard as WebVTT and JSON (the gzip variant is made on first request).

use std::io::Write;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::model::{AssetThumbnails, StoryboardTile};

/// The pre-rendered bodies of one asset.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: Vec<u8>,
    /// Strong ETag of `json` (quoted).
    pub etag: String,
    pub storyboard_vtt: Option<Vec<u8>>,
    pub storyboard_json: Option<Vec<u8>>,
    /// Where each thumbnail's JSON object is in `json`, in list order: (index, start, length).
    pub thumbnails: Vec<(u64, usize, usize)>,
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
    let json = serde_json::to_vec(asset)?;
    let thumbnails = thumbnail_spans(asset, &json)?;
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
                Some(vtt(&sb.url, &sb.tiles).into_bytes()),
                Some(serde_json::to_vec(&doc)?),
            )
        }
        None => (None, None),
    };
    Ok(Rendered {
        etag: etag(&json),
        json,
        storyboard_vtt,
        storyboard_json,
        thumbnails,
    })
}

/// Finds each thumbnail's object in the rendered answer: the answer opens with the asset id
/// and the thumbnail list, whose objects serialize as they do on their own, one after another.
/// The cache then keeps these spans instead of a structured copy of the thumbnails.
fn thumbnail_spans(
    asset: &AssetThumbnails,
    json: &[u8],
) -> Result<Vec<(u64, usize, usize)>, serde_json::Error> {
    let mut prefix = b"{\"assetId\":".to_vec();
    serde_json::to_writer(&mut prefix, &asset.asset_id)?;
    prefix.extend_from_slice(b",\"thumbnails\":[");
    let mismatch = || {
        <serde_json::Error as serde::ser::Error>::custom(
            "thumbnail objects not found in the answer",
        )
    };
    if !json.starts_with(&prefix) {
        return Err(mismatch());
    }
    let mut at = prefix.len();
    let mut spans = Vec::with_capacity(asset.thumbnails.len());
    let mut one = Vec::new();
    for (i, t) in asset.thumbnails.iter().enumerate() {
        if i > 0 {
            if json.get(at) != Some(&b',') {
                return Err(mismatch());
            }
            at += 1;
        }
        one.clear();
        serde_json::to_writer(&mut one, t)?;
        if !json[at..].starts_with(&one) {
            return Err(mismatch());
        }
        spans.push((t.index, at, one.len()));
        at += one.len();
    }
    if json.get(at) != Some(&b']') {
        return Err(mismatch());
    }
    Ok(spans)
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

/// The gzip variant of an answer (made on its first request: see `Resolved::body_gzip`).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("writing to memory");
    encoder.finish().expect("writing to memory")
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
    fn thumbnail_spans_point_at_each_object() {
        use crate::model::{AssetThumbnails, Thumbnail};
        let th = |index, label: Option<&str>, url: &str| Thumbnail {
            index,
            name: format!("Thumbnail{index:06}.jpg"),
            url: url.into(),
            content_type: "image/jpeg".into(),
            size: 10,
            label: label.map(String::from),
            width: Some(160),
            height: None,
            time: Some(index as f64 * 2.5),
        };
        let asset = AssetThumbnails {
            asset_id: "a \"quoted\" id".into(),
            thumbnails: vec![
                th(1, Some("small"), "https://x/1.jpg?sig=a%2Fb&se=1"),
                th(1, Some("l\"a\\bel\u{1}"), "https://x/\u{e9}\"odd\\"),
                th(2, None, "https://x/2.jpg"),
            ],
            storyboard: None,
            expires_at: None,
        };
        let rendered = render(&asset).unwrap();
        assert_eq!(rendered.thumbnails.len(), 3);
        for ((index, start, len), t) in rendered.thumbnails.iter().zip(&asset.thumbnails) {
            assert_eq!(*index, t.index);
            let object: serde_json::Value =
                serde_json::from_slice(&rendered.json[*start..start + len]).unwrap();
            assert_eq!(object, serde_json::to_value(t).unwrap());
        }
        let empty = AssetThumbnails {
            thumbnails: vec![],
            ..asset
        };
        assert!(render(&empty).unwrap().thumbnails.is_empty());
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
