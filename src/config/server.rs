//! `[server]`: the listener, request limits and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::Invalid;
use super::cidr::Cidr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the HTTP server binds to.
    pub listen: SocketAddr,
    /// Base URL under which clients reach this service; used for URLs the service itself serves
    /// (local mode). Defaults to `http://{listen}` with an unspecified address shown as 127.0.0.1.
    pub public_base_url: Option<Url>,
    /// Upper bound on the time one request may take before it is answered with 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long in-flight requests may run on after SIGTERM/SIGINT before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long the service keeps accepting and answering while `/readyz`
    /// fails, before it drains: the time a load balancer (Kubernetes endpoints) takes to stop
    /// sending it requests. SIGINT (Ctrl-C) skips it.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Requests handled at once; more wait in a queue (health and metrics routes are exempt).
    pub max_concurrent_requests: usize,
    /// Requests allowed to wait; past this, `503 overloaded` at once instead of a slow timeout.
    pub max_queued_requests: usize,
    /// Longest wait in the queue before `503 overloaded`.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Longest a client may take to send a request head once its first byte arrived; past it,
    /// the connection is closed (a slowloris client holds nothing for longer).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open with no request in progress: after it was accepted
    /// and after each answer. Load balancers that reuse connections should time out first
    /// (below this value).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; lowered at start-up to fit under the open-file
    /// limit with descriptors to spare. At the cap, the connection with no request in progress
    /// nearest its timeout is closed to make room; a new one is refused only when all are busy.
    pub max_connections: usize,
    /// Longest a request body may take to arrive. Bodies are read before the request takes
    /// one of `max_concurrent_requests`, so a slow body holds a connection, never a slot.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Slowest a body may arrive, in bytes per second on average after its first second; a
    /// body slower than this is cut off with `408` before `body_read_timeout`. 0: no minimum.
    pub body_min_rate: u64,
    /// Threads for blocking work (local folder walks and file reads, DNS lookups). Tokio's own
    /// bound is 512: a flood of cold local assets grew the pool to that, each thread with its
    /// stack, and glibc spread the transient allocations over every arena it has.
    pub blocking_threads: usize,
    /// Networks of the reverse proxies and load balancers in front of the service (CIDR, or
    /// one address). From a peer in one of them, `Forwarded` (else `X-Forwarded-For`) names
    /// the client: the right-most address that is not itself a trusted proxy. From any other
    /// peer those headers are ignored. Empty: the socket peer is the client.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::from_secs(5),
            max_concurrent_requests: 1024,
            max_queued_requests: 2048,
            queue_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: 4096,
            body_read_timeout: Duration::from_secs(10),
            body_min_rate: 1024,
            blocking_threads: 16,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.shutdown_delay > Duration::from_secs(300) {
            return Err(Invalid::new("server.shutdown_delay", "must be at most 5m"));
        }
        if let Some(url) = &self.public_base_url {
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(Invalid::new(
                    "server.public_base_url",
                    "must be an absolute http(s) URL",
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(Invalid::new(
                    "server.public_base_url",
                    "must not have a query or fragment",
                ));
            }
        }
        if self.request_timeout.is_zero() {
            return Err(Invalid::new(
                "server.request_timeout",
                "must be greater than 0",
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err(Invalid::new(
                "server.max_concurrent_requests",
                "must be greater than 0",
            ));
        }
        for (key, value) in [
            ("server.header_read_timeout", self.header_read_timeout),
            ("server.idle_timeout", self.idle_timeout),
            ("server.body_read_timeout", self.body_read_timeout),
        ] {
            if value.is_zero() {
                return Err(Invalid::new(key, "must be greater than 0"));
            }
        }
        if self.max_connections == 0 {
            return Err(Invalid::new(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        if self.blocking_threads == 0 {
            return Err(Invalid::new(
                "server.blocking_threads",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// The base URL clients use to reach this service, given the address actually bound.
    pub fn public_base_url(&self, bound: SocketAddr) -> Url {
        if let Some(url) = &self.public_base_url {
            return url.clone();
        }
        let host = if bound.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), bound.port())
        } else {
            bound
        };
        Url::parse(&format!("http://{host}")).expect("socket address forms a valid URL")
    }
}
