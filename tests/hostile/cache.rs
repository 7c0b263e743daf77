//! Attacks on the cache: a flood of unknown ids, each a negative entry.

use std::time::{Duration, Instant};

use crate::service::{Service, known_asset, serial};
use crate::{NEGATIVE_FLOOD_BUDGET_MIB, NEGATIVE_FLOOD_RETURNED_MIB, PROBE_BOUND};

/// `cache_bytes` and `cache_entries` as the service reports them.
async fn cache_gauges(service: &Service) -> (f64, f64) {
    let metrics = service.metrics().await;
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("ams_thumbnails_")?
                    .strip_prefix(name)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    (gauge("cache_bytes"), gauge("cache_entries"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_entry_flood_is_weighed_bounded_and_handed_back() {
    let _serial = serial().await;
    let service = Service::start(&[("AMS_THUMBNAILS_CACHE__NOT_FOUND_TTL", "20s")]);
    let base = service.url("");
    known_asset(&base, PROBE_BOUND).await;
    let idle_rss = service.rss_mib();
    service.reset_peak();
    // 50,000 unknown ids, in batches of 100, four at a time.
    let client = reqwest::Client::new();
    let batches: Vec<Vec<String>> = (0..500)
        .map(|b| (0..100).map(|i| format!("unknown-{b:03}-{i:03}")).collect())
        .collect();
    let started = Instant::now();
    for four in batches.chunks(4) {
        let requests = four.iter().map(|ids| {
            client
                .post(format!("{base}/assets:batchGet"))
                .json(&serde_json::json!({ "assetIds": ids }))
                .send()
        });
        for answer in futures::future::join_all(requests).await {
            assert_eq!(answer.unwrap().status(), 200);
        }
    }
    let flood = started.elapsed();
    let flooded = Instant::now();
    assert!(
        flood < Duration::from_secs(18),
        "the flood took {flood:?}: entries would expire"
    );
    known_asset(&base, PROBE_BOUND).await;
    let (bytes, entries) = cache_gauges(&service).await;
    let grew = service.rss_mib() - idle_rss;
    assert!(entries >= 49_000.0, "{entries} entries");
    // The weigher counts what an entry really costs: within 1.5x of the growth either way.
    let weighed = bytes / (1024.0 * 1024.0);
    assert!(
        weighed * 1.5 >= grew && weighed <= grew * 1.5,
        "the cache weighs {weighed:.1} MiB for 50,000 negative entries; RSS grew {grew:.1} MiB"
    );
    let peak = service.peak_rss_mib() - idle_rss;
    assert!(
        peak < NEGATIVE_FLOOD_BUDGET_MIB,
        "peak {peak:.1} MiB above idle (budget {NEGATIVE_FLOOD_BUDGET_MIB} MiB)"
    );
    // Once they expire (and the cache's maintenance ran, at a scrape), the memory goes back:
    // jemalloc's background threads return freed pages within about 10 s.
    tokio::time::sleep(
        Duration::from_secs(20).saturating_sub(flooded.elapsed()) + Duration::from_secs(1),
    )
    .await;
    let (_, entries) = cache_gauges(&service).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (bytes, _) = cache_gauges(&service).await;
    assert!(
        entries < 1_000.0 && bytes < 1e6,
        "{entries} entries, {bytes} bytes left"
    );
    let returned_by = Instant::now() + Duration::from_secs(20);
    let left = loop {
        let left = service.rss_mib() - idle_rss;
        if left < NEGATIVE_FLOOD_RETURNED_MIB || Instant::now() > returned_by {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        left < NEGATIVE_FLOOD_RETURNED_MIB,
        "{left:.1} MiB above idle 20 s after the entries expired (grew {grew:.1} MiB)"
    );
}
