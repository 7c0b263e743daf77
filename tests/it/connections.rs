//! The connection layer: hyper's own refusals as problem+json, and the header and idle
//! timeouts (the floods themselves are in `tests/hostile`).

use crate::support;

use std::time::{Duration, Instant};

use support::{TestServer, settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(server: &TestServer, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    conn.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

fn problem(answer: &str) -> serde_json::Value {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_problems() {
    let server = TestServer::start(settings("")).await;
    let answer = raw(&server, b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(problem(&answer)["code"], "malformed-request");

    let mut head = b"GET /healthz HTTP/1.1\r\n".to_vec();
    for i in 0..120 {
        head.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let answer = raw(&server, &head).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_eq!(problem(&answer)["code"], "headers-too-large");

    // A good request on a kept-alive connection, then a bad one: the good answer is untouched.
    let answer = raw(
        &server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let second = &answer[answer.find("HTTP/1.1 400").expect("then the 400")..];
    assert_eq!(problem(second)["code"], "malformed-request");
}

async fn closed_after(server: &TestServer, send: &[u8]) -> Duration {
    let mut conn = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = Instant::now();
    conn.write_all(send).await.unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("closed by the service")
        {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn idle_and_slow_heads_are_closed_on_time() {
    let server = TestServer::start(settings(
        "[server]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"700ms\"\n",
    ))
    .await;
    let idle = closed_after(&server, b"").await;
    assert!(
        idle >= Duration::from_millis(650) && idle < Duration::from_millis(1500),
        "{idle:?}"
    );
    let half = closed_after(&server, b"GET /healthz HTTP/1.1\r\n").await;
    assert!(
        half >= Duration::from_millis(250) && half < Duration::from_millis(1000),
        "{half:?}"
    );
    // After an answer, the idle timeout starts again.
    let kept = closed_after(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(kept >= Duration::from_millis(650), "{kept:?}");
}
