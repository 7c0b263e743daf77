use super::*;
use crate::config::RecognitionSettings;
use std::time::Duration;

fn blob(name: &str) -> BlobEntry {
    BlobEntry {
        name: name.into(),
        size: 100,
        content_type: None,
        dimensions: None,
    }
}

fn recognise(names: &[&str]) -> Vec<(u64, Option<String>, String)> {
    recognise_with(&RecognitionSettings::default(), names)
}

fn recognise_with(
    settings: &RecognitionSettings,
    names: &[&str],
) -> Vec<(u64, Option<String>, String)> {
    let blobs: Vec<BlobEntry> = names.iter().map(|n| blob(n)).collect();
    Recogniser::new(settings)
        .unwrap()
        .recognise(&blobs, &[])
        .thumbnails
        .into_iter()
        .map(|t| (t.index, t.label, t.blob.name))
        .collect()
}

fn t(index: u64, label: Option<&str>, name: &str) -> (u64, Option<String>, String) {
    (index, label.map(String::from), name.into())
}

#[test]
fn builtin_preset_thumbnails_and_their_neighbours() {
    let got = recognise(&[
        "ocean.ism",
        "ocean.ismc",
        "ocean_1280x720_3000.mp4",
        "ocean_manifest.json",
        "Thumbnail000002.jpg",
        "Thumbnail000001.jpg",
        "Thumbnail000010.JPG",
        "ocean_metadata.xml",
        "captions.vtt",
    ]);
    assert_eq!(
        got,
        vec![
            t(1, None, "Thumbnail000001.jpg"),
            t(2, None, "Thumbnail000002.jpg"),
            t(10, None, "Thumbnail000010.JPG"),
        ]
    );
}

#[test]
fn every_default_pattern_is_recognised() {
    let got = recognise(&[
        "Thumbnail000003.png",
        "Thumbnail-movie-000001.png",
        "movie_000002.jpeg",
        "movie_large_000004.jpg",
        "movie_small_000004.jpg",
        "movie_640x360_000005.bmp",
        "movie.mp4",
    ]);
    assert_eq!(
        got,
        vec![
            t(1, None, "Thumbnail-movie-000001.png"),
            t(2, None, "movie_000002.jpeg"),
            t(3, None, "Thumbnail000003.png"),
            t(4, Some("large"), "movie_large_000004.jpg"),
            t(4, Some("small"), "movie_small_000004.jpg"),
            t(5, None, "movie_640x360_000005.bmp"),
        ]
    );
}

#[test]
fn mkio_thumbnail_generator_outputs() {
    let got = recognise(&[
        "movie.mp4",
        "movie_Thumbnail000001.png",
        "movie_Thumbnail000002.png",
        "movie_Sprite.vtt",
    ]);
    assert_eq!(
        got,
        vec![
            t(1, Some("Thumbnail"), "movie_Thumbnail000001.png"),
            t(2, Some("Thumbnail"), "movie_Thumbnail000002.png"),
        ]
    );
}

#[test]
fn basename_with_underscores_is_not_mistaken_for_a_label() {
    // A lone reading "big_buck" + label "bunny" has no sibling label and no known basename.
    let got = recognise(&["big_buck_bunny_000001.jpg", "big_buck_bunny_000002.jpg"]);
    assert_eq!(
        got,
        vec![
            t(1, None, "big_buck_bunny_000001.jpg"),
            t(2, None, "big_buck_bunny_000002.jpg"),
        ]
    );
    // With the source video next to it, the exact stem wins over its prefix.
    let got = recognise(&["big_buck_bunny.mp4", "big_buck_bunny_000001.jpg"]);
    assert_eq!(got, vec![t(1, None, "big_buck_bunny_000001.jpg")]);
}

#[test]
fn labels_of_a_multi_layer_preset_with_underscored_basename() {
    let got = recognise(&[
        "my_holiday_video_large_000001.jpg",
        "my_holiday_video_small_000001.jpg",
        "my_holiday_video_large_000002.jpg",
        "my_holiday_video_small_000002.jpg",
    ]);
    assert_eq!(
        got,
        vec![
            t(1, Some("large"), "my_holiday_video_large_000001.jpg"),
            t(1, Some("small"), "my_holiday_video_small_000001.jpg"),
            t(2, Some("large"), "my_holiday_video_large_000002.jpg"),
            t(2, Some("small"), "my_holiday_video_small_000002.jpg"),
        ]
    );
}

#[test]
fn single_label_is_read_when_the_basename_is_known() {
    let got = recognise(&[
        "clip.ism",
        "clip_1280x720_3000.mp4",
        "clip_poster_000001.jpg",
    ]);
    assert_eq!(got, vec![t(1, Some("poster"), "clip_poster_000001.jpg")]);
}

#[test]
fn names_with_digits_spaces_and_unicode() {
    let got = recognise(&[
        "2024 recap_000001.jpg",
        "vidéo été_000002.jpg",
        "番組_000003.png",
        "Thumbnail-Mon film 2-000004.jpg",
        "clip7_000005.jpg",
    ]);
    assert_eq!(
        got,
        vec![
            t(1, None, "2024 recap_000001.jpg"),
            t(2, None, "vidéo été_000002.jpg"),
            t(3, None, "番組_000003.png"),
            t(4, None, "Thumbnail-Mon film 2-000004.jpg"),
            t(5, None, "clip7_000005.jpg"),
        ]
    );
}

#[test]
fn upper_case_extensions_and_jpeg() {
    let got = recognise(&[
        "Thumbnail000001.JPG",
        "Thumbnail000002.Jpeg",
        "Thumbnail000003.PNG",
        "Thumbnail000004.BMP",
        "Thumbnail000005.gif",
        "Thumbnail000006.webp",
    ]);
    assert_eq!(got.len(), 4);
    assert_eq!(got.last().unwrap().2, "Thumbnail000004.BMP");
}

#[test]
fn virtual_folders_keep_their_path() {
    let got = recognise(&[
        "thumbs/Thumbnail000002.jpg",
        "thumbs/Thumbnail000001.jpg",
        "video/clip.ism",
        "a/b/c/clip_000003.png",
    ]);
    assert_eq!(
        got,
        vec![
            t(1, None, "thumbs/Thumbnail000001.jpg"),
            t(2, None, "thumbs/Thumbnail000002.jpg"),
            t(3, None, "a/b/c/clip_000003.png"),
        ]
    );
}

#[test]
fn indices_past_999999() {
    let got = recognise(&[
        "Thumbnail1000000.jpg",
        "Thumbnail999999.jpg",
        "Thumbnail12345678.jpg",
    ]);
    assert_eq!(
        got.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![999_999, 1_000_000, 12_345_678]
    );
}

#[test]
fn not_thumbnails() {
    let got = recognise(&[
        "video.mp4",
        "video.ism",
        "video.ismc",
        "video_manifest.json",
        "video_metadata.xml",
        "sprite.vtt",
        "Thumbnail00001.jpg", // five digits: AMS always pads to six
        "Thumbnail.jpg",
        ".jpg",
        "cover.jpg",
        "Thumbnail000001.jpg.tmp",
        "Thumbnail000001",
        "Thumbnail000000.jpg", // AMS indices start at 1
    ]);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn resolution_gives_width_and_height() {
    let blobs = vec![blob("river_320x180_000001.png"), blob("river.ism")];
    let r = Recogniser::new(&RecognitionSettings::default())
        .unwrap()
        .recognise(&blobs, &[]);
    let th = &r.thumbnails[0];
    assert_eq!(
        (th.width, th.height, th.label.as_deref()),
        (Some(320), Some(180), None)
    );
}

#[test]
fn zero_resolution_is_no_resolution() {
    let blobs = vec![blob("river_0x0_000001.png")];
    let r = Recogniser::new(&RecognitionSettings::default())
        .unwrap()
        .recognise(&blobs, &[]);
    assert_eq!(r.thumbnails.len(), 1);
    assert_eq!(
        (r.thumbnails[0].width, r.thumbnails[0].height),
        (None, None)
    );
}

#[test]
fn dimensions_from_header_then_name_then_layers() {
    let settings = RecognitionSettings {
        layers: vec![crate::config::LayerSize {
            label: "large".into(),
            width: 1280,
            height: 720,
        }],
        ..Default::default()
    };
    let mut with_header = blob("v_large_000002.jpg");
    with_header.dimensions = Some((1000, 500));
    let blobs = vec![
        blob("v.mp4"),
        blob("v_large_000001.jpg"),
        with_header,
        blob("v_000003.jpg"),
    ];
    let r = Recogniser::new(&settings).unwrap().recognise(&blobs, &[]);
    let dims: Vec<_> = r.thumbnails.iter().map(|t| (t.width, t.height)).collect();
    assert_eq!(
        dims,
        vec![
            (Some(1280), Some(720)),
            (Some(1000), Some(500)),
            (None, None)
        ]
    );
}

#[test]
fn times_from_timing_or_absent() {
    let blobs = vec![blob("Thumbnail000001.jpg"), blob("Thumbnail000003.jpg")];
    let none = Recogniser::new(&RecognitionSettings::default())
        .unwrap()
        .recognise(&blobs, &[]);
    assert!(none.thumbnails.iter().all(|t| t.time.is_none()));
    let settings = RecognitionSettings {
        timing: Some(crate::config::Timing {
            start: Duration::from_secs(5),
            step: Duration::from_millis(2500),
        }),
        ..Default::default()
    };
    let timed = Recogniser::new(&settings).unwrap().recognise(&blobs, &[]);
    let times: Vec<_> = timed.thumbnails.iter().map(|t| t.time).collect();
    assert_eq!(times, vec![Some(5.0), Some(10.0)]);
}

#[test]
fn storyboard_excludes_sprite_and_gives_times() {
    let blobs = vec![
        blob("forest_sprite.jpg"),
        blob("forest_sprite.vtt"),
        blob("Thumbnail000001.jpg"),
        blob("Thumbnail000002.jpg"),
        blob("Thumbnail000003.jpg"),
    ];
    let vtt = "WEBVTT\n\n00:00.000 --> 00:02.000\nforest_sprite.jpg#xywh=0,0,16,9\n\n00:02.000 --> 00:04.000\nforest_sprite.jpg#xywh=16,0,16,9\n";
    let sb = vtt::parse("forest_sprite.vtt", vtt).unwrap();
    let settings = RecognitionSettings {
        timing: Some(crate::config::Timing {
            start: Duration::from_secs(100),
            step: Duration::from_secs(1),
        }),
        ..Default::default()
    };
    let r = Recogniser::new(&settings)
        .unwrap()
        .recognise(&blobs, &[("forest_sprite.vtt".into(), sb)]);
    let storyboard = r.storyboard.unwrap();
    assert_eq!(storyboard.sprite.name, "forest_sprite.jpg");
    assert_eq!(storyboard.tiles.len(), 2);
    let got: Vec<_> = r
        .thumbnails
        .iter()
        .map(|t| (t.blob.name.as_str(), t.time))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Thumbnail000001.jpg", Some(0.0)),
            ("Thumbnail000002.jpg", Some(2.0)),
            // Not covered by the storyboard: falls back to the configured timing.
            ("Thumbnail000003.jpg", Some(102.0)),
        ]
    );
}

#[test]
fn sprite_named_like_a_thumbnail_is_not_listed() {
    let blobs = vec![blob("forest_000001.jpg"), blob("forest_000001.vtt")];
    let sb = vtt::parse(
        "forest_000001.vtt",
        "WEBVTT\n\n00:00.000 --> 00:02.000\nforest_000001.jpg#xywh=0,0,16,9\n",
    )
    .unwrap();
    let r = Recogniser::new(&RecognitionSettings::default())
        .unwrap()
        .recognise(&blobs, &[("forest_000001.vtt".into(), sb)]);
    assert!(r.thumbnails.is_empty());
    assert!(r.storyboard.is_some());
}

#[test]
fn storyboard_without_its_sprite_is_ignored() {
    let blobs = vec![blob("Thumbnail000001.jpg")];
    let sb = vtt::parse(
        "s.vtt",
        "WEBVTT\n\n00:00.000 --> 00:02.000\nmissing.jpg#xywh=0,0,1,1\n",
    )
    .unwrap();
    let r = Recogniser::new(&RecognitionSettings::default())
        .unwrap()
        .recognise(&blobs, &[("s.vtt".into(), sb)]);
    assert!(r.storyboard.is_none());
    assert_eq!(r.thumbnails.len(), 1);
}

#[test]
fn custom_patterns_are_compiled_and_checked() {
    let settings = RecognitionSettings {
        patterns: vec!["thumbs/{Basename}-{Label}-{Index}{Extension}".into()],
        ..Default::default()
    };
    let got = recognise_with(
        &settings,
        &[
            "thumbs/clip-hd-000001.jpg",
            "thumbs/clip-sd-000001.jpg",
            "other/clip-hd-000001.jpg",
        ],
    );
    assert_eq!(
        got,
        vec![
            t(1, Some("hd"), "thumbs/clip-hd-000001.jpg"),
            t(1, Some("sd"), "thumbs/clip-sd-000001.jpg"),
        ]
    );
    for (bad, why) in [
        ("Thumbnail{Extension}", "no {Index}"),
        ("{Basename}_{Bitrate}_{Index}", "does not apply"),
        ("{Index}{Index}", "twice"),
        ("{Nope}{Index}", "unknown macro"),
        ("{Index", "unclosed"),
    ] {
        let err = Recogniser::new(&RecognitionSettings {
            patterns: vec![bad.into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.key, "recognition.patterns[0]");
        assert!(err.message.contains(why), "{bad}: {}", err.message);
    }
}

#[test]
fn literal_regex_characters_in_patterns_are_literal() {
    let settings = RecognitionSettings {
        patterns: vec!["thumb.(v1)+{Index}{Extension}".into()],
        ..Default::default()
    };
    assert_eq!(
        recognise_with(&settings, &["thumb.(v1)+000001.jpg"]).len(),
        1
    );
    assert!(recognise_with(&settings, &["thumbX(v1)+000001.jpg"]).is_empty());
}
