//! The binary: `check-config`, `resolve`, start-up failures that name the key, and a graceful
//! exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ams-thumbnails");

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    // The test's own environment must not leak into the configuration under test.
    for (key, _) in std::env::vars() {
        if key.starts_with("AMS_THUMBNAILS_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let out = command()
        .args(["check-config"])
        .env("AMS_THUMBNAILS_CACHE__TTL", "90s")
        .env("AMS_THUMBNAILS_SERVER__LISTEN", "0.0.0.0:9999")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"0.0.0.0:9999\""), "{text}");
    assert!(text.contains("ttl = \"1m 30s\""), "{text}");
    assert!(text.contains("kind = \"local\""), "{text}");
    assert!(text.contains("Thumbnail{Index}{Extension}"), "{text}");
}

#[test]
fn links_window_is_read_from_the_environment_and_checked() {
    let check = |window: &str| {
        command()
            .args(["check-config", "--config", "config/azurite.toml"])
            .env("AMS_THUMBNAILS_LINKS__WINDOW", window)
            .output()
            .unwrap()
    };
    let out = check("15m");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("window = \"15m\""), "{text}");
    // Longer than lifetime (1h) - min_validity (5m): refused, naming the key.
    let out = check("1h");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("links.window"), "{err}");
}

#[test]
fn invalid_values_fail_start_up_naming_the_key() {
    for (key, value, named) in [
        ("AMS_THUMBNAILS_CACHE__TTL", "whenever", "cache.ttl"),
        (
            "AMS_THUMBNAILS_SERVER__LISTEN",
            "not-an-address",
            "server.listen",
        ),
        ("AMS_THUMBNAILS_LOG__FORMAT", "xml", "log.format"),
        ("AMS_THUMBNAILS_CACHE__MAX_BYTES", "0", "cache.max_bytes"),
        (
            "AMS_THUMBNAILS_SERVER__PUBLIC_BASE_URL",
            "ftp://x",
            "server.public_base_url",
        ),
    ] {
        let out = command().args(["serve"]).env(key, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{key}={value}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[recognition]\npatterns = [\"{Basename}{Extension}\"]\n",
    )
    .unwrap();
    let out = command()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recognition.patterns[0]"), "{err}");
    let out = command()
        .args(["check-config"])
        .env("AMS_THUMBNAILS_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // An existing file named by the environment is read.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[cache]\nttl = \"42s\"\n").unwrap();
    let out = command()
        .args(["check-config"])
        .env("AMS_THUMBNAILS_CONFIG", &good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ttl = \"42s\""));
}

#[test]
fn resolve_prints_the_json_answer() {
    let out = command()
        .args(["resolve", "multi-rendition"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["assetId"], "multi-rendition");
    assert_eq!(body["thumbnails"].as_array().unwrap().len(), 10);
    assert!(
        body["thumbnails"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:8080/local/multi-rendition/")
    );
    let out = command().args(["resolve", "ghost"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = command().args(["resolve", "a/b"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `serve` on a free port with JSON logs and `env`: the child, the address it bound (from its
/// `listening` line) and the rest of its log lines.
fn serve(
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    String,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let mut child = command()
        .args(["serve"])
        .env("AMS_THUMBNAILS_SERVER__LISTEN", "127.0.0.1:0")
        .env("AMS_THUMBNAILS_LOG__FORMAT", "json")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("listening"))
        .expect("a listening line");
    let addr = listening
        .split('"')
        .find(|s| s.starts_with("127.0.0.1:"))
        .expect("the bound address")
        .to_owned();
    (child, addr, lines)
}

#[test]
fn serves_and_exits_cleanly_on_sigterm() {
    let (mut child, addr, lines) = serve(&[("AMS_THUMBNAILS_SERVER__SHUTDOWN_DELAY", "1500ms")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("http://{addr}/assets/builtin-preset/thumbnails"))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    // During `server.shutdown_delay`: readiness fails, new connections still get answers.
    let (ready, asset) = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fresh = || {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        };
        let ready = fresh()
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .unwrap();
        let ready = (ready.status().as_u16(), ready.text().await.unwrap());
        let asset = fresh()
            .get(format!("http://{addr}/assets/builtin-preset/thumbnails"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        (ready, asset)
    });
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.contains("\"shutdown\""), "{}", ready.1);
    assert_eq!(asset, 200, "still answering");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    // Every log line is JSON and carries the request id inside a request.
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let request_line = rest
        .iter()
        .find(|l| l.contains("finished processing request"))
        .expect("a request log line");
    // Flat: the request span's fields beside the event's, numbers as numbers.
    let entry: serde_json::Value = serde_json::from_str(request_line).unwrap();
    assert_eq!(entry["level"], "INFO");
    assert_eq!(entry["span"], "request");
    assert_eq!(entry["message"], "finished processing request");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/assets/builtin-preset/thumbnails");
    assert_eq!(entry["route"], "/assets/{assetId}/thumbnails");
    assert_eq!(entry["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["client_addr"], "127.0.0.1");
    assert!(entry["latency_ms"].as_f64().unwrap() >= 0.0, "{entry}");
    assert!(entry.get("fields").is_none(), "{entry}");
    // Tracing is off: no ids.
    assert!(entry.get("trace_id").is_none(), "{entry}");
    // The probes went to debug: not one line at info.
    assert!(
        !rest.iter().any(|l| l.contains("\"/readyz\"")),
        "{}",
        rest.join("\n")
    );
}

/// From the repo root (where `config/default.toml` serves the samples), the environment alone
/// chooses another source: the file's `[source]` (a local `root`) does not leak into it.
#[test]
fn the_environment_alone_configures_another_source_from_the_repo_root() {
    let out = command()
        .args(["check-config"])
        .env("AMS_THUMBNAILS_SOURCE__KIND", "storage")
        .env("AMS_THUMBNAILS_STORAGE__ACCOUNT", "mediaarchive")
        .env("AMS_THUMBNAILS_STORAGE__AUTH", "account-key")
        .env("AMS_THUMBNAILS_STORAGE__ACCOUNT_KEY", "a2V5")
        .env("AMS_THUMBNAILS_LINKS__MODE", "account-key-sas")
        .env("AMS_THUMBNAILS_AUTH__ALLOW_ANONYMOUS_SIGNED_URLS", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("kind = \"storage\""), "{text}");
    assert!(!text.contains("root = "), "{text}");
    assert!(
        text.contains("container_template = \"asset-{assetId}\""),
        "{text}"
    );
    // The file's other sections still apply (its recognition patterns).
    assert!(text.contains("Thumbnail{Index}{Extension}"), "{text}");
}

#[test]
fn no_file_at_all_with_none_or_dev_null() {
    for config in ["none", "/dev/null"] {
        let out = command()
            .args(["check-config"])
            .env("AMS_THUMBNAILS_CONFIG", config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{config}: {stderr}");
        let text = String::from_utf8(out.stdout).unwrap();
        // The built-in defaults, not the sample file's (it listens on 127.0.0.1:8080 and
        // sets `request_timeout = "30s"` like the defaults, but names `root = "samples"`).
        assert!(text.contains("kind = \"local\""), "{config}: {text}");
    }
    let out = command()
        .args(["--config", "none", "check-config"])
        .env("AMS_THUMBNAILS_CACHE__TTL", "2m")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ttl = \"2m\""));
}

#[test]
fn an_error_names_the_file_or_the_variable_that_set_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[source]\nkind = \"storage\"\ncontainer_tempalte = \"asset-{assetId}\"\n",
    )
    .unwrap();
    // The typo is the file's, though the environment touched `[source]` too.
    let out = command()
        .args(["--config", file.to_str().unwrap(), "check-config"])
        .env("AMS_THUMBNAILS_SOURCE__KIND", "storage")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("container_tempalte"), "{stderr}");
    // figment shows the path relative to the working directory when that is short
    // (`../.tmpXXXX/bad.toml` from a checkout in /tmp), else in full: either names the file.
    let folder = dir.path().file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(&format!("{folder}/bad.toml")), "{stderr}");
    assert!(!stderr.contains("environment"), "{stderr}");
    // A variable's mistake names that variable.
    let out = command()
        .args(["check-config"])
        .env("AMS_THUMBNAILS_CACHE__TTL", "soon")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("environment variable AMS_THUMBNAILS_CACHE__TTL"),
        "{stderr}"
    );
}

#[test]
fn healthcheck_asks_the_running_service_and_says_unhealthy_when_it_cannot() {
    let (mut child, addr, _lines) = serve(&[]);
    let port = addr.rsplit(':').next().unwrap().to_owned();
    // As the image runs it: listening on the wildcard address, probed on loopback.
    let ok = command()
        .args(["healthcheck"])
        .env("AMS_THUMBNAILS_SERVER__LISTEN", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
    let down = command()
        .args(["healthcheck"])
        .env("AMS_THUMBNAILS_SERVER__LISTEN", &addr)
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.contains("unhealthy") && stderr.contains("/healthz"),
        "{stderr}"
    );
}

#[test]
fn help_names_every_source_kind() {
    let out = command().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "`local`",
        "`storage`",
        "`ams`",
        "`mkio`",
        "MK.IO",
        "healthcheck",
    ] {
        assert!(text.contains(kind), "{kind} in {text}");
    }
}

/// Every configuration file shipped under `config/` passes `check-config` as it is.
#[test]
fn every_shipped_configuration_file_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = command()
                .args(["--config", path.to_str().unwrap(), "check-config"])
                .env_remove("MKIO_TOKEN")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "{checked} files");
}

#[test]
fn mkio_without_a_storage_account_says_why_it_is_needed() {
    let out = command()
        .args(["--config", "none", "check-config"])
        .env("AMS_THUMBNAILS_SOURCE__KIND", "mkio")
        .env("AMS_THUMBNAILS_SOURCE__PROJECT", "demo")
        .env("MKIO_TOKEN", "token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("storage.account") && stderr.contains("mkio"),
        "{stderr}"
    );
}
