//! Attacks on connections: slowloris, idle connections past the open-file limit, header
//! floods, method floods, and what shutdown does with them.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::service::{
    KNOWN, Options, Service, known_asset, probe_until, raise_own_file_limit, serial,
};
use crate::{
    CONNECTION_FLOOD_BUDGET_MIB, HEADER_FLOOD_BUDGET_MIB, ODD_REQUEST_BUDGET_MIB, PROBE_BOUND,
};

/// Opens `n` connections, tolerating refusals (counted).
async fn open(addr: &str, n: usize) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::with_capacity(n);
    let mut refused = 0;
    for _ in 0..n {
        match TcpStream::connect(addr).await {
            Ok(s) => open.push(s),
            Err(_) => refused += 1,
        }
    }
    (open, refused)
}

/// Whether the peer has closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_off_at_the_header_timeout() {
    let _serial = serial().await;
    raise_own_file_limit();
    let service = Service::start(&[("AMS_THUMBNAILS_SERVER__HEADER_READ_TIMEOUT", "2s")]);
    let base = service.url("");
    known_asset(&base, PROBE_BOUND).await;
    let idle_rss = service.rss_mib();
    service.reset_peak();
    // 300 connections, each sending one more header byte every 500 ms: never a whole head.
    let (mut conns, refused) = open(&service.addr, 300).await;
    assert_eq!(refused, 0);
    let started = Instant::now();
    let dribble = async {
        let line =
            b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in line.iter().take(10) {
            for c in conns.iter_mut() {
                let _ = c.write_all(&[*byte]).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        conns
    };
    let probe = probe_until(
        base.clone(),
        started + Duration::from_secs(4),
        Duration::from_millis(200),
        PROBE_BOUND,
    );
    let (mut conns, slowest) = tokio::join!(dribble, probe);
    assert!(slowest < PROBE_BOUND, "{slowest:?}");
    let grew = service.peak_rss_mib() - idle_rss;
    assert!(
        grew < CONNECTION_FLOOD_BUDGET_MIB,
        "slowloris grew the service by {grew:.1} MiB"
    );
    // By 2 s after the first byte (plus slack), every one is closed.
    let mut open_after = 0;
    for c in conns.iter_mut() {
        if !closed_within(c, Duration::from_millis(200)).await {
            open_after += 1;
        }
    }
    assert_eq!(
        open_after,
        0,
        "{open_after} slowloris connections still open after {:?}",
        started.elapsed()
    );
    assert!(
        service
            .counter("http_connections_closed_total{reason=\"header_timeout\"}")
            .await
            >= 300.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_file_limit_keep_nobody_out() {
    let _serial = serial().await;
    raise_own_file_limit();
    // Started with 1,024 descriptors and no way to raise them: the cap is 1,024 - 256.
    let service = Service::start_with(Options {
        env: &[
            ("AMS_THUMBNAILS_SERVER__IDLE_TIMEOUT", "3s"),
            ("AMS_THUMBNAILS_SERVER__HEADER_READ_TIMEOUT", "2s"),
        ],
        nofile: Some((1024, 1024)),
        config: "",
    });
    let base = service.url("");
    known_asset(&base, PROBE_BOUND).await;
    let idle_rss = service.rss_mib();
    // 1,100 connections that send nothing, one with half a head.
    let (mut conns, _refused) = open(&service.addr, 1100).await;
    let mut half = TcpStream::connect(&service.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Health and the known asset still answer, on fresh connections, while they are open.
    for _ in 0..10 {
        known_asset(&base, PROBE_BOUND).await;
        let health = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(PROBE_BOUND)
            .build()
            .unwrap()
            .get(service.url("/healthz"))
            .send()
            .await
            .expect("/healthz answers");
        assert_eq!(health.status(), 200);
    }
    assert!(
        service
            .counter("http_connections_closed_total{reason=\"evicted\"}")
            .await
            >= 1.0
    );
    assert!(
        service.rss_mib() - idle_rss < CONNECTION_FLOOD_BUDGET_MIB,
        "idle connections cost {} MiB",
        service.rss_mib() - idle_rss
    );
    // And after the idle timeout, none of them is left open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut open_after = 0;
    for c in conns.iter_mut().chain(std::iter::once(&mut half)) {
        if !closed_within(c, Duration::from_millis(100)).await {
            open_after += 1;
        }
    }
    assert_eq!(open_after, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_file_limit_is_raised_to_the_hard_limit() {
    let _serial = serial().await;
    let service = Service::start_with(Options {
        env: &[],
        nofile: Some((512, 4096)),
        config: "",
    });
    assert_eq!(service.open_file_limit(), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_cost_at_most_the_head_buffer() {
    let _serial = serial().await;
    raise_own_file_limit();
    let service = Service::start(&[]);
    let base = service.url("");
    known_asset(&base, PROBE_BOUND).await;
    let idle_rss = service.rss_mib();
    service.reset_peak();
    // 1,000 connections, each sending ~384 KB of header lines and never ending the head.
    let (conns, refused) = open(&service.addr, 1000).await;
    assert_eq!(refused, 0);
    let started = Instant::now();
    let line = format!("X-Flood: {}\r\n", "f".repeat(1000));
    let flood = futures::future::join_all(conns.into_iter().map(|mut c| {
        let line = line.clone();
        async move {
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
            for _ in 0..384 {
                if c.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer)).await;
            answer
        }
    }));
    let probe = probe_until(
        base.clone(),
        started + Duration::from_secs(2),
        Duration::from_millis(100),
        PROBE_BOUND,
    );
    let (answers, slowest) = tokio::join!(flood, probe);
    assert!(slowest < PROBE_BOUND, "{slowest:?}");
    let problems = answers
        .iter()
        .filter(|a| {
            let text = String::from_utf8_lossy(a);
            text.starts_with("HTTP/1.1 431") && text.contains("application/problem+json")
        })
        .count();
    // Most get the problem; a few may see the reset before reading it.
    assert!(problems >= 900, "{problems} of 1000 got a 431 problem");
    let grew = service.peak_rss_mib() - idle_rss;
    assert!(
        grew < HEADER_FLOOD_BUDGET_MIB,
        "a header flood grew the service by {grew:.1} MiB (budget {HEADER_FLOOD_BUDGET_MIB} MiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_and_path_floods_add_no_series() {
    let _serial = serial().await;
    let service = Service::start(&[]);
    let base = service.url("");
    known_asset(&base, PROBE_BOUND).await;
    let series = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            // The scrape's own series appear as it is scraped.
            .filter(|l| !l.starts_with('#') && !l.contains("route=\"/metrics\""))
            .filter_map(|l| Some(l.rsplit_once(' ')?.0.to_owned()))
            .collect()
    };
    let client = reqwest::Client::new();
    // One of each first: the series they record appear on first use.
    let odd = reqwest::Method::from_bytes(b"WARMUP").unwrap();
    client
        .request(odd, format!("{base}{KNOWN}"))
        .send()
        .await
        .unwrap();
    client
        .get(format!("{base}/no/such/path"))
        .send()
        .await
        .unwrap();
    let before = series(&service.metrics().await);
    let idle_rss = service.rss_mib();
    for i in 0..5_000u32 {
        let method = reqwest::Method::from_bytes(format!("M{i:X}Q").as_bytes()).unwrap();
        let _ = client
            .request(method, format!("{base}{KNOWN}"))
            .send()
            .await
            .unwrap();
        let _ = client
            .get(format!("{base}/no/such/path/{i}"))
            .send()
            .await
            .unwrap();
    }
    let after = series(&service.metrics().await);
    let new: Vec<_> = after.difference(&before).collect();
    assert!(
        new.is_empty(),
        "new series after 10,000 odd requests: {new:#?}"
    );
    let grew = service.rss_mib() - idle_rss;
    assert!(
        grew < ODD_REQUEST_BUDGET_MIB,
        "odd requests grew the service by {grew:.1} MiB"
    );
    known_asset(&base, PROBE_BOUND).await;
}
