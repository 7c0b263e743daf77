//! The HTTP server: bind, put the service together ([`compose`]), serve, and shut down
//! gracefully.

pub mod compose;
pub mod connections;
pub mod fd_limit;
pub mod healthcheck;

use std::future::Future;
use std::net::SocketAddr;

use futures::FutureExt;
use tokio::net::TcpListener;
use url::Url;

use crate::config::{Invalid, Settings};
use crate::http::{AppState, app, metrics_app};
use crate::source::Backend;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(#[from] Invalid),
}

/// Connections the metrics listener keeps open at once (a scraper or two, and a person).
const METRICS_MAX_CONNECTIONS: usize = 16;

/// A bound, not yet serving, server. Binding first lets port 0 work: the public base URL (used
/// in local-mode URLs) is derived from the address actually bound.
pub struct Server {
    listener: TcpListener,
    /// `metrics.listen`'s listener and its bound address, when set.
    metrics: Option<(TcpListener, SocketAddr)>,
    state: AppState,
    addr: SocketAddr,
    base_url: Url,
}

impl Server {
    pub async fn bind(settings: Settings) -> Result<Self, StartError> {
        Self::bind_with(settings, |backend| backend).await
    }

    /// Binds, then builds the service with `wrap` around the configured backend (tests put a
    /// probe there).
    pub async fn bind_with(
        settings: Settings,
        wrap: impl FnOnce(Backend) -> Backend,
    ) -> Result<Self, StartError> {
        let (listener, addr) = bind(settings.server.listen).await?;
        let metrics = match settings.metrics.listen {
            Some(listen) => Some(bind(listen).await?),
            None => None,
        };
        let base_url = settings.server.public_base_url(addr);
        let state = compose::app_state(&settings, &base_url, wrap)?;
        Ok(Self {
            listener,
            metrics,
            state,
            addr,
            base_url,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served apart (`metrics.listen`), as bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting connections, closes those with
    /// no request in progress, and lets requests in progress finish for at most
    /// `server.shutdown_grace` (see [`connections`]).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let server = self.state.server.clone();
        let limits = connections::Limits {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            max_connections: fd_limit::connection_cap(server.max_connections, fd_limit::current()),
        };
        tracing::info!(
            addr = %self.addr,
            base_url = %self.base_url,
            max_connections = limits.max_connections,
            metrics_addr = self.metrics.as_ref().map(|(_, addr)| addr.to_string()),
            "listening"
        );
        let grace = server.shutdown_grace;
        let signal = async move {
            shutdown.await;
            tracing::info!(
                grace_s = grace.as_secs_f64(),
                "shutting down: closing idle connections, draining requests in progress"
            );
        }
        .boxed()
        .shared();
        // Histogram samples are kept until upkeep runs; without a scrape they would pile up.
        let upkeep = tokio::spawn(async {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                crate::metrics::handle().run_upkeep();
            }
        });
        let metrics = self.metrics.map(|(listener, _)| {
            let limits = connections::Limits {
                max_connections: METRICS_MAX_CONNECTIONS,
                ..limits
            };
            let router = metrics_app(self.state.clone());
            connections::serve(listener, router, limits, signal.clone(), grace)
        });
        let metrics = async {
            if let Some(metrics) = metrics {
                metrics.await;
            }
        };
        let public = connections::serve(self.listener, app(self.state), limits, signal, grace);
        tokio::join!(public, metrics);
        upkeep.abort();
        Ok(())
    }
}

/// Binds `addr`, and tells the address bound (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// Completes when the server should stop accepting: at once on SIGINT (Ctrl-C); on SIGTERM
/// (Kubernetes, Docker) after `server.shutdown_delay`, during which `/readyz` fails while
/// requests are still accepted and answered (endpoint removal takes that long to reach every
/// load balancer; no `preStop: sleep` is needed).
pub async fn shutdown_after_delay(state: AppState) {
    if shutdown_signal().await == Signal::Terminate {
        let delay = state.server.shutdown_delay;
        if !delay.is_zero() {
            state.start_draining();
            tracing::info!(
                delay_s = delay.as_secs_f64(),
                "SIGTERM: readiness fails; still answering until the delay is over"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

/// Completes on SIGTERM or SIGINT (Ctrl-C), saying which.
pub async fn shutdown_signal() -> Signal {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => Signal::Interrupt,
        _ = term => Signal::Terminate,
    }
}
