//! A real `redis-server` (Debian's package, installed by `scripts/test`), one child process per
//! [`Redis`], without persistence, on a free port of 127.0.0.1. It can be killed and started
//! again on the same port, and paused (SIGSTOP) to play a Redis that does not answer.
//!
//! When `redis-server` is missing the tests fail, they never skip.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// TLS only (`--tls-port`, `--port 0`): the test PKI's CA, certificate and key.
    tls: Option<[std::path::PathBuf; 3]>,
    /// `--requirepass`.
    password: Option<String>,
}

impl Redis {
    pub async fn start() -> Self {
        Self::start_with(None, None).await
    }

    /// TLS only, on the certificate of `pki`, and a password.
    pub async fn start_tls(pki: &super::tls::TestPki, password: &str) -> Self {
        let files = [
            pki.ca_pem.clone(),
            pki.cert_pem.clone(),
            pki.key_pem.clone(),
        ];
        Self::start_with(Some(files), Some(password.to_owned())).await
    }

    async fn start_with(tls: Option<[std::path::PathBuf; 3]>, password: Option<String>) -> Self {
        for _ in 0..5 {
            let mut redis = Self {
                port: free_port(),
                child: None,
                dir: tempfile::Builder::new()
                    .prefix("ams-thumbnails-redis-")
                    .tempdir()
                    .expect("temp dir for redis"),
                tls: tls.clone(),
                password: password.clone(),
            };
            if redis.launch().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any port tried");
    }

    /// `redis://127.0.0.1:P` (`rediss://localhost:P` with TLS; no password in it).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://localhost:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// What every `redis-server` / `redis-cli` call of this server needs besides the port.
    fn connection_args(&self, server: bool) -> Vec<String> {
        let mut args = Vec::new();
        if let Some([ca, cert, key]) = &self.tls {
            let path = |p: &std::path::PathBuf| p.display().to_string();
            if server {
                args.extend(["--port".into(), "0".into(), "--tls-port".into()]);
                args.push(self.port.to_string());
                args.extend(["--tls-auth-clients".into(), "no".into()]);
                args.extend(["--tls-cert-file".into(), path(cert)]);
                args.extend(["--tls-key-file".into(), path(key)]);
                args.extend(["--tls-ca-cert-file".into(), path(ca)]);
            } else {
                args.extend(["--tls".into(), "--cacert".into(), path(ca)]);
                args.extend(["-p".into(), self.port.to_string()]);
            }
        } else if server {
            args.extend(["--port".into(), self.port.to_string()]);
        } else {
            args.extend(["-p".into(), self.port.to_string()]);
        }
        if let Some(password) = &self.password {
            args.push(if server { "--requirepass" } else { "-a" }.into());
            args.push(password.clone());
            if !server {
                args.push("--no-auth-warning".into());
            }
        }
        args
    }

    async fn launch(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args(self.connection_args(true))
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server cannot be started ({e}): scripts/test installs it (apt-get install redis-server)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.cli(&["PING"]).await.trim() == "PONG" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Kills the server (its data is lost) and waits for it to exit.
    pub async fn kill(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.launch().await {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the process without closing its sockets: every call to it hangs.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// `redis-cli` against this server; its output (RESP read as text).
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut command = tokio::process::Command::new("redis-cli");
        command.args(self.connection_args(false)).arg("--no-raw");
        command.args(args);
        match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
            Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => String::new(),
        }
    }

    /// `redis-cli --raw`: values as they are stored.
    pub async fn raw(&self, args: &[&str]) -> Vec<u8> {
        let mut command = tokio::process::Command::new("redis-cli");
        command.args(self.connection_args(false)).arg("--raw");
        command.args(args);
        match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
            Ok(Ok(out)) => out.stdout,
            _ => Vec::new(),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
