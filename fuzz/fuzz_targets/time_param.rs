//! `?time=` (`http::params::parse_time`): seconds or an ISO 8601 duration; whatever it accepts
//! is a finite, non-negative number of seconds.
#![no_main]

use ams_thumbnails::http::params::parse_time;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(secs) = parse_time(raw) {
        assert!(secs.is_finite() && secs >= 0.0, "{raw:?} -> {secs}");
    }
});
