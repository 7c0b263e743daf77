//! WebVTT storyboards: cues whose payload is `sprite.jpg#xywh=x,y,w,h`.

use crate::model::StoryboardTile;

/// A storyboard VTT, parsed: which image it maps and the tiles, in cue order.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStoryboard {
    /// The sprite's blob name, resolved against the VTT's own folder.
    pub sprite_name: String,
    pub tiles: Vec<StoryboardTile>,
}

/// Parses a storyboard VTT. Returns None when the file is not WebVTT or its cues do not all
/// point at regions of one image (then it is a subtitle track or something else, not ours).
pub fn parse(vtt_name: &str, text: &str) -> Option<ParsedStoryboard> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines();
    let header = lines.next()?;
    if !(header == "WEBVTT" || header.starts_with("WEBVTT ") || header.starts_with("WEBVTT\t")) {
        return None;
    }
    let folder = match vtt_name.rfind('/') {
        Some(i) => &vtt_name[..=i],
        None => "",
    };
    let mut sprite: Option<String> = None;
    let mut tiles = Vec::new();
    let mut pending_time: Option<(f64, f64)> = None;
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            pending_time = None;
            continue;
        }
        if line.contains("-->") {
            pending_time = Some(parse_timing(line)?);
            continue;
        }
        let Some((start, end)) = pending_time.take() else {
            // Cue identifiers, NOTE/STYLE blocks: ignored.
            continue;
        };
        let (image, frag) = line.split_once("#xywh=")?;
        let frag = frag.strip_prefix("pixel:").unwrap_or(frag);
        let nums: Vec<u32> = frag
            .split(',')
            .map(|n| n.trim().parse().ok())
            .collect::<Option<_>>()?;
        let [x, y, w, h] = nums[..] else { return None };
        let name = resolve(folder, image)?;
        match &sprite {
            None => sprite = Some(name),
            Some(existing) if *existing == name => {}
            Some(_) => return None,
        }
        tiles.push(StoryboardTile {
            start,
            end,
            x,
            y,
            w,
            h,
        });
    }
    Some(ParsedStoryboard {
        sprite_name: sprite?,
        tiles,
    })
}

/// `image` may be relative to the VTT's folder or an absolute URL (only its last segment counts:
/// the sprite always sits next to the VTT in the container).
fn resolve(folder: &str, image: &str) -> Option<String> {
    let image = image.trim();
    if image.is_empty() {
        return None;
    }
    if image.contains("://") {
        let path = image.split(['?', '#']).next()?;
        let last = path.rsplit('/').next()?;
        return (!last.is_empty()).then(|| format!("{folder}{last}"));
    }
    let image = image.strip_prefix("./").unwrap_or(image);
    if image.starts_with('/') || image.split('/').any(|s| s == ".." || s.is_empty()) {
        return None;
    }
    Some(format!("{folder}{image}"))
}

fn parse_timing(line: &str) -> Option<(f64, f64)> {
    let (a, rest) = line.split_once("-->")?;
    let b = rest.split_whitespace().next()?;
    Some((parse_timestamp(a.trim())?, parse_timestamp(b)?))
}

/// `hh:mm:ss.ttt` or `mm:ss.ttt`.
fn parse_timestamp(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.split(':').collect();
    let (h, m, sec) = match parts[..] {
        [h, m, s] => (h.parse::<u64>().ok()?, m, s),
        [m, s] => (0, m, s),
        _ => return None,
    };
    let m: u64 = m.parse().ok()?;
    let sec: f64 = sec.parse().ok()?;
    if m >= 60 || !(0.0..60.0).contains(&sec) {
        return None;
    }
    Some(h as f64 * 3600.0 + m as f64 * 60.0 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTT: &str = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nforest_sprite.jpg#xywh=0,0,160,90\n\n1\n00:00:02.000 --> 00:00:04.500\nforest_sprite.jpg#xywh=160,0,160,90\n\n01:00:04.500 --> 01:00:06.000 line:0\nforest_sprite.jpg#xywh=pixel:320,0,160,90\n";

    #[test]
    fn parses_tiles_in_order() {
        let sb = parse("thumbs/forest_sprite.vtt", VTT).unwrap();
        assert_eq!(sb.sprite_name, "thumbs/forest_sprite.jpg");
        assert_eq!(sb.tiles.len(), 3);
        assert_eq!(sb.tiles[1].start, 2.0);
        assert_eq!(sb.tiles[1].end, 4.5);
        assert_eq!(sb.tiles[1].x, 160);
        assert_eq!(sb.tiles[2].start, 3604.5);
        assert_eq!(sb.tiles[2].x, 320);
    }

    #[test]
    fn short_timestamps_and_absolute_urls() {
        let vtt = "WEBVTT\n\n00:01.000 --> 00:02.000\nhttps://cdn.example/a/sprite.jpg?sv=1#xywh=0,0,10,10\n";
        let sb = parse("x.vtt", vtt).unwrap();
        assert_eq!(sb.sprite_name, "sprite.jpg");
        assert_eq!(sb.tiles[0].start, 1.0);
    }

    #[test]
    fn subtitles_and_garbage_are_not_storyboards() {
        assert!(parse("s.vtt", "WEBVTT\n\n00:00.000 --> 00:01.000\nHello there\n").is_none());
        assert!(parse("s.vtt", "not a vtt").is_none());
        assert!(parse("s.vtt", "WEBVTT\n").is_none());
        assert!(
            parse(
                "s.vtt",
                "WEBVTT\n\n00:00.000 --> 00:01.000\na.jpg#xywh=0,0,1,1\n\n00:01.000 --> 00:02.000\nb.jpg#xywh=0,0,1,1\n"
            )
            .is_none(),
            "two images"
        );
        assert!(
            parse(
                "s.vtt",
                "WEBVTT\n\n00:00.000 --> 00:01.000\n../a.jpg#xywh=0,0,1,1\n"
            )
            .is_none(),
            "escapes the folder"
        );
    }
}
