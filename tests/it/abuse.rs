//! Limits that count what costs: failed authentications per client address, a batch weighed
//! by its distinct ids, and request bodies read before a request takes a slot, under their own
//! deadline and minimum rate. (The floods themselves are in `tests/hostile`.)

use crate::support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use support::{TestServer, assert_problem, settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "abuse-test-key-0123456789";

fn keyed(extra: &str) -> ams_thumbnails::Settings {
    let sha = crate::security::sha256(KEY);
    settings(&format!(
        "[auth]\napi = \"api-key\"\napi_keys = [{{ name = \"frontend\", sha256 = \"{sha}\", \
         roles = [\"api\"] }}]\n{extra}"
    ))
}

/// A client whose connections come from `source` (any 127.x address is loopback on Linux).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn failed_authentications_block_their_address_before_any_key_is_checked() {
    let server = TestServer::start(keyed(
        "[rate_limit]\nauth_failures_per_minute = 6\nauth_failure_burst = 5\n",
    ))
    .await;
    let url = server.url("/assets/builtin-preset/thumbnails");
    let attacker = client_from("127.0.0.2");
    for i in 0..5 {
        let answer = attacker
            .get(&url)
            .header("x-api-key", format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "within the burst, guess {i}");
    }
    let blocked = attacker
        .get(&url)
        .header("x-api-key", "guess-6")
        .send()
        .await
        .unwrap();
    let retry: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_problem(blocked, 429, "rate-limited").await;
    // Even the right key: the address is not heard until its allowance is back.
    let right = attacker.get(&url).header("x-api-key", KEY).send().await;
    assert_eq!(right.unwrap().status(), 429);
    // Without a key too (an anonymous 401 would count as well).
    assert_eq!(attacker.get(&url).send().await.unwrap().status(), 429);
    // Public routes stay open to it; other addresses are not affected.
    let health = attacker.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let other = client_from("127.0.0.3");
    let answer = other.get(&url).header("x-api-key", KEY).send().await;
    assert_eq!(answer.unwrap().status(), 200);
}

#[tokio::test]
async fn a_batch_costs_one_request_per_distinct_id() {
    let server = TestServer::start(keyed(
        "[rate_limit]\nrequests_per_second = 0.1\nburst = 100\n",
    ))
    .await;
    let batch = |n: usize| {
        // Each id twice: duplicates count once.
        let ids: Vec<String> = (0..2 * n).map(|i| format!("id-{}", i % n)).collect();
        server
            .client
            .post(server.url("/assets:batchGet"))
            .header("x-api-key", KEY)
            .json(&serde_json::json!({ "assetIds": ids }))
            .send()
    };
    // 60 distinct ids: 60 of the 100.
    assert_eq!(batch(60).await.unwrap().status(), 200);
    // 60 more do not fit into the 40 left.
    let refused = batch(60).await.unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 429, "rate-limited").await;
    // What is left is still there for single requests.
    let single = server
        .client
        .get(server.url("/assets/builtin-preset/thumbnails"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
}

#[tokio::test]
async fn a_slow_body_is_cut_off_and_holds_no_request_slot() {
    let server = TestServer::start(settings(
        "[server]\nmax_concurrent_requests = 1\nmax_queued_requests = 0\nbody_min_rate = 1024\n",
    ))
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let body = serde_json::json!({ "assetIds": ["builtin-preset", "multi-rendition"] }).to_string();
    let slow = tokio::spawn(async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /assets:batchGet HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len() + 10_000
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        // 20 bytes every 100 ms: 200 bytes/s.
        for chunk in body.as_bytes().chunks(20).cycle().take(100) {
            if conn.write_all(chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    });
    // The only slot is free for others while the body dribbles in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let started = Instant::now();
        let answer = server
            .client
            .get(server.url("/assets/builtin-preset/thumbnails"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    let (answer, took) = slow.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("\"code\":\"body-timeout\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(3), "cut off after {took:?}");
}

#[tokio::test]
async fn a_body_gets_at_most_the_body_deadline() {
    let server = TestServer::start(settings(
        "[server]\nbody_read_timeout = \"500ms\"\nbody_min_rate = 0\n",
    ))
    .await;
    let mut conn = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    conn.write_all(
        b"POST /assets:batchGet HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"assetIds\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
}
