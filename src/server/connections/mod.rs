//! The accept loop, and what one connection may cost.
//!
//! `axum::serve` accepts without bound and keeps a connection for as long as its client does:
//! connections that send nothing, dribble a header or sit idle held sockets, memory and file
//! descriptors until the process ran out (issue #13). Here:
//!
//! - At most `max_connections` are open (kept under the open-file limit, see [`super::fd_limit`]).
//!   At the cap, the connection with no request in progress (idle, or still sending its head)
//!   that is nearest its deadline is closed to make room; only when every connection has a
//!   request in progress is the new one refused. So a flood of idle or half-sent connections
//!   cannot keep a health probe out.
//! - A connection with no request in progress is closed `idle_timeout` after its last answer
//!   (or after it was accepted), and `header_read_timeout` after the first byte of a head that is
//!   not complete. A request in progress is bounded by the request timeout and the body-read
//!   deadline, not here.
//! - hyper reads at most [`HEAD_BUFFER_BYTES`] of a head before answering `431`; its own
//!   `400`/`414`/`431` answers are rewritten as problem+json ([`socket`]).
//! - On shutdown, connections with no request in progress are closed at once; the others finish
//!   the request in progress (keep-alive off) within the grace.

mod service;
mod socket;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::http::{MAX_HEADER_BYTES, MAX_URI_BYTES};
use service::ConnService;
use socket::Watched;

/// The most bytes of one request head (request line and header fields) hyper buffers: the
/// service's own URI and header limits plus room for the syntax around them. A head that does
/// not fit is answered `431` and its connection closed, so a client sending endless header lines
/// costs at most this much.
pub const HEAD_BUFFER_BYTES: usize = MAX_URI_BYTES + MAX_HEADER_BYTES + 8 * 1024;

/// Connection limits, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Why a connection was closed by the service (the `reason` label of
/// `http_connections_closed_total`).
#[derive(Debug, Clone, Copy)]
enum Closed {
    IdleTimeout,
    HeaderTimeout,
    Evicted,
    Shutdown,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::IdleTimeout => "idle_timeout",
            Closed::HeaderTimeout => "header_timeout",
            Closed::Evicted => "evicted",
            Closed::Shutdown => "shutdown",
        }
    }
}

const NONE: u64 = u64::MAX;

/// What the accept loop and the watchdog know of one connection. Times are milliseconds since
/// `born`, in atomics: the request path only stores and adds, never locks.
struct Tracked {
    born: Instant,
    /// Requests handed to the service whose answer has not been sent in full.
    in_flight: AtomicU32,
    /// Requests handed to the service so far (to tell hyper's own answers from the service's).
    calls: AtomicU64,
    /// When the connection last had no request in progress.
    idle_since: AtomicU64,
    /// When the first byte of a head arrived with no request in progress; [`NONE`] if none.
    head_since: AtomicU64,
    /// Closed to make room for another.
    evicted: AtomicBool,
    close: Notify,
}

impl Tracked {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn begin(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Relaxed);
    }

    fn end(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
        {
            self.head_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// When the connection is to be closed if nothing changes, and why; `None` while a request
    /// is in progress.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        if self.busy() {
            return None;
        }
        let head = self.head_since.load(Ordering::Relaxed);
        Some(if head != NONE {
            (
                self.born + Duration::from_millis(head) + limits.header_read_timeout,
                Closed::HeaderTimeout,
            )
        } else {
            let idle = self.idle_since.load(Ordering::Relaxed);
            (
                self.born + Duration::from_millis(idle) + limits.idle_timeout,
                Closed::IdleTimeout,
            )
        })
    }
}

/// The open connections, for making room at the cap.
#[derive(Default)]
struct Registry {
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Registers a new connection, closing the least useful one at the cap; `None` when every
    /// open connection has a request in progress.
    fn admit(&self, limits: &Limits) -> Option<(u64, Arc<Tracked>)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= limits.max_connections {
            let victim = open
                .iter()
                .filter_map(|(id, c)| c.deadline(limits).map(|(at, _)| (at, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(c) = open.remove(&victim) {
                c.evicted.store(true, Ordering::Relaxed);
                c.close.notify_one();
                metrics::gauge!("http_connections_open").decrement(1.0);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(Tracked::new());
        open.insert(id, tracked.clone());
        // Up and down rather than set: every listener of the process (the public one, the
        // metrics one, the tests' many) adds its own connections to the one gauge.
        metrics::gauge!("http_connections_open").increment(1.0);
        Some((id, tracked))
    }

    fn remove(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.remove(&id).is_some() {
            metrics::gauge!("http_connections_open").decrement(1.0);
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then closes idle connections at
/// once and waits at most `grace` for requests in progress.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(HEAD_BUFFER_BYTES)
        // The watchdog below owns header and idle timeouts (hyper's one timer runs from the
        // end of the previous answer, so it cannot tell idle from slow).
        .header_read_timeout(None);
    builder
        .http2()
        .max_header_list_size(HEAD_BUFFER_BYTES as u32);
    let builder = Arc::new(builder);
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let Some((id, tracked)) = registry.admit(&limits) else {
                        // Every connection is busy: refuse this one rather than run out.
                        metrics::counter!("http_connections_refused_total").increment(1);
                        drop(tcp);
                        continue;
                    };
                    // Answers leave at once (no Nagle delay behind an unacknowledged segment),
                    // as nginx does for keep-alive connections.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                    let connection = Connection {
                        tracked,
                        remote,
                        limits,
                        stop: stop_rx.clone(),
                    };
                    let (builder, registry, router) =
                        (builder.clone(), registry.clone(), router.clone());
                    tasks.spawn(async move {
                        connection.serve(tcp, &builder, router).await;
                        registry.remove(id);
                    });
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            requests = tasks.len(),
            "grace period over: exiting with requests still in flight"
        );
        tasks.abort_all();
    }
}

/// Per-connection errors (the peer reset before accept) are nothing; running out of file
/// descriptors or memory is waited out briefly rather than spun on.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    metrics::counter!("http_accept_errors_total").increment(1);
    tracing::warn!(error = %e, "accept failed; pausing 50 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

struct Connection {
    tracked: Arc<Tracked>,
    remote: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(
        mut self,
        tcp: TcpStream,
        builder: &auto::Builder<TokioExecutor>,
        router: Router,
    ) {
        let io = TokioIo::new(Watched::new(tcp, self.tracked.clone()));
        let service = TowerToHyperService::new(ConnService {
            router,
            tracked: self.tracked.clone(),
            remote: self.remote,
        });
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut draining = false;
        let closed = loop {
            // The watchdog looks again at least every `header_read_timeout`: the first look
            // after a head starts arriving sees its deadline, so the head is cut off on time
            // without a timer reset per request.
            let look = Instant::now() + self.limits.header_read_timeout;
            let at = match self.tracked.deadline(&self.limits) {
                Some((at, _)) => at.min(look),
                None => look,
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break None;
                }
                _ = self.tracked.close.notified() => break Some(Closed::Evicted),
                _ = self.stop.changed(), if !draining => {
                    draining = true;
                    if !self.tracked.busy() {
                        break Some(Closed::Shutdown);
                    }
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(at.into()) => {
                    // Something may have happened since the deadline was taken: look again.
                    if let Some((at, why)) = self.tracked.deadline(&self.limits)
                        && at <= Instant::now()
                    {
                        break Some(why);
                    }
                }
            }
        };
        if let Some(why) = closed {
            debug_assert!(
                !matches!(why, Closed::Evicted) || self.tracked.evicted.load(Ordering::Relaxed)
            );
            metrics::counter!("http_connections_closed_total", "reason" => why.label())
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_connections: max,
        }
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let l = limits(10);
        let c = Tracked::new();
        let (idle_at, why) = c.deadline(&l).unwrap();
        assert!(matches!(why, Closed::IdleTimeout));
        assert!(idle_at >= c.born + l.idle_timeout);
        c.bytes_arrived();
        let (head_at, why) = c.deadline(&l).unwrap();
        assert!(matches!(why, Closed::HeaderTimeout));
        assert!(head_at < idle_at);
        c.begin();
        assert!(
            c.deadline(&l).is_none(),
            "no deadline with a request in progress"
        );
        c.bytes_arrived(); // body bytes
        c.end();
        let (_, why) = c.deadline(&l).unwrap();
        assert!(
            matches!(why, Closed::IdleTimeout),
            "idle again after the answer"
        );
    }

    #[test]
    fn at_the_cap_an_idle_connection_makes_room_and_busy_ones_do_not() {
        let l = limits(2);
        let r = Registry::default();
        let (_, a) = r.admit(&l).unwrap();
        let (_, b) = r.admit(&l).unwrap();
        a.begin();
        let (_, _c) = r.admit(&l).expect("b is idle: it makes room");
        assert!(b.evicted.load(Ordering::Relaxed));
        assert!(!a.evicted.load(Ordering::Relaxed));
        _c.begin();
        assert!(r.admit(&l).is_none(), "every open connection is busy");
    }
}
