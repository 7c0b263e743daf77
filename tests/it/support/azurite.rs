//! A real Azurite blob service (the npm package pinned in tests/azurite/package-lock.json), one
//! child process per [`Azurite`], in memory, on a random free port of 127.0.0.1.
//!
//! Azurite is installed by `scripts/test`; when it is missing the tests fail, they never skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tls::TestPki;

/// The well-known Azurite development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The well-known key of [`ACCOUNT`] (public, published with the Azure Storage emulators).
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long Azurite may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports to try when the chosen one is taken before Azurite binds it.
const PORT_ATTEMPTS: usize = 5;

/// A running Azurite blob service; the child process is killed (and reaped) on drop.
pub struct Azurite {
    /// `http(s)://127.0.0.1:P/devstoreaccount1`, without a trailing slash.
    pub blob_endpoint: String,
    pub port: u16,
    child: Option<Child>,
    tls: Option<TlsFiles>,
    /// Azurite's working directory (and where its stdout/stderr go): nothing lands in the repo.
    dir: tempfile::TempDir,
    /// A client for the readiness probe (trusts the test CA when serving https).
    probe: reqwest::Client,
    /// How many processes this instance has started (names the log files).
    generation: u32,
}

#[derive(Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

enum Outcome {
    Ready,
    /// The port was taken before Azurite could bind it.
    PortInUse,
}

impl Azurite {
    /// Azurite over plain http with Shared Key / SAS auth.
    pub async fn start_http() -> Self {
        Self::start(None, probe_client(reqwest::Client::builder())).await
    }

    /// Azurite over https (leaf certificate of `pki`) with `--oauth basic` (Bearer tokens are
    /// decoded, not verified), Shared Key and SAS.
    pub async fn start_https_oauth(pki: &TestPki) -> Self {
        let tls = TlsFiles {
            cert: pki.cert_pem.clone(),
            key: pki.key_pem.clone(),
        };
        Self::start(Some(tls), probe_client(super::tls::client_builder(pki))).await
    }

    async fn start(tls: Option<TlsFiles>, probe: reqwest::Client) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ams-thumbnails-azurite-")
            .tempdir()
            .expect("temp dir for Azurite");
        let mut azurite = Self {
            blob_endpoint: String::new(),
            port: 0,
            child: None,
            tls,
            dir,
            probe,
            generation: 0,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            azurite.port = free_port();
            azurite.blob_endpoint = format!(
                "{}://127.0.0.1:{}/{ACCOUNT}",
                azurite.scheme(),
                azurite.port
            );
            match azurite.launch().await {
                Outcome::Ready => return azurite,
                Outcome::PortInUse if attempt < PORT_ATTEMPTS => continue,
                Outcome::PortInUse => azurite.fail("every port tried was already in use"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Kills Azurite and waits for it to exit. Its data (in memory) is lost.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait())
                .await
                .expect("wait for Azurite");
        }
    }

    /// Stops Azurite (if running) and starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop().await;
        // The port is ours again once the process is gone; retry briefly in case another
        // process grabbed it in between.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch().await {
                Outcome::Ready => return,
                Outcome::PortInUse if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Outcome::PortInUse => self.fail("its port stayed in use after a restart"),
            }
        }
    }

    /// `{blob_endpoint}/{container}`.
    pub fn container_url(&self, container: &str) -> String {
        format!("{}/{container}", self.blob_endpoint)
    }

    /// `{blob_endpoint}/{container}/{name}`, the name percent-encoded segment by segment.
    pub fn blob_url(&self, container: &str, name: &str) -> String {
        format!(
            "{}/{container}/{}",
            self.blob_endpoint,
            ams_thumbnails::url_path::encode_blob_name(name)
        )
    }

    /// Whether this instance serves https.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Starts the process on `self.port` and waits until it answers.
    async fn launch(&mut self) -> Outcome {
        let bin = azurite_bin();
        self.generation += 1;
        let (out, err) = self.log_paths();
        let mut command = Command::new(&bin);
        command
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            // `--location` cannot be combined with `--inMemoryPersistence`: the working
            // directory keeps stray files out of the repo instead.
            .args([
                "--inMemoryPersistence",
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ])
            .current_dir(self.dir.path())
            // Only the well-known account, whatever the developer's shell exports.
            .env_remove("AZURITE_ACCOUNTS")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("Azurite stdout file"))
            .stderr(std::fs::File::create(&err).expect("Azurite stderr file"));
        if let Some(tls) = &self.tls {
            command
                .args(["--oauth", "basic", "--cert"])
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll Azurite"))
            {
                self.child = None;
                if self.output().contains("EADDRINUSE") {
                    return Outcome::PortInUse;
                }
                self.fail(&format!("it exited early ({status})"));
            }
            let answered = self
                .probe
                .get(format!("{}://127.0.0.1:{}/", self.scheme(), self.port))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok();
            if answered {
                return Outcome::Ready;
            }
            if Instant::now() >= deadline {
                self.kill_now();
                self.fail(&format!("it did not answer within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_paths(&self) -> (PathBuf, PathBuf) {
        let base = self.dir.path();
        (
            base.join(format!("azurite-{}.stdout", self.generation)),
            base.join(format!("azurite-{}.stderr", self.generation)),
        )
    }

    /// What the current process wrote so far.
    fn output(&self) -> String {
        let (out, err) = self.log_paths();
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- stderr ---\n{}\n--- stdout ---\n{}",
            read(&err),
            read(&out)
        )
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "Azurite on port {} failed to start: {why}\n{}",
            self.port,
            self.output()
        )
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// `tests/azurite/node_modules/.bin/azurite-blob`; panics when Azurite is not installed.
fn azurite_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/azurite/node_modules/.bin/azurite-blob");
    assert!(
        bin.exists(),
        "Azurite is not installed: run scripts/test, which installs it from \
         tests/azurite/package-lock.json (missing {})",
        bin.display()
    );
    bin
}

/// The readiness probe's client: no pooled connections, so an instance made on one tokio
/// runtime can be restarted from another.
fn probe_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    builder
        .pool_max_idle_per_host(0)
        .build()
        .expect("probe client")
}

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
