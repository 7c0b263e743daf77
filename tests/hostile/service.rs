//! The service under attack: the real binary in a process of its own (so its memory is its
//! own), on the bundled samples, and the measurements every attack takes of it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ams-thumbnails");

/// The asset every probe asks for (cached after the first request).
pub const KNOWN: &str = "/assets/builtin-preset/thumbnails";

/// The attacks run one at a time: each measures latency and memory, which a neighbour on the
/// same two cores would spoil.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Raises this test process's own open-file limit: an attack opens more than 1,024 sockets.
pub fn raise_own_file_limit() {
    ams_thumbnails::server::fd_limit::raise().expect("raise the test's open-file limit");
}

pub struct Service {
    child: Child,
    pub addr: String,
}

pub struct Options<'a> {
    pub env: &'a [(&'a str, &'a str)],
    /// Soft and hard open-file limits the process starts with.
    pub nofile: Option<(u64, u64)>,
    /// TOML added to the embedded default configuration (`config/default.toml`).
    pub config: &'a str,
}

/// The key of [`keyed`] services.
pub const KEY: &str = "hostile-suite-key-0123456789";
/// A second key, for the attacker where it has one.
pub const ATTACKER_KEY: &str = "hostile-suite-attacker-key-9876543210";

/// `[auth]` with [`KEY`] and [`ATTACKER_KEY`] for the asset routes.
pub fn keyed(extra: &str) -> String {
    use sha2::Digest;
    let sha = |k: &str| -> String {
        sha2::Sha256::digest(k.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    format!(
        "[auth]\napi = \"api-key\"\napi_keys = [\n\
         {{ name = \"frontend\", sha256 = \"{}\", roles = [\"api\"] }},\n\
         {{ name = \"attacker\", sha256 = \"{}\", roles = [\"api\"] }},\n]\n{extra}",
        sha(KEY),
        sha(ATTACKER_KEY)
    )
}

impl Service {
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(Options {
            env,
            nofile: None,
            config: "",
        })
    }

    pub fn start_with(options: Options<'_>) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        for (key, _) in std::env::vars() {
            if key.starts_with("AMS_THUMBNAILS_") || key.starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        if !options.config.is_empty() {
            let base = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
            )
            .unwrap();
            let dir = std::env::temp_dir().join(format!("hostile-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{}.toml", uuid::Uuid::new_v4()));
            std::fs::write(&path, format!("{base}\n{}", options.config)).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.arg("serve")
            .env("AMS_THUMBNAILS_SERVER__LISTEN", "127.0.0.1:0")
            .env("AMS_THUMBNAILS_LOG__FORMAT", "json")
            .env(
                "AMS_THUMBNAILS_LOG__FILTER",
                "warn,ams_thumbnails::server=info",
            )
            .envs(options.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((soft, hard)) = options.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the struct passed.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start the service");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = lines
            .by_ref()
            .map(|l| l.unwrap())
            .find(|l| l.contains("listening"))
            .expect("a listening line");
        let log: serde_json::Value = serde_json::from_str(&listening).expect("a JSON log line");
        let addr = log["addr"].as_str().unwrap().to_owned();
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/pid/status"))
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    /// The most resident memory so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }

    /// The soft open-file limit the process runs with.
    pub fn open_file_limit(&self) -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    /// Resets the peak so that it measures what comes next (Linux: writing 5 to clear_refs).
    pub fn reset_peak(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A counter's value summed over its series (0 when absent); `name` without the
    /// `ams_thumbnails_` prefix, labels may follow.
    pub async fn counter(&self, name: &str) -> f64 {
        let name = &format!("ams_thumbnails_{name}");
        self.metrics()
            .await
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET of the known asset on a fresh connection (so that admission of new connections is
/// part of what is measured); panics unless it answers 200 within `bound`.
pub async fn known_asset(base: &str, bound: Duration) -> Duration {
    known_asset_as(base, bound, None).await
}

/// [`known_asset`] with an API key.
pub async fn known_asset_as(base: &str, bound: Duration, key: Option<&str>) -> Duration {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(bound)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut request = client.get(format!("{base}{KNOWN}"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("the known asset did not answer within {bound:?}: {e}"));
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    started.elapsed()
}

/// Asks for the known asset every `every` until `until`, and returns the slowest answer.
pub async fn probe_until(
    base: String,
    until: Instant,
    every: Duration,
    bound: Duration,
) -> Duration {
    probe_as(base, until, every, bound, None).await
}

/// [`probe_until`] with an API key.
pub async fn probe_as(
    base: String,
    until: Instant,
    every: Duration,
    bound: Duration,
    key: Option<&str>,
) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while Instant::now() < until || probes == 0 {
        slowest = slowest.max(known_asset_as(&base, bound, key).await);
        probes += 1;
        tokio::time::sleep(every).await;
    }
    slowest
}
