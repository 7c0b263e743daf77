//! The `filenamePattern` compiler and matcher: `Recogniser::new` with arbitrary patterns, then
//! `recognise` over arbitrary blob names (and, optionally, a storyboard from an arbitrary VTT).
//!
//! Input, in sections separated by an empty line:
//!   1. patterns, one a line (none: the default AMS patterns);
//!   2. blob names, one a line;
//!   3. (optional, the rest) a WebVTT named `storyboard.vtt`, its sprite resolved as usual.
#![no_main]

use std::time::Duration;

use ams_thumbnails::config::{LayerSize, RecognitionSettings, Timing};
use ams_thumbnails::model::BlobEntry;
use ams_thumbnails::recognise::{Recogniser, vtt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut sections = input.splitn(3, "\n\n");
    let patterns: Vec<String> = sections
        .next()
        .unwrap_or("")
        .lines()
        .map(str::to_owned)
        .collect();
    let names = sections.next().unwrap_or("");
    let vtt_text = sections.next();

    let defaults = RecognitionSettings::default();
    let settings = RecognitionSettings {
        patterns: if patterns.is_empty() {
            defaults.patterns.clone()
        } else {
            patterns
        },
        layers: vec![LayerSize {
            label: "large".into(),
            width: 1280,
            height: 720,
        }],
        timing: Some(Timing {
            start: Duration::from_secs(1),
            step: Duration::from_millis(2500),
        }),
        ..defaults
    };
    let Ok(recogniser) = Recogniser::new(&settings) else {
        return;
    };

    let blobs: Vec<BlobEntry> = names
        .lines()
        .enumerate()
        .map(|(i, name)| BlobEntry {
            name: name.to_owned(),
            size: i as u64,
            content_type: None,
            dimensions: (i % 3 == 0).then_some((320, 180)),
        })
        .collect();
    let storyboards: Vec<_> = vtt_text
        .and_then(|text| vtt::parse("storyboard.vtt", text))
        .map(|sb| ("storyboard.vtt".to_owned(), sb))
        .into_iter()
        .collect();

    let found = recogniser.recognise(&blobs, &storyboards);

    if let Some(sb) = &found.storyboard {
        assert!(
            blobs.contains(&sb.sprite),
            "storyboard sprite not among the blobs"
        );
    }
    let sprite = found.storyboard.as_ref().map(|sb| sb.sprite.name.as_str());
    for t in &found.thumbnails {
        assert!(t.index >= 1, "index {} of {:?}", t.index, t.blob.name);
        assert!(blobs.contains(&t.blob), "{:?} is not a blob", t.blob.name);
        assert!(
            recogniser.is_image(&t.blob.name),
            "{:?} is not an image",
            t.blob.name
        );
        assert_ne!(
            Some(t.blob.name.as_str()),
            sprite,
            "the sprite listed as a thumbnail"
        );
        if let Some(time) = t.time {
            assert!(
                time.is_finite() && time >= 0.0,
                "time {time} of {:?}",
                t.blob.name
            );
        }
    }
    assert!(
        found.thumbnails.windows(2).all(|w| {
            (w[0].index, &w[0].label, &w[0].blob.name) <= (w[1].index, &w[1].label, &w[1].blob.name)
        }),
        "thumbnails not ordered by index, label, name"
    );
});
