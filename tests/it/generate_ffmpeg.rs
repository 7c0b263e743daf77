//! The ffmpeg encoder end to end, with Debian's ffmpeg (installed by the test command) and
//! videos ffmpeg makes here: each second of a test video is one solid colour, so a test can
//! tell which frame a thumbnail (or a sprite tile) really is. On `local` (a folder of the
//! test's own) and on `storage` against Azurite (every URL the service gives is fetched):
//! frame times, the sprite's order, idempotency, a corrupt input, a missing video, a refused
//! write, a cancel (on the replica that runs the job and through another), a replica killed
//! mid-job, and two replicas asked for the same job.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ams_thumbnails::Settings;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::azurite::{ACCOUNT, Azurite, KEY};
use crate::support::fault_proxy::{Fault, FaultProxy, Target};
use crate::support::seed::{create_container, get_blob, put_blob};
use crate::support::{self, TestServer};

const ADMIN_KEY: &str = "test-admin-key";
const ADMIN_KEY_SHA256: &str = "944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9";

fn auth_toml() -> String {
    format!(
        "[auth]\nallow_anonymous_signed_urls = true\napi_keys = [{{ name = \"admin\", sha256 = \"{ADMIN_KEY_SHA256}\", roles = [\"admin\"] }}]\n"
    )
}

/// The colour of second `s` of a test video.
fn colour_at(s: u32) -> [i32; 3] {
    [
        (s * 67 % 256) as i32,
        (s * 151 % 256) as i32,
        (s * 199 % 256) as i32,
    ]
}

/// A `seconds`-long 320x180 H.264 video whose picture is `colour_at(second)`.
fn make_video(path: &Path, seconds: u32) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=black:s=320x180:r=25:d={seconds}"))
        .args([
            "-vf",
            "geq=r='mod(floor(T)*67\\,256)':g='mod(floor(T)*151\\,256)':b='mod(floor(T)*199\\,256)'",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "50",
        ])
        .arg(path)
        .status()
        .expect("ffmpeg runs (scripts/test installs it)");
    assert!(status.success(), "the test video is made");
}

/// The mean colour of an image (or of the region `crop` = `w:h:x:y` of it), through ffmpeg.
fn colour_of(image: &[u8], crop: Option<&str>) -> [i32; 3] {
    let filter = match crop {
        Some(c) => format!("crop={c},scale=1:1"),
        None => "scale=1:1".to_owned(),
    };
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "image2pipe", "-i", "-", "-vf"])
        .arg(filter)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(image).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && out.stdout.len() == 3, "decoded");
    [
        i32::from(out.stdout[0]),
        i32::from(out.stdout[1]),
        i32::from(out.stdout[2]),
    ]
}

/// The image shows second `s` (JPEG and YUV shift colours a little; neighbouring seconds are
/// far apart).
fn assert_second(image: &[u8], crop: Option<&str>, s: u32, what: &str) {
    let got = colour_of(image, crop);
    let want = colour_at(s);
    let distance: i32 = got.iter().zip(want).map(|(g, w)| (g - w).abs()).sum();
    assert!(
        distance <= 40,
        "{what}: colour {got:?}, second {s} is {want:?}"
    );
    if s > 0 {
        let before = colour_at(s - 1);
        let off: i32 = got.iter().zip(before).map(|(g, w)| (g - w).abs()).sum();
        assert!(off > 40, "{what}: looks like second {}", s - 1);
    }
}

/// An ffmpeg that waits `delay` seconds first, and notes each run (and its pid) in `dir`.
fn slow_ffmpeg(dir: &Path, delay: u32) -> PathBuf {
    let real = which("ffmpeg");
    let script = dir.join("slow-ffmpeg");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ >> '{runs}'\nsleep {delay}\nexec '{real}' \"$@\"\n",
            runs = dir.join("runs").display(),
            real = real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn runs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn which(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} on PATH (scripts/test installs it)"))
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its parent) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Trusting the test CA too (Azurite over https).
    fn trusting(pki: &crate::support::tls::TestPki) -> Self {
        Self {
            http: crate::support::tls::client(pki),
        }
    }

    async fn generate(&self, server: &str, id: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{server}/assets/{id}/thumbnails:generate"))
            .header("x-api-key", ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn job(&self, server: &str, name: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{server}/jobs/{name}"))
            .header("x-api-key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn cancel(&self, server: &str, name: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(format!("{server}/jobs/{name}"))
            .header("x-api-key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Polls until the job is final (or `limit` passes); every state seen, and the last job.
    async fn until_final(&self, server: &str, name: &str, limit: Duration) -> (Vec<String>, Value) {
        let deadline = Instant::now() + limit;
        let mut states = Vec::new();
        loop {
            let (status, job) = self.job(server, name).await;
            assert_eq!(status, 200, "{job}");
            let state = job["state"].as_str().unwrap().to_owned();
            if states.last() != Some(&state) {
                states.push(state.clone());
            }
            if matches!(state.as_str(), "Finished" | "Error" | "Canceled") {
                return (states, job);
            }
            assert!(
                Instant::now() < deadline,
                "still {state} after {limit:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the job is in `state`.
    async fn until_state(&self, server: &str, name: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, job) = self.job(server, name).await;
            if job["state"] == state {
                return job;
            }
            assert!(Instant::now() < deadline, "never {state}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get_json(&self, url: &str) -> Value {
        let response = self.http.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.json().await.unwrap()
    }

    async fn bytes(&self, url: &str) -> Vec<u8> {
        let response = self.http.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.bytes().await.unwrap().to_vec()
    }
}

fn local_settings(root: &Path, extra: &str) -> Settings {
    support::settings_for_root(
        root,
        &format!("{}\n[jobs]\nlease = \"15s\"\n{extra}", auth_toml()),
    )
}

/// Checks an asset's listing after a job: every generated thumbnail has its time, each image
/// (fetched through its URL) is the frame of that time, and the sprite's tiles are in order.
async fn check_outputs(api: &Api, server: &str, id: &str, times: &[u32], sprite: bool) {
    let listing = api
        .get_json(&format!("{server}/assets/{id}/thumbnails"))
        .await;
    let generated: Vec<&Value> = listing["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().contains("_Thumbnail_"))
        .collect();
    assert_eq!(generated.len(), times.len(), "{listing}");
    for (i, (thumbnail, &t)) in generated.iter().zip(times).enumerate() {
        assert_eq!(thumbnail["index"], i + 1, "{thumbnail}");
        assert_eq!(
            thumbnail["time"].as_f64(),
            Some(f64::from(t)),
            "{thumbnail}"
        );
        let image = api.bytes(thumbnail["url"].as_str().unwrap()).await;
        assert_second(&image, None, t, &format!("thumbnail {}", i + 1));
    }
    if sprite {
        let board = api
            .get_json(&format!("{server}/assets/{id}/storyboard.json"))
            .await;
        let image = api.bytes(board["url"].as_str().unwrap()).await;
        let tiles = board["tiles"].as_array().unwrap();
        assert_eq!(tiles.len(), times.len(), "{board}");
        for (i, (tile, &t)) in tiles.iter().zip(times).enumerate() {
            assert_eq!(tile["start"].as_f64(), Some(f64::from(t)), "{tile}");
            // The middle of the tile, away from its edges.
            let (x, y, w, h) = (
                tile["x"].as_u64().unwrap(),
                tile["y"].as_u64().unwrap(),
                tile["w"].as_u64().unwrap(),
                tile["h"].as_u64().unwrap(),
            );
            let crop = format!("{}:{}:{}:{}", w / 2, h / 2, x + w / 4, y + h / 4);
            assert_second(&image, Some(&crop), t, &format!("sprite tile {}", i + 1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_generation_takes_each_frame_at_its_time_and_the_sprite_in_order() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("intro")).unwrap();
    make_video(&root.path().join("intro/intro.mp4"), 30);
    let server = TestServer::start(local_settings(root.path(), "")).await;
    let api = Api::new();
    let body = json!({"start": "PT2S", "step": "PT5S", "range": "PT24S", "width": "160", "height": "90", "spriteColumns": 3});
    let (status, job) = api.generate(&server.base, "intro", body.clone()).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["backend"], "ffmpeg");
    assert_eq!(job["state"], "Queued");
    assert_eq!(job["inputAsset"], "intro");
    assert_eq!(job["outputAsset"], "intro");
    let name = job["name"].as_str().unwrap().to_owned();
    // Asked again while it runs or after: the same job.
    let (status, again) = api.generate(&server.base, "intro", body.clone()).await;
    assert!(status == 200 || status == 202, "{again}");
    assert_eq!(again["name"], name.as_str());
    let (_, done) = api
        .until_final(&server.base, &name, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "Finished", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(
        done["links"]["thumbnails"], "/assets/intro/thumbnails",
        "{done}"
    );
    // Thumbnail i at start + (i-1)*step within the range: 2, 7, 12, 17, 22 (27 is past 2+24).
    check_outputs(&api, &server.base, "intro", &[2, 7, 12, 17, 22], true).await;
    let (status, again) = api.generate(&server.base, "intro", body).await;
    assert_eq!((status, again["state"].as_str()), (200, Some("Finished")));
    // A second specification runs as a job of its own, beside the first.
    let (status, other) = api
        .generate(
            &server.base,
            "intro",
            json!({"step": "PT10S", "format": "png"}),
        )
        .await;
    assert_eq!(status, 202, "{other}");
    assert_ne!(other["name"], name.as_str());
    let (_, done) = api
        .until_final(
            &server.base,
            other["name"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(done["state"], "Finished", "{done}");
    let files: Vec<String> = walk(root.path());
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".png")).count(),
        3,
        "0%, 10 s and 20 s of 30 s: {files:?}"
    );
    // Nothing outside the asset's folder, nothing left in the temporary directory.
    assert!(files.iter().all(|f| f.starts_with("intro/")), "{files:?}");
    server.stop().await.unwrap();
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_input_fails_as_content_malformed_and_a_missing_video_is_409() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("broken")).unwrap();
    std::fs::write(
        root.path().join("broken/broken.mp4"),
        b"this is not a video at all",
    )
    .unwrap();
    std::fs::create_dir(root.path().join("empty")).unwrap();
    std::fs::write(root.path().join("empty/notes.txt"), b"no video here").unwrap();
    let server = TestServer::start(local_settings(root.path(), "")).await;
    let api = Api::new();
    let (status, job) = api.generate(&server.base, "broken", json!({})).await;
    assert_eq!(status, 202, "{job}");
    let (_, done) = api
        .until_final(
            &server.base,
            job["name"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done["state"], "Error", "{done}");
    assert_eq!(done["error"]["code"], "ContentMalformed", "{done}");
    assert!(done.get("links").unwrap().get("thumbnails").is_none());
    let response = server
        .client
        .post(server.url("/assets/empty/thumbnails:generate"))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    support::assert_problem(response, 409, "no-video").await;
    let response = server
        .client
        .post(server.url("/assets/ghost/thumbnails:generate"))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    support::assert_problem(response, 404, "asset-not-found").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_ffmpeg_removes_partial_outputs_and_a_new_attempt_follows() {
    let root = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("clip")).unwrap();
    make_video(&root.path().join("clip/clip.mp4"), 10);
    let slow = slow_ffmpeg(tools.path(), 30);
    let extra = format!(
        "ffmpeg_path = \"{}\"\nffprobe_path = \"{}\"\n",
        slow.display(),
        which("ffprobe").display()
    );
    let server = TestServer::start(local_settings(root.path(), &extra)).await;
    let api = Api::new();
    let (_, job) = api
        .generate(&server.base, "clip", json!({"step": "PT2S"}))
        .await;
    let name = job["name"].as_str().unwrap().to_owned();
    api.until_state(&server.base, &name, "Processing").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(tools.path()).is_empty() {
        assert!(Instant::now() < deadline, "ffmpeg never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = runs(tools.path())[0];
    assert!(alive(pid));
    let (status, canceled) = api.cancel(&server.base, &name).await;
    assert!(status == 200 || status == 202, "{canceled}");
    let (_, done) = api
        .until_final(&server.base, &name, Duration::from_secs(10))
        .await;
    assert_eq!(done["state"], "Canceled", "{done}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "ffmpeg {pid} still runs after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let images: Vec<String> = walk(root.path())
        .into_iter()
        .filter(|f| f.ends_with(".jpg") || f.ends_with(".vtt") || f.ends_with(".cancel"))
        .collect();
    assert!(images.is_empty(), "{images:?}");
    // A cancel of a final job changes nothing.
    let (status, again) = api.cancel(&server.base, &name).await;
    assert_eq!((status, again["state"].as_str()), (200, Some("Canceled")));
    // Asked again: a new attempt, under the next name; the canceled one still answers.
    let (status, retry) = api
        .generate(&server.base, "clip", json!({"step": "PT2S"}))
        .await;
    assert_eq!(status, 202, "{retry}");
    let base = name.split('.').next().unwrap();
    assert!(
        retry["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}-2.")),
        "{retry}"
    );
    let (_, old) = api.job(&server.base, &name).await;
    assert_eq!(old["state"], "Canceled", "{old}");
    let _ = api
        .cancel(&server.base, retry["name"].as_str().unwrap())
        .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_job_leaves_the_job_to_the_next_one() {
    let root = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("clip")).unwrap();
    make_video(&root.path().join("clip/clip.mp4"), 10);
    let slow = slow_ffmpeg(tools.path(), 60);
    let port = free_port();
    let config = tools.path().join("replica.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[source]\nkind = \"local\"\nroot = \"{root}\"\n{auth}[jobs]\nlease = \"15s\"\nffmpeg_path = \"{slow}\"\nffprobe_path = \"{probe}\"\n",
            root = root.path().display(),
            auth = auth_toml(),
            slow = slow.display(),
            probe = which("ffprobe").display(),
        ),
    )
    .unwrap();
    let api = Api::new();
    let (mut replica, first) = replica_process(&api, &config, port).await;
    let (status, job) = api.generate(&first, "clip", json!({"step": "PT2S"})).await;
    assert_eq!(status, 202, "{job}");
    let name = job["name"].as_str().unwrap().to_owned();
    api.until_state(&first, &name, "Processing").await;
    // The replica dies mid-job (its ffmpeg too, as in a container that stops).
    replica.kill().unwrap();
    replica.wait().unwrap();
    for pid in runs(tools.path()) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    // Another replica (real ffmpeg) is asked about the job: it takes it over and finishes it.
    let server = TestServer::start(local_settings(root.path(), "")).await;
    let (status, seen) = api.job(&server.base, &name).await;
    assert_eq!(status, 200, "{seen}");
    assert_ne!(seen["state"], "Processing", "taken over at once: {seen}");
    let (_, done) = api
        .until_final(&server.base, &name, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "Finished", "{done}");
    check_outputs(&api, &server.base, "clip", &[0, 2, 4, 6, 8], false).await;
    let document: Value = serde_json::from_slice(
        &std::fs::read(root.path().join(format!(
            "clip/thumbnails/{}/ams-thumbnails-job.json",
            name.split('-').nth(2).unwrap()
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(document["takeovers"], 1, "{document}");
    server.stop().await.unwrap();
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The service as a process of its own (so that it can be killed), once it answers.
async fn replica_process(api: &Api, config: &Path, port: u16) -> (std::process::Child, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_ams-thumbnails"))
        .args(["--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while api
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the replica never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

// ---- storage, against Azurite ----

struct Storage {
    az: Azurite,
    http: reqwest::Client,
    id: Uuid,
}

impl Storage {
    async fn start(seconds: u32) -> Self {
        let az = Azurite::start_http().await;
        let http = reqwest::Client::new();
        let id = Uuid::new_v4();
        let container = format!("asset-{id}");
        create_container(&http, &az, &container, None).await;
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("v.mp4");
        make_video(&video, seconds);
        put_blob(
            &http,
            &az,
            &container,
            "Adams_320x180_400.mp4",
            &std::fs::read(&video).unwrap(),
            "video/mp4",
        )
        .await;
        put_blob(
            &http,
            &az,
            &container,
            "Adams.ism",
            b"<smil/>",
            "application/vnd.ms-sstr+xml",
        )
        .await;
        Self { az, http, id }
    }

    fn container(&self) -> String {
        format!("asset-{}", self.id)
    }

    fn settings(&self, endpoint: &str, extra: &str) -> Settings {
        let toml = format!("{}{extra}\n", self.settings_toml(endpoint));
        Settings::from_toml(&toml).expect("storage settings")
    }

    /// The settings as TOML, ending inside `[jobs]`.
    fn settings_toml(&self, endpoint: &str) -> String {
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[source]
kind = "storage"
container_template = "asset-{{assetId}}"
[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
auth = "account-key"
account_key = "{KEY}"
[links]
mode = "account-key-sas"
allow_http = true
{auth}
[jobs]
lease = "15s"
"#,
            auth = auth_toml(),
        )
    }

    fn endpoint(&self) -> String {
        self.az.blob_endpoint.replace(ACCOUNT, "{account}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_generation_writes_into_the_asset_and_every_url_loads_from_azurite() {
    let s = Storage::start(20).await;
    let server = TestServer::start(s.settings(&s.endpoint(), "")).await;
    let api = Api::new();
    let id = s.id.to_string();
    let (status, job) = api
        .generate(
            &server.base,
            &id,
            json!({"step": "PT4S", "width": "25%", "height": "25%", "spriteColumns": 2}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let name = job["name"].as_str().unwrap().to_owned();
    let (states, done) = api
        .until_final(&server.base, &name, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "Finished", "{states:?} {done}");
    check_outputs(&api, &server.base, &id, &[0, 4, 8, 12, 16], true).await;
    // The state document is in the asset's container, and holds no secret.
    let digest = name.split('-').nth(2).unwrap();
    let (status, document) = get_blob(
        &s.http,
        &crate::support::seed::blob_url_with_sas(
            &s.az,
            &s.container(),
            &format!("thumbnails/{digest}/ams-thumbnails-job.json"),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&document);
    assert!(!text.contains("sig=") && !text.contains(KEY), "{text}");
    let document: Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(document["input"], "Adams_320x180_400.mp4");
    assert_eq!(document["outputs"].as_array().unwrap().len(), 5);

    // A corrupt video in another asset: ContentMalformed, and nothing of the input's SAS in it.
    let broken = Uuid::new_v4();
    create_container(&s.http, &s.az, &format!("asset-{broken}"), None).await;
    put_blob(
        &s.http,
        &s.az,
        &format!("asset-{broken}"),
        "b.mp4",
        b"\x00\x00\x00\x18ftypmp42 garbage",
        "video/mp4",
    )
    .await;
    let (_, job) = api
        .generate(&server.base, &broken.to_string(), json!({}))
        .await;
    let (_, failed) = api
        .until_final(
            &server.base,
            job["name"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(failed["state"], "Error", "{failed}");
    assert_eq!(failed["error"]["code"], "ContentMalformed", "{failed}");
    let shown = failed.to_string();
    assert!(!shown.contains("sig=") && !shown.contains("se="), "{shown}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_storage_refuses_is_409_generation_refused() {
    let s = Storage::start(4).await;
    let proxy = FaultProxy::start(&s.az.blob_endpoint).await;
    let server = TestServer::start(s.settings(&proxy.endpoint_template(), "")).await;
    proxy.push_fault(Target::Writes, Fault::Status(403));
    let response = server
        .client
        .post(server.url(&format!("/assets/{}/thumbnails:generate", s.id)))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let problem = support::assert_problem(response, 409, "generation-refused").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("AuthorizationPermissionMismatch"),
        "{detail}"
    );
    assert!(detail.contains("Storage Blob Data Contributor"), "{detail}");
    // Resolution goes on.
    let (status, _) =
        crate::support::raw_get(&server.base, &format!("/assets/{}/thumbnails", s.id)).await;
    assert_eq!(status, 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_asked_for_one_job_run_it_once_and_either_cancels_it() {
    let s = Storage::start(10).await;
    let tools = tempfile::tempdir().unwrap();
    let slow = slow_ffmpeg(tools.path(), 4);
    let extra = format!(
        "ffmpeg_path = \"{}\"\nffprobe_path = \"{}\"\n",
        slow.display(),
        which("ffprobe").display()
    );
    let a = TestServer::start(s.settings(&s.endpoint(), &extra)).await;
    let b = TestServer::start(s.settings(&s.endpoint(), &extra)).await;
    let api = Api::new();
    let id = s.id.to_string();
    let body = json!({"step": "PT2S"});
    let (ra, rb) = tokio::join!(
        api.generate(&a.base, &id, body.clone()),
        api.generate(&b.base, &id, body.clone())
    );
    assert_eq!(ra.1["name"], rb.1["name"], "{ra:?} {rb:?}");
    let created = [ra.0, rb.0].iter().filter(|s| **s == 202).count();
    assert!(created >= 1, "{ra:?} {rb:?}");
    let name = ra.1["name"].as_str().unwrap().to_owned();
    // Either replica answers for it.
    let (_, done) = api
        .until_final(&b.base, &name, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "Finished", "{done}");
    let (_, seen) = api.job(&a.base, &name).await;
    assert_eq!(seen["state"], "Finished");
    assert_eq!(
        runs(tools.path()).len(),
        1,
        "one ffmpeg run for the two requests"
    );
    check_outputs(&api, &a.base, &id, &[0, 2, 4, 6, 8], false).await;
    check_outputs(&api, &b.base, &id, &[0, 2, 4, 6, 8], false).await;

    // Another specification, run by A, canceled through B: the marker reaches A.
    let (status, job) = api.generate(&a.base, &id, json!({"step": "PT1S"})).await;
    assert_eq!(status, 202, "{job}");
    let other = job["name"].as_str().unwrap().to_owned();
    api.until_state(&a.base, &other, "Processing").await;
    let (status, canceling) = api.cancel(&b.base, &other).await;
    assert_eq!(status, 202, "{canceling}");
    assert_eq!(canceling["state"], "Canceling");
    let (_, done) = api
        .until_final(&b.base, &other, Duration::from_secs(15))
        .await;
    assert_eq!(done["state"], "Canceled", "{done}");
    for pid in runs(tools.path()) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "ffmpeg {pid} outlived its cancel"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The first job's thumbnails are still listed, the canceled one left nothing.
    check_outputs(&api, &b.base, &id, &[0, 2, 4, 6, 8], false).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_storage_a_dead_replicas_lease_expires_and_another_takes_the_job_over() {
    let s = Storage::start(6).await;
    let tools = tempfile::tempdir().unwrap();
    let slow = slow_ffmpeg(tools.path(), 120);
    let port = free_port();
    let config = tools.path().join("replica.toml");
    let toml = format!(
        "{}ffmpeg_path = \"{}\"\nffprobe_path = \"{}\"\n",
        s.settings_toml(&s.endpoint()),
        slow.display(),
        which("ffprobe").display()
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, toml).unwrap();
    let api = Api::new();
    let (mut replica, first) = replica_process(&api, &config, port).await;
    let id = s.id.to_string();
    let (status, job) = api.generate(&first, &id, json!({"step": "PT2S"})).await;
    assert_eq!(status, 202, "{job}");
    let name = job["name"].as_str().unwrap().to_owned();
    api.until_state(&first, &name, "Processing").await;
    replica.kill().unwrap();
    replica.wait().unwrap();
    let killed_at = Instant::now();
    for pid in runs(tools.path()) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    // Another replica: while the dead one's lease (15 s) holds, the job is reported as is;
    // once it expired, the next request takes the job over.
    let server = TestServer::start(s.settings(&s.endpoint(), "")).await;
    let (_, seen) = api.job(&server.base, &name).await;
    assert_eq!(seen["state"], "Processing", "the lease still holds: {seen}");
    let (_, done) = api
        .until_final(&server.base, &name, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "Finished", "{done}");
    assert!(
        killed_at.elapsed() >= Duration::from_secs(10),
        "not before the lease could expire"
    );
    check_outputs(&api, &server.base, &id, &[0, 2, 4], false).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_entra_ffmpeg_reads_over_verified_https_with_a_user_delegation_sas() {
    use crate::support::fake_entra::FakeEntra;
    use crate::support::tls;
    let pki = tls::shared();
    let entra = FakeEntra::start_https(pki).await;
    let az = Azurite::start_https_oauth(pki).await;
    let client = tls::client(pki);
    let id = Uuid::new_v4();
    let container = format!("asset-{id}");
    create_container(&client, &az, &container, None).await;
    let dir = tempfile::tempdir().unwrap();
    make_video(&dir.path().join("v.mp4"), 6);
    put_blob(
        &client,
        &az,
        &container,
        "Clip_320x180_400.mp4",
        &std::fs::read(dir.path().join("v.mp4")).unwrap(),
        "video/mp4",
    )
    .await;
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:0"
[source]
kind = "storage"
[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
auth = "entra"
[links]
mode = "user-delegation-sas"
[credential]
kind = "client-secret"
tenant_id = "{tenant}"
client_id = "{client_id}"
client_secret = "{secret}"
authority_host = "{authority}"
[upstream]
ca_file = "{ca}"
{auth}
[jobs]
encoder = "ffmpeg"
"#,
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
        tenant = entra.tenant_id(),
        client_id = entra.client_id(),
        secret = entra.client_secret(),
        authority = entra.authority_host(),
        ca = pki.ca_pem.display(),
        auth = auth_toml(),
    );
    let server = TestServer::start(Settings::from_toml(&toml).unwrap()).await;
    let api = Api::trusting(pki);
    let (status, job) = api
        .generate(&server.base, &id.to_string(), json!({"step": "PT2S"}))
        .await;
    assert_eq!(status, 202, "{job}");
    let (_, done) = api
        .until_final(
            &server.base,
            job["name"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(done["state"], "Finished", "{done}");
    check_outputs(&api, &server.base, &id.to_string(), &[0, 2, 4], false).await;
    server.stop().await.unwrap();
}
