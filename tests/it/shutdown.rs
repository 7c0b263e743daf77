//! Graceful shutdown: in-flight requests complete, new connections are refused, and the grace
//! period bounds the wait.

use crate::support;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_under_load_completes_every_accepted_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    let mut server = TestServer::start(settings(
        "[server]\nshutdown_grace = \"5s\"\n[cache]\nttl = \"50ms\"\nmax_stale = \"0s\"\n",
    ))
    .await;
    // Every load takes 150 ms and entries expire fast: loads are always in flight.
    server.probe.set_delay(Duration::from_millis(150));
    let stop = Arc::new(AtomicBool::new(false));
    let shutdown_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..16 {
        let (stop, ok, refused, shutdown_at) = (
            stop.clone(),
            ok.clone(),
            refused.clone(),
            shutdown_at.clone(),
        );
        let url = server.url(&format!(
            "/assets/{}/thumbnails",
            [
                "builtin-preset",
                "multi-rendition",
                "sprite-storyboard",
                "virtual-folders"
            ][w % 4]
        ));
        workers.push(tokio::spawn(async move {
            // A fresh connection per request, so that new connections meet the shutdown.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) => {
                        assert_eq!(r.status(), 200, "an answered request failed");
                        r.bytes().await.expect("the whole body arrives");
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        // Requests under way before the shutdown were accepted: they must all
                        // complete. Later ones may only fail to connect (or, for a connection
                        // caught in the kernel's accept queue at that instant, be closed).
                        let before = shutdown_at
                            .get()
                            .is_none_or(|at| sent + Duration::from_millis(20) < *at);
                        assert!(!before, "a request accepted before shutdown failed: {e}");
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    shutdown_at.set(started).unwrap();
    server.trigger_shutdown();
    server.join().await.unwrap();
    let drained_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("every accepted request completed");
    }
    assert!(ok.load(Ordering::SeqCst) > 8, "the load ran");
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "later connections were refused"
    );
    assert!(
        drained_in < Duration::from_secs(5),
        "exit within the grace period: {drained_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_close_at_once_and_requests_in_progress_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = TestServer::start(settings("")).await;
    server.probe.set_delay(Duration::from_millis(800));
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let client = server.client.clone();
    let url = server.url("/assets/builtin-preset/thumbnails");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    server.trigger_shutdown();
    let mut buf = [0u8; 64];
    for conn in [&mut idle, &mut half] {
        let read = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf))
            .await
            .expect("closed at once, not after the grace");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(started.elapsed() < Duration::from_millis(400));
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in progress finishes");
    assert_eq!(response.status(), 200);
    server.join().await.unwrap();
}
