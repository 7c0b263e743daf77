//! Behind reverse proxies (`server.trusted_proxies`): a trusted proxy's `X-Forwarded-For` and
//! `Forwarded` name the client, whose address keys the rate limit and shows in the log lines;
//! the same headers from any other peer are ignored.

use crate::support;

use std::net::IpAddr;

use support::{TestServer, settings};

/// A client whose connections come from `source` (any 127.x address is loopback on Linux).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_that_the_rate_limit_counts() {
    let logs = support::logs::capture();
    let server = TestServer::start(settings(
        "[server]\ntrusted_proxies = [\"127.0.0.2\"]\n\
         [api]\nbatch_limit = 2\n[rate_limit]\nrequests_per_second = 0.01\nburst = 2\n",
    ))
    .await;
    let url = server.url("/assets/builtin-preset/thumbnails");
    let proxy = client_from("127.0.0.2");
    let through = |forwarded_for: &'static str| {
        proxy
            .get(&url)
            .header("x-forwarded-for", forwarded_for)
            .send()
    };
    // Client A, through the proxy: its own burst of two, then limited.
    assert_eq!(through("203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(through("203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(through("203.0.113.1").await.unwrap().status(), 429);
    // A's claim to be someone else stays left of what the proxy appended: still A.
    assert_eq!(
        through("198.51.100.77, 203.0.113.1")
            .await
            .unwrap()
            .status(),
        429
    );
    // Client B through the same proxy has a budget of its own.
    assert_eq!(through("203.0.113.2").await.unwrap().status(), 200);
    // So has C, named by RFC 7239 `Forwarded` (which wins over X-Forwarded-For).
    let forwarded = proxy
        .get(&url)
        .header("forwarded", "for=\"[2001:db8::c]:4711\";proto=https")
        .header("x-forwarded-for", "203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 200);

    // An untrusted peer's headers are ignored: its own address is the client, whatever it
    // claims, so changing the claim buys nothing.
    let direct = client_from("127.0.0.3");
    for (i, claim) in ["203.0.113.50", "203.0.113.51", "203.0.113.52"]
        .into_iter()
        .enumerate()
    {
        let answer = direct
            .get(&url)
            .header("x-forwarded-for", claim)
            .header("forwarded", format!("for={claim}"))
            .send()
            .await
            .unwrap();
        let expected = if i < 2 { 200 } else { 429 };
        assert_eq!(answer.status(), expected, "claim {claim}");
    }

    // The log lines name the client address the limit used.
    let text = logs.text();
    for addr in ["203.0.113.1", "203.0.113.2", "2001:db8::c", "127.0.0.3"] {
        assert!(
            text.contains(&format!("client_addr={addr}")),
            "{addr} in the logs:\n{text}"
        );
    }
    for claimed in ["198.51.100.77", "203.0.113.50"] {
        assert!(
            !text.contains(&format!("client_addr={claimed}")),
            "{claimed} was taken from a header it must not be:\n{text}"
        );
    }
}

#[tokio::test]
async fn malformed_forwarding_headers_from_a_trusted_proxy_count_as_the_proxy() {
    let server = TestServer::start(settings(
        "[server]\ntrusted_proxies = [\"127.0.0.0/30\"]\n\
         [api]\nbatch_limit = 2\n[rate_limit]\nrequests_per_second = 0.01\nburst = 2\n",
    ))
    .await;
    let url = server.url("/assets/builtin-preset/thumbnails");
    let proxy = client_from("127.0.0.2");
    // Garbage, an obfuscated node, an unterminated quote: the proxy's own address each time,
    // so one bucket of two.
    for (i, (name, value)) in [
        ("x-forwarded-for", "garbage"),
        ("forwarded", "for=_hidden"),
        ("forwarded", "for=\"[2001:db8::1]"),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = proxy.get(&url).header(name, value).send().await.unwrap();
        let expected = if i < 2 { 200 } else { 429 };
        assert_eq!(answer.status(), expected, "{name}: {value}");
    }
}
