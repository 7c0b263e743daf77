//! Test harness: settings over the bundled samples, a backend probe that counts (and can delay)
//! every backend call, and the real server spawned on port 0.

pub mod azurite;
pub mod fake_arm;
pub mod fake_encoder;
pub mod fake_entra;
pub mod fake_jwks;
pub mod fake_mkio;
pub mod fault_proxy;
pub mod faults;
pub mod logs;
pub mod odata;
pub mod own_process;
pub mod redis;
pub mod sas;
pub mod seed;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ams_thumbnails::asset_id::AssetId;
use ams_thumbnails::config::{LocalSourceSettings, SourceSettings};
use ams_thumbnails::model::{BlobEntry, Link};
use ams_thumbnails::server::compose;
use ams_thumbnails::source::{AssetLocation, Backend, BlobStore, Catalog, Linker, SourceError};
use ams_thumbnails::{AppState, Server, Settings};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Settings for the bundled samples on an ephemeral port, over `extra` TOML.
pub fn settings(extra: &str) -> Settings {
    settings_for_root(&samples_dir(), extra)
}

/// Settings for a local source rooted at `root` on an ephemeral port, over `extra` TOML.
pub fn settings_for_root(root: &std::path::Path, extra: &str) -> Settings {
    let mut settings = Settings::from_toml(extra).expect("test settings are valid");
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.source = SourceSettings::Local(LocalSourceSettings {
        root: root.to_path_buf(),
        ..Default::default()
    });
    settings
}

/// Counts every call that reaches the backend; can delay `locate` to widen race windows.
pub struct Probe {
    inner: Backend,
    pub locates: AtomicUsize,
    pub lists: AtomicUsize,
    pub reads: AtomicUsize,
    pub links: AtomicUsize,
    delay_ms: AtomicU64,
    /// Delay of `link` (after the listing: widens the window between reading and caching).
    link_delay_ms: AtomicU64,
    /// When set, `locate` fails with this error instead of calling the real backend.
    fail_with: std::sync::Mutex<Option<SourceError>>,
    /// When set, links expire this long after they are made (as signed URLs do).
    link_lifetime: std::sync::Mutex<Option<Duration>>,
}

impl Probe {
    /// Wraps `inner`: the returned backend routes every call through the probe.
    pub fn wrap(inner: Backend) -> (Arc<Probe>, Backend) {
        let probe = Arc::new(Probe {
            inner: inner.clone(),
            locates: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            links: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            link_delay_ms: AtomicU64::new(0),
            fail_with: std::sync::Mutex::new(None),
            link_lifetime: std::sync::Mutex::new(None),
        });
        let backend = Backend {
            catalog: probe.clone(),
            store: probe.clone(),
            linker: probe.clone(),
            health: inner.health.clone(),
            local_root: inner.local_root.clone(),
        };
        (probe, backend)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_link_delay(&self, delay: Duration) {
        self.link_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_link_lifetime(&self, lifetime: Option<Duration>) {
        *self.link_lifetime.lock().unwrap() = lifetime;
    }

    pub fn fail_with(&self, error: Option<SourceError>) {
        *self.fail_with.lock().unwrap() = error;
    }

    /// Total backend calls of any kind.
    pub fn calls(&self) -> usize {
        self.locates.load(Ordering::SeqCst)
            + self.lists.load(Ordering::SeqCst)
            + self.reads.load(Ordering::SeqCst)
            + self.links.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Catalog for Probe {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError> {
        self.locates.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if let Some(e) = self.fail_with.lock().unwrap().clone() {
            return Err(e);
        }
        self.inner.catalog.locate(id).await
    }

    fn assets_in(&self, account: &str, container: &str) -> Vec<AssetId> {
        self.inner.catalog.assets_in(account, container)
    }
}

#[async_trait]
impl BlobStore for Probe {
    async fn list(&self, location: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.store.list(location).await
    }

    async fn read(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Bytes, SourceError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.store.read(location, name, limit).await
    }
}

#[async_trait]
impl Linker for Probe {
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError> {
        self.links.fetch_add(1, Ordering::SeqCst);
        let delay = self.link_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut links = self.inner.linker.link(location, names).await?;
        if let Some(lifetime) = *self.link_lifetime.lock().unwrap() {
            let expires_at = time::OffsetDateTime::now_utc() + lifetime;
            for link in &mut links {
                link.expires_at = Some(expires_at);
            }
        }
        Ok(links)
    }
}

/// An in-process app over the samples, with a probe, for `oneshot` tests.
pub fn app_with_probe(settings: Settings) -> (axum::Router, AppState, Arc<Probe>) {
    let base = url::Url::parse("http://thumbs.test").unwrap();
    let mut probe_slot = None;
    let state = compose::app_state(&settings, &base, |backend| {
        let (probe, backend) = Probe::wrap(backend);
        probe_slot = Some(probe);
        backend
    })
    .expect("the service builds");
    let probe = probe_slot.expect("the backend was wrapped");
    (ams_thumbnails::app(state.clone()), state, probe)
}

/// The real server, on 127.0.0.1:0, with a probe between it and the backend.
pub struct TestServer {
    pub base: String,
    /// `http://{metrics.listen}` as bound, when `/metrics` has its own listener.
    pub metrics_base: Option<String>,
    pub probe: Arc<Probe>,
    pub state: AppState,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(settings: Settings) -> Self {
        let mut probe_slot = None;
        let server = Server::bind_with(settings, |backend| {
            let (probe, backend) = Probe::wrap(backend);
            probe_slot = Some(probe);
            backend
        })
        .await
        .expect("bind 127.0.0.1:0");
        let base = server.base_url().as_str().trim_end_matches('/').to_owned();
        let metrics_base = server.metrics_addr().map(|addr| format!("http://{addr}"));
        let state = server.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run_until(async {
            let _ = rx.await;
        }));
        Self {
            base,
            metrics_base,
            probe: probe_slot.expect("backend built"),
            state,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// Signals shutdown and waits for the server to exit.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().unwrap().await.expect("server task")
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> std::io::Result<()> {
        self.handle.take().unwrap().await.expect("server task")
    }
}

/// Asserts a response is problem+json with the given status and code; returns the body.
pub async fn assert_problem(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "content type"
    );
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(
        body["type"],
        format!("urn:ams-thumbnails:problem:{code}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// Sends `GET {path}` byte for byte (no client-side normalisation of `..`) and returns the
/// status code and body.
pub async fn raw_get(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// The sum of the samples of `name` whose labels include `labels`, in a Prometheus text scrape.
/// `name` is the short name the code records (`cache_hits_total`); the scrape's is
/// `ams_thumbnails_cache_hits_total`.
///
/// The recorder is process-wide and every test shares it: compare two scrapes taken around what
/// a test does (a delta), and expect other tests' increments in that delta too (at least, not
/// exactly).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let name = &format!("{}_{name}", ams_thumbnails::metrics::PREFIX);
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}
