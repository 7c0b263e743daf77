//! Stale-while-revalidate and failures: past its freshness an entry is served (marked stale)
//! while one background refresh runs; a failing upstream keeps it up to `cache.max_stale`, and
//! never with URLs below `cache.min_validity`; nothing usable cached -> a clear 503.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ams_thumbnails::source::SourceError;
use futures::future::join_all;
use support::{TestServer, assert_problem, settings};

const PATH: &str = "/assets/builtin-preset/thumbnails";

fn is_stale(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("x-cache-status")
        .is_some_and(|v| v == "stale")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_served_while_one_refresh_runs() {
    let server =
        TestServer::start(settings("[cache]\nttl = \"300ms\"\nmax_stale = \"1m\"\n")).await;
    let first = server.get(PATH).await;
    assert!(!is_stale(&first));
    let etag = first.headers()["etag"].clone();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // The refresh is slow; stale answers do not wait for it.
    server.probe.set_delay(Duration::from_millis(600));
    let started = Instant::now();
    let responses = join_all((0..20).map(|_| server.get(PATH))).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    for r in &responses {
        assert_eq!(r.status(), 200);
        assert!(is_stale(r), "served stale");
        assert_eq!(r.headers()["etag"], etag);
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=0",
            "not for clients to keep"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        server.probe.locates.load(Ordering::SeqCst),
        2,
        "one refresh for 20 stale hits"
    );

    // Refreshed: fresh again, without another load.
    let fresh = server.get(PATH).await;
    assert!(!is_stale(&fresh));
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_keeps_stale_entries_up_to_max_stale() {
    let server = TestServer::start(settings(
        "[cache]\nttl = \"200ms\"\nmax_stale = \"1200ms\"\n",
    ))
    .await;
    assert_eq!(server.get(PATH).await.status(), 200);
    server
        .probe
        .fail_with(Some(SourceError::Unavailable { backend: "local" }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let r = server.get(PATH).await;
        assert_eq!(
            r.status(),
            200,
            "the upstream is down, the stale answer serves"
        );
        assert!(is_stale(&r));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past ttl + max_stale, nothing usable is cached: a clear 503 with Retry-After.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = server.get(PATH).await;
    assert_eq!(r.headers()["retry-after"], "5");
    assert_problem(r, 503, "upstream-unavailable").await;
    // Not cached as "not found"; recovers at once.
    server.probe.fail_with(None);
    let r = server.get(PATH).await;
    assert_eq!(r.status(), 200);
    assert!(!is_stale(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_serving_never_hands_out_urls_below_min_validity() {
    let server = TestServer::start(settings(
        "[cache]\nttl = \"200ms\"\nmax_stale = \"1h\"\nmin_validity = \"1s\"\n",
    ))
    .await;
    // URLs valid 1.8 s: with 1 s minimum validity the entry may live ~0.8 s, stale or not.
    server
        .probe
        .set_link_lifetime(Some(Duration::from_millis(1800)));
    assert_eq!(server.get(PATH).await.status(), 200);
    server
        .probe
        .fail_with(Some(SourceError::Unavailable { backend: "local" }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = server.get(PATH).await;
    assert_eq!(r.status(), 200);
    assert!(is_stale(&r));
    let body: serde_json::Value = r.json().await.unwrap();
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires - time::OffsetDateTime::now_utc() >= time::Duration::seconds(1));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_problem(server.get(PATH).await, 503, "upstream-unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_is_shed_fast_and_probes_still_answer() {
    let server = TestServer::start(settings(
        "[server]\nmax_concurrent_requests = 2\nmax_queued_requests = 2\nqueue_timeout = \"300ms\"\n",
    ))
    .await;
    server.probe.set_delay(Duration::from_millis(1500));
    let started = Instant::now();
    let slow = join_all((0..12).map(|_| async {
        let r = server.get(PATH).await;
        (
            r.status().as_u16(),
            r.headers().get("retry-after").cloned(),
            started.elapsed(),
        )
    }));
    let health = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.get("/healthz").await.status()
    };
    let (results, health) = tokio::join!(slow, health);
    assert_eq!(health, 200, "probes are never shed");
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(ok, 2, "{results:?}");
    assert_eq!(shed.len(), 10, "{results:?}");
    assert!(shed.iter().all(|r| r.1.as_ref().is_some_and(|v| v == "1")));
    // Eight were refused at once, two after waiting their queue time; none waited for the load.
    let fast = shed
        .iter()
        .filter(|r| r.2 < Duration::from_millis(250))
        .count();
    assert!(fast >= 8, "{shed:?}");
    assert!(
        shed.iter().all(|r| r.2 < Duration::from_millis(1200)),
        "{shed:?}"
    );
}

mod bounded_upstream {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use ams_thumbnails::asset_id::AssetId;
    use ams_thumbnails::source::{AssetLocation, Backend, Catalog, SourceError};
    use async_trait::async_trait;

    /// A catalog that takes 100 ms and records how many calls overlap.
    #[derive(Default)]
    struct SlowCatalog {
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    #[async_trait]
    impl Catalog for SlowCatalog {
        async fn locate(&self, _id: &AssetId) -> Result<AssetLocation, SourceError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Err(SourceError::NotFound)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_to_one_upstream_are_bounded() {
        let settings = super::settings("");
        let base = url::Url::parse("http://x.test").unwrap();
        let real = ams_thumbnails::server::compose::backend(&settings, &base, None)
            .unwrap()
            .backend;
        let slow = Arc::new(SlowCatalog::default());
        let backend = Backend {
            catalog: slow.clone(),
            ..real
        }
        .instrumented("test", "test", 3, Duration::ZERO);
        let calls = (0..12).map(|i| {
            let catalog = backend.catalog.clone();
            async move {
                catalog
                    .locate(&AssetId::parse(&format!("a{i}")).unwrap())
                    .await
            }
        });
        let started = std::time::Instant::now();
        futures::future::join_all(calls).await;
        assert_eq!(slow.max_in_flight.load(Ordering::SeqCst), 3);
        assert!(
            started.elapsed() >= Duration::from_millis(390),
            "four waves of three"
        );
    }
}
