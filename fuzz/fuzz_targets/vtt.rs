//! The storyboard WebVTT parser (`recognise::vtt::parse`).
//!
//! Input: the first line is the VTT's blob name, the rest its text.
#![no_main]

use ams_thumbnails::recognise::vtt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (name, text) = input.split_once('\n').unwrap_or(("storyboard.vtt", input));
    let Some(sb) = vtt::parse(name, text) else {
        return;
    };
    // The sprite sits in the VTT's own folder.
    let folder = name.rfind('/').map_or("", |i| &name[..=i]);
    let rest = sb
        .sprite_name
        .strip_prefix(folder)
        .unwrap_or_else(|| panic!("sprite {:?} outside {folder:?}", sb.sprite_name));
    assert!(!rest.is_empty(), "empty sprite name");
    for tile in &sb.tiles {
        assert!(
            tile.start.is_finite() && tile.start >= 0.0,
            "start {}",
            tile.start
        );
        assert!(tile.end.is_finite() && tile.end >= 0.0, "end {}", tile.end);
    }
});
