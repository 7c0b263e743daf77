//! Graceful shutdown: in-flight requests complete, new connections are refused, and the grace
//! period bounds the wait.

mod support;

use std::time::{Duration, Instant};

use support::{TestServer, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_complete_and_new_connections_are_refused() {
    let mut server = TestServer::start(settings("")).await;
    server.probe.set_delay(Duration::from_millis(600));
    let client = server.client.clone();
    let url = server.url("/assets/builtin-preset/thumbnails");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The listener is closed: a fresh connection is refused.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(server.url("/healthz"))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "new connections are refused during shutdown"
    );
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Thumbnail000001.jpg")
    );
    server.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_wait() {
    let mut server = TestServer::start(settings("[server]\nshutdown_grace = \"300ms\"\n")).await;
    server.probe.set_delay(Duration::from_secs(20));
    let client = server.client.clone();
    let url = server.url("/assets/builtin-preset/thumbnails");
    let _stuck = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.trigger_shutdown();
    server.join().await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}
