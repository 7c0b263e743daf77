//! Least privilege, checked on every SAS URL the service emits: read-only, one blob, https
//! only (unless an emulator over http), valid from at most the configured skew in the past to
//! at most the configured lifetime ahead.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What a URL's SAS may grant.
pub struct Expect {
    pub allow_http: bool,
    pub lifetime: Duration,
    pub clock_skew: Duration,
}

pub fn assert_least_privilege(url: &str, expect: &Expect) {
    let parsed = url::Url::parse(url).expect("a URL");
    let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(get("sp").as_deref(), Some("r"), "read only: {url}");
    assert_eq!(get("sr").as_deref(), Some("b"), "one blob: {url}");
    let spr = get("spr").expect("spr");
    if expect.allow_http {
        assert!(spr == "https,http" || spr == "https", "{url}");
    } else {
        assert_eq!(spr, "https", "https only: {url}");
        assert_eq!(parsed.scheme(), "https");
    }
    assert!(get("sig").is_some_and(|s| !s.is_empty()));
    let now = OffsetDateTime::now_utc();
    let se = OffsetDateTime::parse(&get("se").expect("se"), &Rfc3339).expect("se is RFC 3339");
    assert!(
        se <= now + expect.lifetime + Duration::from_secs(2),
        "expiry beyond the configured lifetime: {url}"
    );
    if let Some(st) = get("st") {
        let st = OffsetDateTime::parse(&st, &Rfc3339).expect("st is RFC 3339");
        assert!(
            st >= now - expect.clock_skew - Duration::from_secs(120),
            "start further back than the clock-skew allowance: {url}"
        );
        assert!(
            st <= now + Duration::from_secs(2),
            "starts in the future: {url}"
        );
    }
    // A user delegation SAS never outlives its key.
    if let Some(ske) = get("ske") {
        let ske = OffsetDateTime::parse(&ske, &Rfc3339).expect("ske is RFC 3339");
        assert!(se <= ske, "SAS outlives its delegation key: {url}");
    }
    assert!(
        get("sip").is_none() || expect.allow_http,
        "no unexpected IP range"
    );
}
