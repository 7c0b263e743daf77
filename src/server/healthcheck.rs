//! `ams-thumbnails healthcheck`: the container image's health check without a shell or curl.
//! It asks the running service's `/healthz` on the configured listen address (a wildcard
//! address is asked on loopback) and says whether it answered `200` in time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long the probe waits for the answer.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Where a process on the same host reaches a service listening on `listen`.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok` when `GET /healthz` on `listen` answers `200` within [`TIMEOUT`].
pub async fn check(listen: SocketAddr) -> Result<(), String> {
    let url = format!("http://{}/healthz", probe_addr(listen));
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build a client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: no answer ({})", reason(&e)))?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(format!("{url}: answered {status}")),
    }
}

fn reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_probed_on_loopback() {
        let p = |s: &str| probe_addr(s.parse().unwrap()).to_string();
        assert_eq!(p("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(p("[::]:8080"), "[::1]:8080");
        assert_eq!(p("10.1.2.3:9000"), "10.1.2.3:9000");
    }
}
