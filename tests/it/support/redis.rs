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
}

impl Redis {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let mut redis = Self {
                port: free_port(),
                child: None,
                dir: tempfile::Builder::new()
                    .prefix("ams-thumbnails-redis-")
                    .tempdir()
                    .expect("temp dir for redis"),
            };
            if redis.launch().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any port tried");
    }

    /// `redis://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
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
        command.args(["-p", &self.port.to_string(), "--no-raw"]);
        command.args(args);
        match tokio::time::timeout(Duration::from_secs(30), command.output()).await {
            Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => String::new(),
        }
    }

    /// `redis-cli --raw`: values as they are stored.
    pub async fn raw(&self, args: &[&str]) -> Vec<u8> {
        let mut command = tokio::process::Command::new("redis-cli");
        command.args(["-p", &self.port.to_string(), "--raw"]);
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
