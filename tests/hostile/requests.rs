//! Attacks with requests: slow bodies, wrong-key floods and batch amplification.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::service::{
    ATTACKER_KEY, KEY, Options, Service, keyed, known_asset_as, probe_as, raise_own_file_limit,
    serial,
};
use crate::{CONNECTION_FLOOD_BUDGET_MIB, PROBE_BOUND};

fn start(config: &str) -> Service {
    start_env(config, &[])
}

/// `env` for the `[server]` keys: the embedded default has that table already.
fn start_env(config: &str, env: &[(&str, &str)]) -> Service {
    Service::start_with(Options {
        env,
        nofile: None,
        config,
    })
}

/// A client whose connections come from 127.0.0.2: another machine, as far as per-address
/// limits can tell.
fn attacker() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_no_request_slot_and_are_cut_off() {
    let _serial = serial().await;
    raise_own_file_limit();
    // Few slots, so that 300 slow bodies would take them all if they held one.
    let service = start_env(
        &keyed(""),
        &[
            ("AMS_THUMBNAILS_SERVER__MAX_CONCURRENT_REQUESTS", "32"),
            ("AMS_THUMBNAILS_SERVER__MAX_QUEUED_REQUESTS", "32"),
        ],
    );
    let base = service.url("");
    known_asset_as(&base, PROBE_BOUND, Some(KEY)).await;
    let idle_rss = service.rss_mib();
    service.reset_peak();
    let started = Instant::now();
    let addr = service.addr.clone();
    let slow = futures::future::join_all((0..300).map(|_| {
        let addr = addr.clone();
        async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let body = format!("{{\"assetIds\": [\"{}\"]}}", "x".repeat(2000));
            let head = format!(
                "POST /assets:batchGet HTTP/1.1\r\nHost: x\r\nx-api-key: {ATTACKER_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            // ~200 bytes/s.
            for chunk in body.as_bytes().chunks(20) {
                if conn.write_all(chunk).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }
    }));
    let probe = probe_as(
        base.clone(),
        started + Duration::from_secs(3),
        Duration::from_millis(100),
        PROBE_BOUND,
        Some(KEY),
    );
    let (answers, slowest) = tokio::join!(slow, probe);
    assert!(slowest < PROBE_BOUND, "{slowest:?}");
    let cut = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408 ") && a.contains("body-timeout"))
        .count();
    assert_eq!(cut, 300, "every slow body is cut off with 408");
    assert!(started.elapsed() < Duration::from_secs(8));
    let grew = service.peak_rss_mib() - idle_rss;
    assert!(
        grew < CONNECTION_FLOOD_BUDGET_MIB,
        "slow bodies grew the service by {grew:.1} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_flood_is_cut_off_after_the_burst() {
    let _serial = serial().await;
    let service = start(&keyed(""));
    let base = service.url("");
    known_asset_as(&base, PROBE_BOUND, Some(KEY)).await;
    let client = attacker();
    let url = format!("{base}/assets/builtin-preset/thumbnails");
    let started = Instant::now();
    let flood = async {
        let mut statuses = std::collections::BTreeMap::new();
        for i in 0..300 {
            let answer = client
                .get(&url)
                .header("x-api-key", format!("guess-{i}"))
                .send()
                .await
                .unwrap();
            *statuses.entry(answer.status().as_u16()).or_insert(0) += 1;
        }
        statuses
    };
    let probe = probe_as(
        base.clone(),
        started + Duration::from_millis(500),
        Duration::from_millis(50),
        PROBE_BOUND,
        Some(KEY),
    );
    let (statuses, slowest) = tokio::join!(flood, probe);
    assert!(slowest < PROBE_BOUND, "{slowest:?}");
    // The default: 20 failures are heard, then the address waits.
    assert_eq!(statuses.get(&401), Some(&20), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&280), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_charged_per_id() {
    let _serial = serial().await;
    let service = start(&keyed(
        "[rate_limit]\nrequests_per_second = 50\nburst = 100\n",
    ));
    let base = service.url("");
    known_asset_as(&base, PROBE_BOUND, Some(KEY)).await;
    let client = attacker();
    let started = Instant::now();
    // Batches of 100 distinct unknown ids as fast as they are answered, for 2 s.
    let flood = async {
        let (mut ok, mut limited, mut n) = (0, 0, 0);
        while started.elapsed() < Duration::from_secs(2) {
            let ids: Vec<String> = (0..100).map(|i| format!("amplified-{n}-{i}")).collect();
            n += 1;
            let answer = client
                .post(format!("{base}/assets:batchGet"))
                .header("x-api-key", ATTACKER_KEY)
                .json(&serde_json::json!({ "assetIds": ids }))
                .send()
                .await
                .unwrap();
            match answer.status().as_u16() {
                200 => ok += 1,
                429 => limited += 1,
                other => panic!("batch answered {other}"),
            }
        }
        (ok, limited)
    };
    let probe = probe_as(
        base.clone(),
        started + Duration::from_secs(2),
        Duration::from_millis(100),
        PROBE_BOUND,
        Some(KEY),
    );
    let ((ok, limited), slowest) = tokio::join!(flood, probe);
    assert!(slowest < PROBE_BOUND, "{slowest:?}");
    // 100 at once, then 50 ids a second: 2 batches in 2 s (3 at a boundary).
    assert!(
        (1..=3).contains(&ok),
        "{ok} batches of 100 ids answered in 2 s"
    );
    assert!(limited > 0);
}
