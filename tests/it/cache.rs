//! Cache semantics: single flight, hits without backend calls or serialization, negative
//! caching, failures never cached, per-entry expiry, and a byte-bounded capacity.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ams_thumbnails::asset_id::AssetId;
use ams_thumbnails::source::SourceError;
use axum::body::Body;
use axum::http::Request;
use futures::future::join_all;
use futures::{StreamExt, stream};
use http_body_util::BodyExt;
use support::{TestServer, app_with_probe, assert_problem, settings};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests_cause_one_backend_load() {
    let (app, state, probe) = app_with_probe(settings(""));
    // Keep the first load in flight long enough for every request to arrive and wait on it.
    probe.set_delay(Duration::from_millis(300));
    let requests = (0..1000).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            let response = app
                .oneshot(
                    Request::get("/assets/multi-rendition/thumbnails")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        })
    });
    let results = join_all(requests).await;
    let first = results[0].as_ref().unwrap().1.clone();
    for r in &results {
        let (status, body) = r.as_ref().unwrap();
        assert_eq!(*status, 200);
        assert_eq!(*body, first, "every caller gets the same answer");
    }
    assert_eq!(
        probe.locates.load(Ordering::SeqCst),
        1,
        "one catalog lookup"
    );
    assert_eq!(probe.lists.load(Ordering::SeqCst), 1, "one listing");
    assert_eq!(probe.links.load(Ordering::SeqCst), 1, "one linking");
    assert_eq!(state.resolver.stats().loads, 1);
    assert_eq!(state.resolver.stats().renders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_over_the_network_share_one_load() {
    let server = TestServer::start(settings("")).await;
    server.probe.set_delay(Duration::from_millis(300));
    let requests = (0..200).map(|_| server.get("/assets/sprite-storyboard/thumbnails"));
    for response in join_all(requests).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 1);
    assert_eq!(server.probe.lists.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.probe.reads.load(Ordering::SeqCst),
        1,
        "the VTT, once"
    );
}

#[tokio::test]
async fn a_hit_makes_no_backend_call_and_no_serialization() {
    let (app, state, probe) = app_with_probe(settings(""));
    let get = || {
        app.clone().oneshot(
            Request::get("/assets/builtin-preset/thumbnails")
                .body(Body::empty())
                .unwrap(),
        )
    };
    let first = get().await.unwrap();
    assert_eq!(first.status(), 200);
    let first = first.into_body().collect().await.unwrap().to_bytes();
    let calls = probe.calls();
    assert_eq!(calls, 3, "locate + list + link");
    let before = state.resolver.stats();
    for _ in 0..50 {
        let response = get().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            first
        );
    }
    let after = state.resolver.stats();
    assert_eq!(probe.calls(), calls, "no backend call on a hit");
    assert_eq!(after.hits - before.hits, 50);
    assert_eq!(after.loads, before.loads);
    assert_eq!(after.renders, before.renders, "no serialization on a hit");

    // The body handed out is the very buffer rendered at load time.
    let id = AssetId::parse("builtin-preset").unwrap();
    let a = state.resolver.resolve(&id).await.unwrap();
    let b = state.resolver.resolve(&id).await.unwrap();
    assert!(Arc::ptr_eq(&a.resolved, &b.resolved));
    assert!(!a.stale);
    assert_eq!(a.body().as_ptr(), b.body().as_ptr());
}

#[tokio::test]
async fn not_found_is_cached_briefly() {
    let server = TestServer::start(settings("[cache]\nnot_found_ttl = \"300ms\"\n")).await;
    for _ in 0..5 {
        assert_problem(
            server.get("/assets/ghost/thumbnails").await,
            404,
            "asset-not-found",
        )
        .await;
    }
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_problem(
        server.get("/assets/ghost/thumbnails").await,
        404,
        "asset-not-found",
    )
    .await;
    assert_eq!(
        server.probe.locates.load(Ordering::SeqCst),
        2,
        "expired, asked again"
    );
}

#[tokio::test]
async fn failures_are_never_cached_nor_confused_with_not_found() {
    let server = TestServer::start(settings("")).await;
    let path = "/assets/builtin-preset/thumbnails";
    server.probe.fail_with(Some(SourceError::Upstream {
        backend: "local",
        message: "disk on fire at /secret/path".into(),
    }));
    let body = assert_problem(server.get(path).await, 502, "upstream-error").await;
    assert!(
        !body.to_string().contains("/secret/path"),
        "no internals leak: {body}"
    );
    assert_problem(server.get(path).await, 502, "upstream-error").await;
    assert_eq!(
        server.probe.locates.load(Ordering::SeqCst),
        2,
        "failure not cached"
    );

    server.probe.fail_with(Some(SourceError::Throttled {
        backend: "local",
        retry_after: Some(Duration::from_millis(2500)),
    }));
    let response = server.get(path).await;
    assert_eq!(response.headers()["retry-after"], "3");
    assert_problem(response, 503, "upstream-unavailable").await;

    server
        .probe
        .fail_with(Some(SourceError::Timeout { backend: "local" }));
    assert_problem(server.get(path).await, 504, "upstream-timeout").await;

    server.probe.fail_with(Some(SourceError::Misconfigured {
        backend: "local",
        message: "key=SECRET".into(),
    }));
    let body = assert_problem(server.get(path).await, 503, "upstream-unavailable").await;
    assert!(!body.to_string().contains("SECRET"));

    server.probe.fail_with(None);
    assert_eq!(server.get(path).await.status(), 200, "recovers at once");
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let server = TestServer::start(settings("[cache]\nttl = \"300ms\"\n")).await;
    let path = "/assets/builtin-preset/thumbnails";
    assert_eq!(server.get(path).await.status(), 200);
    assert_eq!(server.get(path).await.status(), 200);
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(server.get(path).await.status(), 200);
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn entries_leave_before_their_urls_drop_below_min_validity() {
    let server =
        TestServer::start(settings("[cache]\nttl = \"10m\"\nmin_validity = \"1s\"\n")).await;
    // URLs valid for 1.6 s with 1 s minimum validity: the entry may be served ~0.6 s.
    server
        .probe
        .set_link_lifetime(Some(Duration::from_millis(1600)));
    let path = "/assets/builtin-preset/thumbnails";
    let body: serde_json::Value = server.get(path).await.json().await.unwrap();
    let expires_at = body["expiresAt"]
        .as_str()
        .expect("expiresAt when URLs expire");
    assert!(
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    let redirect = server.get("/assets/builtin-preset/thumbnails/1").await;
    let cache_control = redirect.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache_control.starts_with("private, max-age="),
        "{cache_control}"
    );
    let max_age: u64 = cache_control.rsplit('=').next().unwrap().parse().unwrap();
    assert!(
        max_age <= 1,
        "redirect cacheable no longer than the entry: {cache_control}"
    );
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(server.get(path).await.status(), 200);
    assert_eq!(
        server.probe.locates.load(Ordering::SeqCst),
        2,
        "reloaded before the URLs got too close to expiry"
    );

    // URLs that expire within min_validity are never cached.
    server
        .probe
        .set_link_lifetime(Some(Duration::from_millis(500)));
    let other = "/assets/multi-rendition/thumbnails";
    assert_eq!(server.get(other).await.status(), 200);
    assert_eq!(server.get(other).await.status(), 200);
    assert_eq!(server.probe.lists.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn capacity_is_bounded_in_bytes() {
    // 300 assets of 20 thumbnails each, in a cache of 64 KiB.
    let dir = tempfile::tempdir().unwrap();
    let jpeg =
        std::fs::read(support::samples_dir().join("builtin-preset/Thumbnail000001.jpg")).unwrap();
    for a in 0..300 {
        let asset = dir.path().join(format!("asset-{a}"));
        std::fs::create_dir(&asset).unwrap();
        for i in 1..=20 {
            std::fs::write(asset.join(format!("Thumbnail{i:06}.jpg")), &jpeg).unwrap();
        }
    }
    let max_bytes = 64 * 1024;
    let (app, state, _probe) = app_with_probe(support::settings_for_root(
        dir.path(),
        &format!("[cache]\nmax_bytes = {max_bytes}\n"),
    ));
    let mut body_bytes = 0;
    for a in 0..300 {
        let response = app
            .clone()
            .oneshot(
                Request::get(format!("/assets/asset-{a}/thumbnails"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        body_bytes += response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len();
    }
    let weighted = state.resolver.weighted_size().await;
    let entries = state.resolver.entry_count().await;
    assert!(body_bytes > 10 * max_bytes, "the test overfills the cache");
    assert!(weighted <= max_bytes as u64, "{weighted} > {max_bytes}");
    assert!(entries > 0 && entries < 300, "{entries} entries kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_ids_stays_within_the_memory_budget() {
    let max_bytes = 32 * 1024;
    let (app, state, probe) =
        app_with_probe(settings(&format!("[cache]\nmax_bytes = {max_bytes}\n")));
    let requests = (0..5000).map(|i| {
        let app = app.clone();
        async move {
            app.oneshot(
                Request::get(format!(
                    "/assets/flood-{i:05}-{}/thumbnails",
                    "x".repeat(200)
                ))
                .body(Body::empty())
                .unwrap(),
            )
            .await
            .unwrap()
            .status()
        }
    });
    let statuses = stream::iter(requests)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    assert!(statuses.iter().all(|s| *s == 404));
    assert_eq!(probe.locates.load(Ordering::SeqCst), 5000);
    // Negative entries weigh too: the cache holds at most its budget, not 5,000 entries.
    let weighted = state.resolver.weighted_size().await;
    let entries = state.resolver.entry_count().await;
    assert!(weighted <= max_bytes as u64, "{weighted} > {max_bytes}");
    assert!(entries < 5000 && entries > 0, "{entries}");
}

/// An invalidation while a load is in flight (after its listing): the load is done again, so
/// what it read before the change is not what stays cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_load_is_not_undone_by_it() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("changing");
    std::fs::create_dir(&folder).unwrap();
    let jpeg = support::samples_dir().join("sprite-storyboard/Thumbnail000001.jpg");
    std::fs::copy(&jpeg, folder.join("Thumbnail000001.jpg")).unwrap();
    // sha256("test-admin-key")
    let server = TestServer::start(support::settings_for_root(
        root.path(),
        "[auth]\napi_keys = [{ name = \"ops\", sha256 = \"944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9\", roles = [\"admin\"] }]\n",
    ))
    .await;
    server.probe.set_link_delay(Duration::from_millis(400));
    let count = |body: serde_json::Value| body["thumbnails"].as_array().unwrap().len();
    let in_flight = {
        let (client, url) = (
            server.client.clone(),
            server.url("/assets/changing/thumbnails"),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap().json().await.unwrap() })
    };
    // Listed (one thumbnail), now signing: a second thumbnail appears and the asset is
    // invalidated.
    while server.probe.links.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::copy(&jpeg, folder.join("Thumbnail000002.jpg")).unwrap();
    let response = server
        .client
        .delete(server.url("/assets/changing/cache"))
        .header("x-api-key", "test-admin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    server.probe.set_link_delay(Duration::ZERO);
    assert_eq!(
        count(in_flight.await.unwrap()),
        2,
        "the load was done again"
    );
    let cached: serde_json::Value = server
        .get("/assets/changing/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        count(cached),
        2,
        "and the fresh answer is what stays cached"
    );
    assert_eq!(server.probe.lists.load(Ordering::SeqCst), 2);
}
