//! Fault tests. Storage faults are injected by a reverse proxy in front of Azurite
//! (`support::fault_proxy`), ARM faults by the fake ARM's queue. For each fault: the answer
//! the service gives, the exact (or, where timing decides, bounded) number of upstream calls it
//! made, and then recovery without a restart: a correct answer whose every URL loads the seeded
//! bytes. Every answer of every test goes through [`Checker::check`]: no answer ever holds a URL
//! that fails to load.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ams_thumbnails::Settings;
use ams_thumbnails::asset_id::AssetId;
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::fake_arm::{ArmOp, FakeArm, FakeAsset};
use support::fake_entra::FakeEntra;
use support::fault_proxy::{Fault, FaultKind, FaultProxy, Target};
use support::faults::RestFault;
use support::logs::Capture;
use support::seed::{create_container, put_blob};
use support::{TestServer, assert_problem, tls};

/// The asset of the storage tests (template `asset-{assetId}`) and of the AMS tests.
const ASSET_ID: &str = "5f0c2a9e-7d41-4b8a-9c3e-2a1b0c9d8e7f";
/// The seeded container holds six blobs: at four per List Blobs page, a listing is two pages.
const PAGE_SIZE: u32 = 4;
const PAGES: usize = 2;
/// Upstream calls of one load besides the listing: the storyboard VTT read.
const READS: usize = 1;
const THUMBNAILS: [&str; 3] = [
    "Thumbnail000001.jpg",
    "Thumbnail000002.jpg",
    "Thumbnail000003.jpg",
];
const SPRITE: &str = "forest_sprite.jpg";

fn path() -> String {
    format!("/assets/{ASSET_ID}/thumbnails")
}

fn asset_id() -> AssetId {
    AssetId::parse(ASSET_ID).unwrap()
}

// ---- the seeded asset and the answer checker ----

/// Seeds the container like an AMS job's output (thumbnails, a sprite with its VTT, a
/// manifest); returns every blob by name.
async fn seed(client: &reqwest::Client, az: &Azurite, container: &str) -> HashMap<String, Vec<u8>> {
    create_container(client, az, container, None).await;
    let mut blobs = HashMap::new();
    for (name, content_type) in [
        (THUMBNAILS[0], "image/jpeg"),
        (THUMBNAILS[1], "image/jpeg"),
        (THUMBNAILS[2], "image/jpeg"),
        (SPRITE, "image/jpeg"),
        ("forest_sprite.vtt", "text/vtt"),
        ("forest.ism", "application/vnd.ms-sstr+xml"),
    ] {
        let bytes =
            std::fs::read(support::samples_dir().join("sprite-storyboard").join(name)).unwrap();
        put_blob(client, az, container, name, &bytes, content_type).await;
        blobs.insert(name.to_owned(), bytes);
    }
    blobs
}

/// Checks answers of the service: every URL in them loads the seeded bytes.
struct Checker {
    client: reqwest::Client,
    container: String,
    blobs: HashMap<String, Vec<u8>>,
    /// Where the answers' URLs are fetched through (its faults must all be spent first).
    proxy: FaultProxy,
}

/// An answer, checked.
struct Checked {
    status: u16,
    body: Value,
}

impl Checker {
    /// Checks any answer: a 2xx JSON or WebVTT body, every URL in it loaded; a 3xx, its
    /// `Location` loaded; any other status, a body without a single URL. Returns how many URLs
    /// were loaded.
    async fn check(&self, response: reqwest::Response) -> (Checked, usize) {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let mut urls = Vec::new();
        let body = match status {
            200..=299 if content_type.starts_with("text/vtt") => {
                urls.extend(
                    text.lines()
                        .filter(|l| l.starts_with("http://") || l.starts_with("https://"))
                        .map(str::to_owned),
                );
                Value::String(text)
            }
            200..=299 => {
                let body: Value = serde_json::from_str(&text).unwrap();
                collect_urls(&body, &mut urls);
                body
            }
            300..=399 => {
                urls.push(location.expect("a redirect has a Location"));
                Value::Null
            }
            _ => {
                assert!(
                    !text.contains("http://")
                        && !text.contains("https://")
                        && !text.contains("sig="),
                    "an error answer holds no URL: {text}"
                );
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            }
        };
        if !urls.is_empty() {
            assert_eq!(
                self.proxy.pending_faults(),
                0,
                "faults left over would hit the URL checks:\n{}",
                self.proxy.journal()
            );
        }
        for url in &urls {
            self.assert_loads(url).await;
        }
        (Checked { status, body }, urls.len())
    }

    /// The URL answers 200 with the bytes seeded under the blob name it addresses.
    async fn assert_loads(&self, url: &str) {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let prefix = format!("/{ACCOUNT}/{}/", self.container);
        let name = parsed
            .path()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{url}: not a blob of {prefix}"));
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .unwrap()
            .into_owned();
        let expected = self
            .blobs
            .get(&name)
            .unwrap_or_else(|| panic!("{url}: no blob {name} was seeded"));
        let response = self.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url} does not load");
        let bytes = response.bytes().await.unwrap();
        assert!(
            bytes.as_ref() == expected.as_slice(),
            "{name}: not the seeded bytes"
        );
    }

    /// A 200 thumbnail list, correct, every URL loaded.
    async fn assert_ok(&self, response: reqwest::Response) -> Value {
        let (checked, loaded) = self.check(response).await;
        assert_eq!(checked.status, 200, "{}", checked.body);
        let body = checked.body;
        let names: Vec<&str> = body["thumbnails"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, THUMBNAILS, "{body}");
        assert_eq!(body["thumbnails"][1]["time"], 2.0, "times from the VTT");
        assert_eq!(body["storyboard"]["name"], SPRITE, "{body}");
        assert_eq!(
            loaded,
            THUMBNAILS.len() + 1,
            "three thumbnails and the sprite"
        );
        body
    }

    /// A problem with this status, code and `Retry-After` (`None`: no such header), without a
    /// URL.
    async fn assert_problem(
        &self,
        response: reqwest::Response,
        status: u16,
        code: &str,
        retry_after: Option<&str>,
    ) {
        let header = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = assert_problem(response, status, code).await;
        assert_eq!(
            header.as_deref(),
            retry_after,
            "Retry-After of the {status}"
        );
        let text = body.to_string();
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("sig="),
            "{text}"
        );
    }
}

/// Every string of the JSON that is an absolute http(s) URL.
fn collect_urls(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
            out.push(s.clone())
        }
        Value::Array(items) => items.iter().for_each(|v| collect_urls(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_urls(v, out)),
        _ => {}
    }
}

/// Listing and other calls the proxy saw since the last snapshot.
struct Calls {
    proxy: FaultProxy,
    listing: usize,
    other: usize,
}

impl Calls {
    fn new(proxy: &FaultProxy) -> Self {
        Self {
            proxy: proxy.clone(),
            listing: proxy.listing_hits(),
            other: proxy.other_hits(),
        }
    }

    /// `(listing, other)` calls since the last call (or creation), then a new snapshot.
    fn take(&mut self) -> (usize, usize) {
        let (listing, other) = (self.proxy.listing_hits(), self.proxy.other_hits());
        let delta = (listing - self.listing, other - self.other);
        (self.listing, self.other) = (listing, other);
        delta
    }

    /// Asserts the calls since the last snapshot.
    #[track_caller]
    fn assert(&mut self, listing: usize, other: usize, what: &str) {
        let journal = self.proxy.journal();
        assert_eq!(
            self.take(),
            (listing, other),
            "{what}; the proxy saw:\n{journal}"
        );
    }
}

// ---- storage mode, through the fault proxy ----

struct StorageWorld {
    logs: Capture,
    az: Azurite,
    proxy: FaultProxy,
    server: TestServer,
    checker: Checker,
    calls: Calls,
    seed_client: reqwest::Client,
}

/// Storage mode (template), account-key listing and account-key SAS links, Azurite behind the
/// proxy; `upstream` goes in the `[upstream]` table, `extra` holds more tables.
async fn storage_world(upstream: &str, extra: &str) -> StorageWorld {
    let logs = support::logs::capture();
    let az = Azurite::start_http().await;
    let proxy = FaultProxy::start(&az.blob_endpoint).await;
    let seed_client = reqwest::Client::new();
    let container = format!("asset-{ASSET_ID}");
    let blobs = seed(&seed_client, &az, &container).await;
    let toml = format!(
        "[source]\nkind = \"storage\"\n\
         [storage]\naccount = \"{ACCOUNT}\"\nendpoint = \"{endpoint}\"\nauth = \"account-key\"\n\
         account_key = \"{KEY}\"\npage_size = {PAGE_SIZE}\n\
         [links]\nmode = \"account-key-sas\"\nallow_http = true\n\
         [auth]\nallow_anonymous_signed_urls = true\n\
         [upstream]\n{upstream}\n{extra}\n",
        endpoint = proxy.endpoint_template(),
    );
    let mut settings = Settings::from_toml(&toml).expect("storage settings");
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    let server = TestServer::start(settings).await;
    StorageWorld {
        checker: Checker {
            client: reqwest::Client::new(),
            container,
            blobs,
            proxy: proxy.clone(),
        },
        calls: Calls::new(&proxy),
        logs,
        az,
        proxy,
        server,
        seed_client,
    }
}

impl StorageWorld {
    /// `GET /assets/{ASSET_ID}/thumbnails`, and how long it took.
    async fn list(&self) -> (reqwest::Response, Duration) {
        let started = Instant::now();
        let response = self.server.get(&path()).await;
        (response, started.elapsed())
    }

    /// `GET` the asset (cache empty): a correct 200 after exactly these upstream calls, every
    /// URL loaded. Leaves the cache empty.
    async fn assert_ok_after(&mut self, listing: usize, other: usize, what: &str) -> Value {
        let body = self.assert_ok_cached_after(listing, other, what).await;
        self.invalidate().await;
        body
    }

    /// [`Self::assert_ok_after`], the answer left in the cache.
    async fn assert_ok_cached_after(&mut self, listing: usize, other: usize, what: &str) -> Value {
        let (response, _) = self.list().await;
        // The answer is out: the load is over (the URL checks come after this count).
        self.calls.assert(listing, other, what);
        let body = self.checker.assert_ok(response).await;
        self.calls
            .assert(0, THUMBNAILS.len() + 1, "the URL checks, nothing else");
        body
    }

    /// Recovery: a fresh load answers correctly (one full listing and the VTT read), every URL
    /// loaded; the other routes answer from the cache (no upstream call), their URLs loaded
    /// too. Leaves the cache empty.
    async fn assert_recovers(&mut self, what: &str) {
        self.calls.take();
        let body = self
            .assert_ok_cached_after(PAGES, READS, &format!("{what}: one full load"))
            .await;
        assert!(body["expiresAt"].is_string());
        for route in [
            format!("/assets/{ASSET_ID}/thumbnails/2"),
            format!("/assets/{ASSET_ID}/poster?time=PT4S"),
            format!("/assets/{ASSET_ID}/storyboard.vtt"),
        ] {
            let response = self.server.get(&route).await;
            self.calls.assert(0, 0, &format!("{route}: from the cache"));
            let (checked, loaded) = self.checker.check(response).await;
            assert!(
                matches!(checked.status, 200 | 302) && loaded > 0,
                "{route}: {} {}",
                checked.status,
                checked.body
            );
            self.calls.take();
        }
        self.invalidate().await;
    }

    async fn invalidate(&self) {
        self.server.state.resolver.invalidate(&asset_id()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_delayed_past_the_timeout() {
    let mut w = storage_world(
        "timeout = \"500ms\"\nmax_retries = 1\nretry_budget = \"2s\"",
        "",
    )
    .await;
    let slow = Fault::Delay(Duration::from_millis(1500));

    // Both tries of the first page outlast the per-try timeout: 504, after about two timeouts.
    w.proxy.push_faults(Target::Listing, slow.clone(), 2);
    let (response, took) = w.list().await;
    w.checker
        .assert_problem(response, 504, "upstream-timeout", Some("1"))
        .await;
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_millis(2500),
        "two tries of 500 ms and one back-off: {took:?}"
    );
    w.calls
        .assert(2, 0, "one try and one retry of the first page");
    assert_eq!(w.proxy.applied(FaultKind::Delay), 2);
    w.assert_recovers("after timeouts").await;

    // One slow try only: the retry answers.
    w.proxy.push_fault(Target::Listing, slow.clone());
    w.assert_ok_after(
        1 + PAGES,
        READS,
        "the timed-out try, then the whole listing",
    )
    .await;
    w.assert_recovers("after one timeout").await;

    // A slow VTT read (the first call after the listing) times out alike, but costs the asset
    // only its storyboard: the thumbnails are served, and the failure is counted.
    let failures = || {
        support::metric(
            &ams_thumbnails::metrics::handle().render(),
            "storyboard_read_failures_total",
            &[("reason", "read_error")],
        )
    };
    let before = failures();
    w.proxy
        .push_faults(Target::Listing, Fault::Delay(Duration::ZERO), PAGES);
    w.proxy.push_faults(Target::All, slow, 2);
    let (response, _) = w.list().await;
    w.calls
        .assert(PAGES, 2, "the listing, then two tries of the read");
    let (checked, loaded) = w.checker.check(response).await;
    assert_eq!(checked.status, 200, "{}", checked.body);
    let body = checked.body;
    assert_eq!(
        body["thumbnails"].as_array().unwrap().len(),
        THUMBNAILS.len()
    );
    assert_eq!(loaded, THUMBNAILS.len(), "every URL serves its bytes");
    assert!(body.get("storyboard").is_none(), "{body}");
    assert!(failures() > before, "the failed read is counted");
    w.calls.take();
    w.invalidate().await;
    w.assert_recovers("after a slow read").await;
    w.logs.assert_no_secrets(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_500_and_503_bursts() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 2\nretry_budget = \"5s\"",
        "",
    )
    .await;

    // Shorter than the retries, on the second page: the SDK retries that page (not the whole
    // listing), answered.
    w.proxy
        .push_fault(Target::Listing, Fault::Delay(Duration::ZERO));
    w.proxy.push_faults(Target::Listing, Fault::Status(500), 2);
    w.assert_ok_after(PAGES + 2, READS, "page 1 once, page 2 three times")
        .await;
    assert_eq!(w.proxy.applied(FaultKind::Status), 2);

    // As long as the tries: 502, after exactly 1 + max_retries tries.
    w.proxy.push_faults(Target::Listing, Fault::Status(500), 3);
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 502, "upstream-error", None)
        .await;
    w.calls
        .assert(3, 0, "1 + max_retries tries of the first page");
    w.assert_recovers("after a 500 burst").await;

    // A 503 burst (ServerBusy, no Retry-After): throttled, 503 with Retry-After 1.
    w.proxy.push_faults(Target::Listing, Fault::Status(503), 3);
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 503, "upstream-unavailable", Some("1"))
        .await;
    w.calls
        .assert(3, 0, "1 + max_retries tries of the first page");
    w.assert_recovers("after a 503 burst").await;

    w.logs.assert_no_secrets(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_throttling_with_retry_after() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 2\nretry_budget = \"3s\"",
        "",
    )
    .await;

    // 503 ServerBusy, Retry-After 1: waited out (the SDK waits the longer of it and its own
    // back-off), then answered.
    w.proxy.push_fault(
        Target::Listing,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let started = Instant::now();
    w.assert_ok_after(
        1 + PAGES,
        READS,
        "the throttled try, then the whole listing",
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(w.proxy.applied(FaultKind::TooManyRequests), 1);
    w.assert_recovers("after one throttled call").await;

    // Throttled on every try: 503 upstream-unavailable, after 1 + max_retries tries.
    w.proxy.push_faults(
        Target::Listing,
        Fault::TooManyRequests {
            retry_after_secs: 0,
        },
        3,
    );
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 503, "upstream-unavailable", Some("1"))
        .await;
    w.calls.assert(3, 0, "1 + max_retries tries");
    w.assert_recovers("after throttling").await;
    w.logs.assert_no_secrets(None);
}

/// A Storage `Retry-After` past the retry budget: no retry could succeed within it, so the
/// call ends at once as throttled (503 with the server's own hint), not after sleeping it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_retry_after_past_the_budget_is_throttled_at_once() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 3\nretry_budget = \"1s\"",
        "[server]\nrequest_timeout = \"10s\"",
    )
    .await;
    w.proxy.push_fault(
        Target::Listing,
        Fault::TooManyRequests {
            retry_after_secs: 30,
        },
    );
    let (response, took) = w.list().await;
    w.checker
        .assert_problem(response, 503, "upstream-unavailable", Some("30"))
        .await;
    assert!(took < Duration::from_millis(900), "at once: {took:?}");
    w.calls.assert(1, 0, "the throttled try only, no retry");
    w.assert_recovers("after the throttling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_connection_reset() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 1\nretry_budget = \"2s\"",
        "",
    )
    .await;

    // One reset: retried, answered.
    w.proxy.push_fault(Target::Listing, Fault::Reset);
    w.assert_ok_after(1 + PAGES, READS, "the reset try, then the whole listing")
        .await;
    assert_eq!(w.proxy.applied(FaultKind::Reset), 1);

    // Reset on every try: 503 upstream-unavailable, Retry-After 5.
    w.proxy.push_faults(Target::Listing, Fault::Reset, 2);
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 503, "upstream-unavailable", Some("5"))
        .await;
    w.calls.assert(2, 0, "1 + max_retries tries");
    w.assert_recovers("after resets").await;

    // A reset VTT read: retried alike.
    w.proxy
        .push_faults(Target::Listing, Fault::Delay(Duration::ZERO), PAGES);
    w.proxy.push_fault(Target::All, Fault::Reset);
    w.assert_ok_after(PAGES, 2, "the listing, the reset read and its retry")
        .await;
    w.assert_recovers("after a reset read").await;
    w.logs.assert_no_secrets(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_malformed_xml_is_502_and_not_cached() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 3\nretry_budget = \"3s\"",
        "",
    )
    .await;

    // The first page cut in half: 502 at once (a 200 is not retried), nothing cached...
    w.proxy.push_fault(Target::Listing, Fault::MalformedXml);
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 502, "upstream-error", None)
        .await;
    w.calls.assert(1, 0, "one try of the first page");
    assert_eq!(w.proxy.applied(FaultKind::MalformedXml), 1);
    // ...so the next request lists again, and answers.
    w.assert_recovers("after a malformed first page").await;

    // The second page cut in half.
    w.proxy
        .push_fault(Target::Listing, Fault::Delay(Duration::ZERO));
    w.proxy.push_fault(Target::Listing, Fault::MalformedXml);
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 502, "upstream-error", None)
        .await;
    w.calls.assert(PAGES, 0, "both pages, once");
    w.assert_recovers("after a malformed second page").await;
    w.logs.assert_no_secrets(None);
}

/// What a looping `NextMarker` should give: a 502 as soon as a marker repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_next_marker_loop_is_502_at_once() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 1\nretry_budget = \"1s\"",
        "[server]\nrequest_timeout = \"5s\"",
    )
    .await;
    w.proxy.set_marker_loop(true);
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 502, "upstream-error", None)
        .await;
    w.calls.assert(
        PAGES,
        0,
        "the first page, and the page that repeats its marker",
    );
}

/// What a looping `NextMarker` should do to a background refresh: end it, in a few calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_next_marker_loop_ends_a_background_refresh() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 1\nretry_budget = \"1s\"",
        "[cache]\nttl = \"300ms\"\nmax_stale = \"1m\"",
    )
    .await;
    w.assert_ok_cached_after(PAGES, READS, "the first load")
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    w.proxy.set_marker_loop(true);
    let (response, _) = w.list().await;
    assert_eq!(response.headers()["x-cache-status"], "stale");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (listing, _) = w.calls.take();
    assert!(listing <= PAGES + 1, "{listing} listing calls in a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_stopped_during_a_load_then_restarted() {
    let mut w = storage_world(
        "timeout = \"2s\"\nmax_retries = 1\nretry_budget = \"2s\"",
        "",
    )
    .await;
    assert_eq!(w.server.get("/readyz").await.status(), 200);
    w.calls.take();

    // A load in flight (its first listing call held at the proxy) when Azurite stops.
    w.proxy
        .push_fault(Target::Listing, Fault::Delay(Duration::from_millis(600)));
    let client = w.server.client.clone();
    let url = w.server.url(&path());
    let in_flight = tokio::spawn(async move { client.get(url).send().await.unwrap() });
    while w.proxy.applied(FaultKind::Delay) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.az.stop().await;
    let response = in_flight.await.unwrap();
    w.checker
        .assert_problem(response, 503, "upstream-unavailable", Some("5"))
        .await;
    w.calls
        .assert(2, 0, "the held try and one retry, neither answered");
    assert_eq!(w.proxy.upstream_failures(), 2);

    // Down: reported (still ready: an upstream outage is every replica's), and asset
    // requests get a 503 without URLs (nothing was cached).
    assert_eq!(w.server.get("/readyz").await.status(), 200);
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 503, "upstream-unavailable", Some("5"))
        .await;
    w.calls
        .assert(2, 1, "a try and a retry; and the readiness probe");

    // Back (empty, in memory): seeded again, the same service answers.
    w.az.restart().await;
    seed(&w.seed_client, &w.az, &w.checker.container).await;
    w.assert_recovers("after Azurite restarted").await;
    assert_eq!(w.server.get("/readyz").await.status(), 200);
    w.logs.assert_no_secrets(None);
}

// ---- AMS mode: faults of the fake ARM ----

struct ArmWorld {
    logs: Capture,
    entra: FakeEntra,
    arm: FakeArm,
    _az: Azurite,
    server: TestServer,
    checker: Checker,
    calls: Calls,
}

/// AMS mode: the fake Entra and ARM over HTTPS, Azurite (http, account key) behind the proxy.
async fn arm_world(upstream: &str) -> ArmWorld {
    let logs = support::logs::capture();
    let pki = tls::shared();
    let entra = FakeEntra::start_https(pki).await;
    let arm = FakeArm::start_https(pki).await;
    let az = Azurite::start_http().await;
    let proxy = FaultProxy::start(&az.blob_endpoint).await;
    let container = format!("asset-{ASSET_ID}");
    let blobs = seed(&reqwest::Client::new(), &az, &container).await;
    arm.add_asset(
        FakeAsset::new(
            "ClimbingMountAdams",
            uuid::Uuid::parse_str(ASSET_ID).unwrap(),
        )
        .alternate_id("CLIMB00002"),
    );
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[source]
kind = "ams"
subscription_id = "{sub}"
resource_group = "{rg}"
account_name = "{account}"
arm_endpoint = "{arm_url}"
[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
auth = "account-key"
account_key = "{KEY}"
page_size = {PAGE_SIZE}
[links]
mode = "account-key-sas"
allow_http = true
[auth]
allow_anonymous_signed_urls = true
[credential]
kind = "client-secret"
tenant_id = "{tenant}"
client_id = "{client_id}"
client_secret = "{secret}"
authority_host = "{authority}"
[upstream]
ca_file = "{ca}"
{upstream}
"#,
        sub = arm.subscription_id(),
        rg = arm.resource_group(),
        account = arm.account(),
        arm_url = arm.base_url(),
        endpoint = proxy.endpoint_template(),
        tenant = entra.tenant_id(),
        client_id = entra.client_id(),
        secret = entra.client_secret(),
        authority = entra.authority_host(),
        ca = pki.ca_pem.display(),
    );
    let server = TestServer::start(Settings::from_toml(&toml).expect("AMS settings")).await;
    ArmWorld {
        checker: Checker {
            client: reqwest::Client::new(),
            container,
            blobs,
            proxy: proxy.clone(),
        },
        calls: Calls::new(&proxy),
        logs,
        entra,
        arm,
        _az: az,
        server,
    }
}

const ARM_PATH: &str = "/assets/ClimbingMountAdams/thumbnails";

impl ArmWorld {
    async fn list(&self) -> (reqwest::Response, Duration) {
        let started = Instant::now();
        let response = self.server.get(ARM_PATH).await;
        (response, started.elapsed())
    }

    async fn invalidate(&self) {
        self.server
            .state
            .resolver
            .invalidate(&AssetId::parse("ClimbingMountAdams").unwrap())
            .await;
    }

    /// ARM `(Get, List)` hits so far.
    fn arm_hits(&self) -> (usize, usize) {
        (self.arm.hits(ArmOp::Get), self.arm.hits(ArmOp::List))
    }

    /// A fresh load answers (one ARM Get, one listing, one read), every URL loaded.
    async fn assert_recovers(&mut self, what: &str) {
        self.invalidate().await;
        let before = self.arm_hits();
        let (response, _) = self.list().await;
        let (get, list) = self.arm_hits();
        assert_eq!(
            (get - before.0, list - before.1),
            (1, 0),
            "{what}: one ARM Get"
        );
        self.calls
            .assert(PAGES, READS, &format!("{what}: one full load"));
        self.checker.assert_ok(response).await;
        self.calls.take();
        self.invalidate().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_delayed_past_the_timeout() {
    let mut w = arm_world("timeout = \"600ms\"\nmax_retries = 1\nretry_budget = \"3s\"").await;
    w.assert_recovers("at start").await;

    // Both tries outlast the per-try timeout: 504, no storage call.
    w.arm
        .push_faults(ArmOp::Get, RestFault::Delay(Duration::from_millis(1500)), 2);
    let before = w.arm_hits();
    let (response, took) = w.list().await;
    w.checker
        .assert_problem(response, 504, "upstream-timeout", Some("1"))
        .await;
    assert!(took >= Duration::from_millis(1200), "{took:?}");
    assert_eq!(w.arm_hits(), (before.0 + 2, before.1), "a try and a retry");
    w.calls.assert(0, 0, "no storage call");
    w.assert_recovers("after ARM timeouts").await;

    // One slow try: the retry answers.
    w.arm
        .push_fault(ArmOp::Get, RestFault::Delay(Duration::from_millis(1500)));
    let before = w.arm_hits();
    let (response, _) = w.list().await;
    assert_eq!(w.arm_hits(), (before.0 + 2, before.1));
    w.calls.assert(PAGES, READS, "one full load");
    w.checker.assert_ok(response).await;
    w.calls.take();
    w.assert_recovers("after one ARM timeout").await;
    w.logs.assert_no_secrets(Some(&w.entra));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_dropped_connections_bursts_and_broken_answers() {
    let mut w = arm_world("timeout = \"2s\"\nmax_retries = 1\nretry_budget = \"3s\"").await;
    w.assert_recovers("at start").await;

    // A dropped connection (HTTP/2: the stream is reset) is retried.
    w.arm.push_fault(ArmOp::Get, RestFault::DropConnection);
    let before = w.arm_hits();
    let (response, _) = w.list().await;
    assert_eq!(
        w.arm_hits(),
        (before.0 + 2, before.1),
        "the dropped try, the retry"
    );
    w.calls.assert(PAGES, READS, "one full load");
    w.checker.assert_ok(response).await;
    w.calls.take();

    // Dropped on every try: 503 upstream-unavailable after 1 + max_retries tries.
    w.invalidate().await;
    w.arm.push_faults(ArmOp::Get, RestFault::DropConnection, 2);
    let before = w.arm_hits();
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 503, "upstream-unavailable", Some("5"))
        .await;
    assert_eq!(w.arm_hits(), (before.0 + 2, before.1));
    w.calls.assert(0, 0, "no storage call");
    w.assert_recovers("after dropped connections").await;

    // A 500 burst within the retries: answered after 1 + burst tries.
    w.arm.push_fault(ArmOp::Get, RestFault::Status(500));
    let before = w.arm_hits();
    let (response, _) = w.list().await;
    assert_eq!(w.arm_hits(), (before.0 + 2, before.1));
    w.calls.take();
    w.checker.assert_ok(response).await;
    w.calls.take();
    w.invalidate().await;

    // Longer than the retries: 502 after 1 + max_retries tries.
    w.arm.push_faults(ArmOp::Get, RestFault::Status(500), 2);
    let before = w.arm_hits();
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 502, "upstream-error", None)
        .await;
    assert_eq!(w.arm_hits(), (before.0 + 2, before.1));
    w.calls.assert(0, 0, "no storage call");
    w.assert_recovers("after a 500 burst").await;

    // 429 with Retry-After within the budget: waited out, one retry.
    w.arm.push_fault(
        ArmOp::Get,
        RestFault::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let before = w.arm_hits();
    let (response, took) = w.list().await;
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert_eq!(w.arm_hits(), (before.0 + 2, before.1));
    w.calls.take();
    w.checker.assert_ok(response).await;
    w.calls.take();
    w.invalidate().await;

    // Malformed JSON: 502 at once, not cached.
    w.arm.push_fault(ArmOp::Get, RestFault::MalformedJson);
    let before = w.arm_hits();
    let (response, _) = w.list().await;
    w.checker
        .assert_problem(response, 502, "upstream-error", None)
        .await;
    assert_eq!(
        w.arm_hits(),
        (before.0 + 1, before.1),
        "a 200 is not retried"
    );
    w.calls.assert(0, 0, "no storage call");
    w.assert_recovers("after malformed JSON").await;

    // A looping nextLink (alternate-id lookup): 502 after Get, the page and its loop; not
    // cached, so the same id is looked up again (and now not found).
    w.arm.push_fault(ArmOp::List, RestFault::NextLinkLoop);
    let before = w.arm_hits();
    let (checked, _) = w
        .checker
        .check(w.server.get("/assets/CLIMB-LOOP/thumbnails").await)
        .await;
    assert_eq!(
        (checked.status, checked.body["code"].as_str()),
        (502, Some("upstream-error"))
    );
    assert_eq!(
        w.arm_hits(),
        (before.0 + 1, before.1 + 2),
        "Get 404, then two pages"
    );
    let before = w.arm_hits();
    let (checked, _) = w
        .checker
        .check(w.server.get("/assets/CLIMB-LOOP/thumbnails").await)
        .await;
    assert_eq!(
        (checked.status, checked.body["code"].as_str()),
        (404, Some("asset-not-found"))
    );
    assert_eq!(w.arm_hits(), (before.0 + 1, before.1 + 1));
    // The alternate id of the real asset, through the same lookup.
    let before = w.arm_hits();
    let body = w
        .checker
        .assert_ok(w.server.get("/assets/CLIMB00002/thumbnails").await)
        .await;
    assert_eq!(body["assetId"], "CLIMB00002");
    assert_eq!(w.arm_hits(), (before.0 + 1, before.1 + 1));
    w.calls.take();
    w.assert_recovers("after a looping nextLink").await;
    assert_eq!(
        w.arm.pending_faults(ArmOp::Get) + w.arm.pending_faults(ArmOp::List),
        0
    );
    w.logs.assert_no_secrets(Some(&w.entra));
}
