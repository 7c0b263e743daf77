//! `AssetId::parse`: any string either fails or yields an id that obeys the README's rules
//! (1..=260 characters, no control characters, none of `<>%&:\?/*+.'`, no outer white space).
#![no_main]

use ams_thumbnails::asset_id::{AssetId, MAX_LEN};
use libfuzzer_sys::fuzz_target;

const FORBIDDEN: &[char] = &['<', '>', '%', '&', ':', '\\', '?', '/', '*', '+', '.', '\''];

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = AssetId::parse(raw) else {
        return;
    };
    let s = id.as_str();
    assert_eq!(s, raw, "an accepted id is kept as given");
    let len = s.chars().count();
    assert!(
        (1..=MAX_LEN).contains(&len),
        "accepted an id of {len} characters"
    );
    assert!(
        !s.chars().any(char::is_control),
        "accepted a control character"
    );
    assert!(!s.contains(FORBIDDEN), "accepted a forbidden character");
    assert_eq!(s.trim(), s, "accepted outer white space");
    assert_eq!(id.to_string(), s);
    assert_eq!(&*id.key(), s);
    assert_eq!(AssetId::parse(s).as_ref(), Ok(&id), "parsing is idempotent");
});
