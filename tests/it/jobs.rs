//! Thumbnail generation end to end, on both backends: the service asks the fake AMS (ARM) or
//! the fake MK.IO for a transform, an output asset and a job; the fake's job progresses on each
//! poll and, when it finishes, writes real images into Azurite, named as the backend names
//! them; the service then lists them and every URL it hands out loads from Azurite.

use crate::support;

use ams_thumbnails::Settings;
use serde_json::{Value, json};
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::fake_arm::{ArmOp, FakeArm, FakeAsset};
use support::fake_encoder::{JobOutcome, OutputSink, WriteRefusal};
use support::fake_entra::FakeEntra;
use support::fake_mkio::{DEFAULT_TOKEN, FakeMkio, FakeMkioAsset, FakeStorage, MkioOp};
use support::faults::RestFault;
use support::logs::Capture;
use support::seed::{create_container, get_blob, put_blob};
use support::{TestServer, assert_problem, tls};
use uuid::Uuid;

/// `test-admin-key`, and its SHA-256 (the only form the configuration holds).
const ADMIN_KEY: &str = "test-admin-key";
const ADMIN_KEY_SHA256: &str = "944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9";
/// `test-api-key` (role `api` only).
const API_KEY: &str = "test-api-key";

const ADAMS_ID: &str = "1b648c1a-2268-461d-a1da-742bde23db40";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn auth_toml() -> String {
    format!(
        r#"[auth]
allow_anonymous_signed_urls = true
api_keys = [
  {{ name = "admin", sha256 = "{ADMIN_KEY_SHA256}", roles = ["admin"] }},
  {{ name = "frontend", sha256 = "{}", roles = ["api"] }},
]
"#,
        sha256_hex(API_KEY)
    )
}

fn storage_toml(az: &Azurite) -> String {
    format!(
        r#"[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
auth = "account-key"
account_key = "{KEY}"
[links]
mode = "account-key-sas"
allow_http = true
"#,
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
    )
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn generate(
        &self,
        server: &TestServer,
        id: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(server.url(&format!("/assets/{id}/thumbnails:generate")))
            .header("x-api-key", ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn job(&self, server: &TestServer, location: &str) -> reqwest::Response {
        self.http
            .get(server.url(location))
            .header("x-api-key", ADMIN_KEY)
            .send()
            .await
            .unwrap()
    }
}

/// The answer's job, after checking the headers every job answer has.
async fn job_answer(response: reqwest::Response, status: u16) -> (Value, Option<String>) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let retry_after = response.headers().get("retry-after").cloned();
    let job: Value = response.json().await.unwrap();
    let state = job["state"].as_str().unwrap();
    let is_final = matches!(state, "Finished" | "Error" | "Canceled");
    assert_eq!(
        retry_after.is_some(),
        !is_final,
        "Retry-After only while running: {job}"
    );
    if let Some(location) = &location {
        assert_eq!(job["links"]["self"], location.as_str());
    }
    (job, location)
}

/// Polls `location` until the job is final; returns every state seen and the final job.
async fn poll(client: &Client, server: &TestServer, location: &str) -> (Vec<String>, Value) {
    let mut states = Vec::new();
    for _ in 0..10 {
        let (job, _) = job_answer(client.job(server, location).await, 200).await;
        states.push(job["state"].as_str().unwrap().to_owned());
        if matches!(
            job["state"].as_str(),
            Some("Finished" | "Error" | "Canceled")
        ) {
            return (states, job);
        }
    }
    panic!("the job never ended: {states:?}");
}

/// Lists the asset's thumbnails and fetches every URL from Azurite: each must serve `bytes`.
async fn assert_thumbnails_load(
    server: &TestServer,
    http: &reqwest::Client,
    asset: &str,
    bytes: &[u8],
) -> Value {
    let response = server.get(&format!("/assets/{asset}/thumbnails")).await;
    assert_eq!(response.status(), 200, "{asset}");
    let body: Value = response.json().await.unwrap();
    for t in body["thumbnails"].as_array().unwrap() {
        let url = t["url"].as_str().unwrap();
        support::sas::assert_least_privilege(
            url,
            &support::sas::Expect {
                allow_http: true,
                lifetime: std::time::Duration::from_secs(3600),
                clock_skew: std::time::Duration::from_secs(300),
            },
        );
        let (status, served) = get_blob(http, url).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(served.as_ref(), bytes, "{url}");
    }
    body
}

fn names(body: &Value) -> Vec<String> {
    body["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn sample(path: &str) -> Vec<u8> {
    std::fs::read(support::samples_dir().join(path)).unwrap()
}

const JPEG: &str = "builtin-preset/Thumbnail000001.jpg";
const PNG: &str = "virtual-folders/thumbnails/Thumbnail-harbour-000001.png";

// ---- AMS ----

struct Ams {
    logs: Capture,
    entra: FakeEntra,
    arm: FakeArm,
    az: Azurite,
    http: reqwest::Client,
}

async fn ams_world() -> Ams {
    let logs = support::logs::capture();
    let pki = tls::shared();
    let entra = FakeEntra::start_https(pki).await;
    let arm = FakeArm::start_https(pki).await;
    let az = Azurite::start_http().await;
    let http = reqwest::Client::new();
    arm.set_output_sink(OutputSink {
        blob_endpoint: az.blob_endpoint.clone(),
    });
    // An asset with a video and no thumbnails (encoded without a thumbnail preset).
    let adams = FakeAsset::new("ClimbingMountAdams", Uuid::parse_str(ADAMS_ID).unwrap())
        .alternate_id("CLIMB00002");
    create_container(&http, &az, &adams.container_name(), None).await;
    for (name, bytes, ct) in [
        (
            "ClimbingMountAdams_1280x720_3000.mp4",
            &b"(video bytes)"[..],
            "video/mp4",
        ),
        (
            "ClimbingMountAdams.ism",
            &b"<smil/>"[..],
            "application/vnd.ms-sstr+xml",
        ),
    ] {
        put_blob(&http, &az, &adams.container_name(), name, bytes, ct).await;
    }
    arm.add_asset(adams);
    // An asset with no video at all: its job fails.
    let empty = FakeAsset::new("EmptyUpload", Uuid::new_v4());
    create_container(&http, &az, &empty.container_name(), None).await;
    put_blob(
        &http,
        &az,
        &empty.container_name(),
        "notes.txt",
        b"no video",
        "text/plain",
    )
    .await;
    arm.add_asset(empty);
    Ams {
        logs,
        entra,
        arm,
        az,
        http,
    }
}

fn ams_settings(w: &Ams, extra: &str) -> Settings {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[source]
kind = "ams"
subscription_id = "{sub}"
resource_group = "{rg}"
account_name = "{account}"
arm_endpoint = "{arm}"
{storage}
{auth}
[credential]
kind = "client-secret"
tenant_id = "{tenant}"
client_id = "{client_id}"
client_secret = "{secret}"
authority_host = "{authority}"
[upstream]
ca_file = "{ca}"
max_retries = 3
retry_budget = "3s"
{extra}
"#,
        sub = w.arm.subscription_id(),
        rg = w.arm.resource_group(),
        account = w.arm.account(),
        arm = w.arm.base_url(),
        storage = storage_toml(&w.az),
        auth = auth_toml(),
        tenant = w.entra.tenant_id(),
        client_id = w.entra.client_id(),
        secret = w.entra.client_secret(),
        authority = w.entra.authority_host(),
        ca = tls::shared().ca_pem.display(),
    );
    Settings::from_toml(&toml).expect("AMS settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ams_generates_thumbnails_that_then_resolve_and_load() {
    let w = ams_world().await;
    let server = TestServer::start(ams_settings(&w, "")).await;
    let scrape = || async { server.get("/metrics").await.text().await.unwrap() };
    let metrics_before = scrape().await;
    let client = Client::new();
    let jpeg = sample(JPEG);
    // The fake's jobs advance one step per GET, and a repeated generate GETs the job first:
    // enough steps that the three repeats below still find it running.
    w.arm.set_job_steps(5);

    // Before: the asset resolves, with no thumbnails.
    let before = assert_thumbnails_load(&server, &w.http, "ClimbingMountAdams", &jpeg).await;
    assert!(names(&before).is_empty(), "{before}");

    // Generate (every default): 202, Location, the job Queued.
    let (job, location) = job_answer(
        client.generate(&server, "ClimbingMountAdams", None).await,
        202,
    )
    .await;
    let location = location.expect("Location");
    let name = job["name"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/jobs/{name}"));
    assert!(name.starts_with("ams-thumbnails-"), "{name}");
    assert_eq!(job["state"], "Queued");
    assert_eq!(job["backend"], "ams");
    assert_eq!(job["inputAsset"], "ClimbingMountAdams");
    let output = job["outputAsset"].as_str().unwrap().to_owned();
    let transform = job["transform"].as_str().unwrap().to_owned();
    assert_eq!(
        output,
        format!(
            "ClimbingMountAdams-thumbnails-{}",
            transform.trim_start_matches("ams-thumbnails-")
        )
    );
    assert_eq!(job.get("links").and_then(|l| l.get("thumbnails")), None);
    // What the service sent: a StandardEncoderPreset with one JpgImage and its JpgFormat.
    let sent = w.arm.transform(&transform).expect("the transform was PUT");
    let preset = &sent["outputs"][0]["preset"];
    assert_eq!(
        preset["@odata.type"],
        "#Microsoft.Media.StandardEncoderPreset"
    );
    assert_eq!(
        preset["codecs"][0]["@odata.type"],
        "#Microsoft.Media.JpgImage"
    );
    assert_eq!(
        (
            &preset["codecs"][0]["start"],
            &preset["codecs"][0]["step"],
            &preset["codecs"][0]["range"]
        ),
        (&json!("0%"), &json!("10%"), &json!("100%"))
    );
    assert_eq!(
        preset["formats"][0]["filenamePattern"],
        "{Basename}_{Label}_{Index}{Extension}"
    );
    assert!(
        w.arm.asset(&output).is_some(),
        "the output asset exists first"
    );
    let calls = |arm: &FakeArm| {
        [ArmOp::PutTransform, ArmOp::PutAsset, ArmOp::PutJob].map(|op| arm.hits(op))
    };
    assert_eq!(calls(&w.arm), [1, 1, 1]);

    // The output asset, asked for while the job runs: empty (and cached so).
    let early = assert_thumbnails_load(&server, &w.http, &output, &jpeg).await;
    assert!(names(&early).is_empty());

    // A repeat while the job runs: the same job, nothing new submitted. By the alternate id too.
    for id in ["ClimbingMountAdams", "CLIMB00002", ADAMS_ID] {
        let (again, again_location) =
            job_answer(client.generate(&server, id, None).await, 202).await;
        assert_eq!(again["name"], name.as_str(), "{id}");
        assert!(
            matches!(again["state"].as_str(), Some("Scheduled" | "Processing")),
            "{again}"
        );
        assert_eq!(again_location.as_deref(), Some(location.as_str()));
    }
    assert_eq!(calls(&w.arm), [1, 1, 1], "a repeat submits nothing");

    // Poll: still running, then Finished with a link to the output's thumbnails.
    let (states, done) = poll(&client, &server, &location).await;
    let (last, running) = states.split_last().unwrap();
    assert_eq!(last, "Finished");
    assert!(
        !running.is_empty()
            && running
                .iter()
                .all(|s| s == "Processing" || s == "Scheduled"),
        "{states:?}"
    );
    assert_eq!(done["progress"], 100);
    let link = done["links"]["thumbnails"].as_str().unwrap();
    assert_eq!(link, format!("/assets/{output}/thumbnails"));

    // The output's cache entry was dropped: the generated images are listed at once, and load.
    let after = assert_thumbnails_load(&server, &w.http, &output, &jpeg).await;
    let expected: Vec<String> = (1..=10)
        .map(|i| format!("ClimbingMountAdams_1280x720_3000_Thumbnail_{i:06}.jpg"))
        .collect();
    assert_eq!(names(&after), expected, "{after}");
    let indexes: Vec<u64> = after["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (1..=10).collect::<Vec<_>>());

    // A repeat after it finished: 200 with the finished job; still nothing new.
    let (finished, _) = job_answer(
        client.generate(&server, "ClimbingMountAdams", None).await,
        200,
    )
    .await;
    assert_eq!(finished["state"], "Finished");
    assert_eq!(calls(&w.arm), [1, 1, 1]);

    // Another specification is another transform, output and job; the transform is shared.
    let (png, _) = job_answer(
        client
            .generate(
                &server,
                "ClimbingMountAdams",
                Some(json!({"format": "png", "step": "PT30S", "width": "320", "height": "180"})),
            )
            .await,
        202,
    )
    .await;
    assert_ne!(png["name"], name.as_str());
    assert_ne!(png["outputAsset"], output.as_str());
    let png_location = png["links"]["self"].as_str().unwrap().to_owned();
    let (_, png_done) = poll(&client, &server, &png_location).await;
    assert_eq!(png_done["state"], "Finished");
    let png_body = assert_thumbnails_load(
        &server,
        &w.http,
        png_done["outputAsset"].as_str().unwrap(),
        &sample(PNG),
    )
    .await;
    // PT0S and PT30S within the 60 s the fake's videos last.
    assert_eq!(names(&png_body).len(), 2, "{png_body}");
    assert_eq!(calls(&w.arm), [2, 2, 2]);

    // Other tests share the recorder: what this test did is at least the increase.
    let metrics = scrape().await;
    let increase = |name: &str, labels: &[(&str, &str)]| {
        support::metric(&metrics, name, labels) - support::metric(&metrics_before, name, labels)
    };
    let submitted = "thumbnail_jobs_submitted_total";
    let ams = ("backend", "ams");
    assert!(
        increase(submitted, &[ams, ("result", "created")]) >= 2.0,
        "{metrics}"
    );
    assert!(increase(submitted, &[ams, ("result", "existing")]) >= 4.0);
    assert!(
        increase(
            "thumbnail_jobs_completed_total",
            &[ams, ("state", "Finished")]
        ) >= 2.0
    );
    assert!(increase("upstream_requests_total", &[ams, ("operation", "put_job")]) >= 2.0);
    w.logs.assert_no_secrets(Some(&w.entra));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ams_failed_jobs_are_reported_with_their_cause_and_retried_under_a_new_name() {
    let w = ams_world().await;
    let server = TestServer::start(ams_settings(&w, "")).await;
    let client = Client::new();

    let (job, location) =
        job_answer(client.generate(&server, "EmptyUpload", None).await, 202).await;
    let location = location.unwrap();
    let (states, failed) = poll(&client, &server, &location).await;
    assert_eq!(states, ["Processing", "Error"]);
    assert_eq!(failed["error"]["code"], "ContentMalformed", "{failed}");
    assert_eq!(failed["error"]["category"], "Content");
    assert_eq!(failed["error"]["retry"], "DoNotRetry");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("video"),
        "{failed}"
    );
    assert_eq!(failed.get("links").and_then(|l| l.get("thumbnails")), None);

    // Asking again starts a new attempt under the next name; the output asset is reused.
    let (second, second_location) =
        job_answer(client.generate(&server, "EmptyUpload", None).await, 202).await;
    assert_eq!(
        second["name"].as_str().unwrap(),
        format!("{}-2", job["name"].as_str().unwrap())
    );
    assert_eq!(second["outputAsset"], job["outputAsset"]);
    assert_ne!(second_location.unwrap(), location);
    assert_eq!(w.arm.hits(ArmOp::PutJob), 2);

    // Five failed attempts: the service stops submitting and says why.
    let (_, second_done) = poll(&client, &server, second["links"]["self"].as_str().unwrap()).await;
    assert_eq!(second_done["state"], "Error");
    for attempt in 3..=5 {
        let (next, next_location) =
            job_answer(client.generate(&server, "EmptyUpload", None).await, 202).await;
        assert_eq!(
            next["name"].as_str().unwrap(),
            format!("{}-{attempt}", job["name"].as_str().unwrap())
        );
        let (_, done) = poll(&client, &server, &next_location.unwrap()).await;
        assert_eq!(done["state"], "Error");
    }
    let problem = assert_problem(
        client.generate(&server, "EmptyUpload", None).await,
        409,
        "generation-failed",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("ContentMalformed"),
        "{problem}"
    );
    assert_eq!(w.arm.hits(ArmOp::PutJob), 5);

    // Jobs the backend does not know, and names this service never gives.
    let unknown = format!("{}-3", job["name"].as_str().unwrap())
        .replace("ams-thumbnails-", "ams-thumbnails-");
    let _ = unknown;
    let ghost = "/jobs/ams-thumbnails-0123abcd-0123456789ab";
    assert_problem(client.job(&server, ghost).await, 404, "job-not-found").await;
    assert_problem(
        client.job(&server, "/jobs/job1").await,
        400,
        "invalid-parameter",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ams_generation_refused_by_the_account_is_a_clear_problem_and_resolution_goes_on() {
    let w = ams_world().await;
    let server = TestServer::start(ams_settings(&w, "")).await;
    let client = Client::new();
    // Status and code are examples: AMS published no error for its retirement. ARM's envelope.
    for (status, code) in [(400, "BadRequest"), (403, "AuthorizationFailed")] {
        w.arm.set_writes_refused(Some(WriteRefusal {
            status,
            code: code.into(),
            message: "Azure Media Services is retired: this account accepts no writes.".into(),
        }));
        let problem = assert_problem(
            client.generate(&server, "ClimbingMountAdams", None).await,
            409,
            "generation-refused",
        )
        .await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("HTTP {status} {code}")),
            "{detail}"
        );
        assert!(detail.contains("accepts no writes"), "{detail}");
        assert!(detail.contains("create the transform"), "{detail}");
    }
    assert_eq!(w.arm.hits(ArmOp::PutJob), 0);
    // Reads still work: the asset resolves as before.
    assert_eq!(
        server
            .get("/assets/ClimbingMountAdams/thumbnails")
            .await
            .status(),
        200
    );

    // Who may generate: an admin key only; bad bodies name the field; unknown assets are 404.
    let http = reqwest::Client::new();
    let url = server.url("/assets/ClimbingMountAdams/thumbnails:generate");
    assert_problem(http.post(&url).send().await.unwrap(), 401, "unauthorized").await;
    assert_problem(
        http.post(&url)
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    w.arm.set_writes_refused(None);
    let problem = assert_problem(
        client
            .generate(&server, "ClimbingMountAdams", Some(json!({"step": "0%"})))
            .await,
        400,
        "invalid-body",
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().starts_with("step:"),
        "{problem}"
    );
    assert_problem(
        client
            .generate(
                &server,
                "ClimbingMountAdams",
                Some(json!({"colour": "red"})),
            )
            .await,
        400,
        "invalid-body",
    )
    .await;
    let text = http
        .post(&url)
        .header("x-api-key", ADMIN_KEY)
        .header("content-type", "text/plain")
        .body("start=0")
        .send()
        .await
        .unwrap();
    assert_problem(text, 415, "unsupported-media-type").await;
    assert_problem(
        client.generate(&server, "NoSuchAsset", None).await,
        404,
        "asset-not-found",
    )
    .await;
    assert_eq!(w.arm.hits(ArmOp::PutTransform), 2, "only the refused PUTs");
}

// ---- MK.IO ----

struct Mkio {
    logs: Capture,
    mkio: FakeMkio,
    az: Azurite,
    http: reqwest::Client,
}

async fn mkio_world() -> Mkio {
    let logs = support::logs::capture();
    let pki = tls::shared();
    let mkio = FakeMkio::start_https(pki).await;
    let az = Azurite::start_http().await;
    let http = reqwest::Client::new();
    mkio.set_output_sink(OutputSink {
        blob_endpoint: az.blob_endpoint.clone(),
    });
    mkio.add_storage(FakeStorage::azure(
        "primary-azure",
        az.blob_endpoint.clone(),
    ));
    create_container(&http, &az, "mkio-media", None).await;
    put_blob(
        &http,
        &az,
        "mkio-media",
        "videos/intro/intro.mp4",
        b"(video bytes)",
        "video/mp4",
    )
    .await;
    // Another asset's files in the same container: not the input's.
    put_blob(
        &http,
        &az,
        "mkio-media",
        "videos/outro/outro.mp4",
        b"(video)",
        "video/mp4",
    )
    .await;
    mkio.add_asset(
        FakeMkioAsset::new("intro", Uuid::new_v4())
            .alternate_id("cms-7")
            .container("mkio-media")
            .sub_path("videos/intro")
            .storage(Some("primary-azure")),
    );
    Mkio {
        logs,
        mkio,
        az,
        http,
    }
}

fn mkio_settings(w: &Mkio) -> Settings {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[source]
kind = "mkio"
base_url = "{base}"
project = "{project}"
token = "{DEFAULT_TOKEN}"
{storage}
{auth}
[upstream]
ca_file = "{ca}"
max_retries = 3
retry_budget = "3s"
"#,
        base = w.mkio.base_url(),
        project = w.mkio.project(),
        storage = storage_toml(&w.az),
        auth = auth_toml(),
        ca = tls::shared().ca_pem.display(),
    );
    Settings::from_toml(&toml).expect("MK.IO settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkio_generates_thumbnails_and_a_sprite_that_then_resolve_and_load() {
    let w = mkio_world().await;
    let server = TestServer::start(mkio_settings(&w)).await;
    let client = Client::new();
    // One more step than the default: the repeat below GETs the job once.
    w.mkio.set_job_steps(3);

    // By alternate id, PNG thumbnails plus a 5-column sprite.
    let (job, location) = job_answer(
        client
            .generate(
                &server,
                "cms-7",
                Some(json!({"format": "PNG", "spriteColumns": 5})),
            )
            .await,
        202,
    )
    .await;
    assert_eq!(job["backend"], "mkio");
    assert_eq!(job["inputAsset"], "intro");
    let output = job["outputAsset"].as_str().unwrap().to_owned();
    let sent = w
        .mkio
        .transform(job["transform"].as_str().unwrap())
        .expect("the transform was PUT");
    let preset = &sent["outputs"][0]["preset"];
    assert_eq!(preset["@odata.type"], "#MediaKind.ThumbnailGeneratorPreset");
    assert_eq!(preset["thumbnails"][0]["format"], "Png");
    assert_eq!(preset["thumbnails"][1]["spriteColumn"], 5);
    // The output asset: in the input's storage instance, a container of its own.
    let created = w.mkio.asset(&output).expect("the output asset was PUT");
    assert_eq!(created.storage.as_deref(), Some("primary-azure"));

    // Idempotent repeat, by name this time.
    let (again, _) = job_answer(
        client
            .generate(
                &server,
                "intro",
                Some(json!({"format": "png", "spriteColumns": 5})),
            )
            .await,
        202,
    )
    .await;
    assert_eq!(again["name"], job["name"]);
    assert_eq!(w.mkio.hits(MkioOp::PutJob), 1);

    let (states, done) = poll(&client, &server, &location.unwrap()).await;
    assert_eq!(states, ["Processing", "Finished"]);
    let body = assert_thumbnails_load(&server, &w.http, &output, &sample(PNG)).await;
    let expected: Vec<String> = (1..=10)
        .map(|i| format!("intro_Thumbnail{i:06}.png"))
        .collect();
    assert_eq!(names(&body), expected, "{body}");
    assert_eq!(
        done["links"]["thumbnails"],
        format!("/assets/{output}/thumbnails")
    );
    // The sprite became the storyboard; its URL loads too.
    let storyboard: Value = server
        .get(&format!("/assets/{output}/storyboard.json"))
        .await
        .json()
        .await
        .unwrap();
    let sprite = storyboard["url"]
        .as_str()
        .unwrap_or_else(|| panic!("a sprite URL in {storyboard}"));
    assert_eq!(
        storyboard["tiles"].as_array().unwrap().len(),
        10,
        "{storyboard}"
    );
    let (status, bytes) = get_blob(&w.http, sprite).await;
    assert_eq!((status, bytes.as_ref()), (200, sample(JPEG).as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkio_failures_and_refusals_are_reported() {
    let w = mkio_world().await;
    let server = TestServer::start(mkio_settings(&w)).await;
    let client = Client::new();

    w.mkio.set_next_job_outcome(JobOutcome::Fail {
        code: "ServiceTransientError".into(),
        message: "The encoder restarted; try again.".into(),
        category: "Service".into(),
        retry: "MayRetry".into(),
    });
    let (_, location) = job_answer(client.generate(&server, "intro", None).await, 202).await;
    let (_, failed) = poll(&client, &server, &location.unwrap()).await;
    assert_eq!(failed["state"], "Error");
    assert_eq!(
        failed["error"],
        json!({
            "code": "ServiceTransientError",
            "message": "The encoder restarted; try again.",
            "category": "Service",
            "retry": "MayRetry",
        })
    );
    // The retry the backend allows: a new attempt, which finishes.
    let (second, second_location) =
        job_answer(client.generate(&server, "intro", None).await, 202).await;
    assert!(second["name"].as_str().unwrap().ends_with("-2"));
    let (_, done) = poll(&client, &server, &second_location.unwrap()).await;
    assert_eq!(done["state"], "Finished");
    let body = assert_thumbnails_load(
        &server,
        &w.http,
        done["outputAsset"].as_str().unwrap(),
        &sample(JPEG),
    )
    .await;
    assert_eq!(names(&body).len(), 10);

    // A read-only token: generation is refused, clearly; resolution goes on.
    w.mkio.set_writes_refused(Some(WriteRefusal {
        status: 403,
        code: "Forbidden".into(),
        message: "This token is read-only.".into(),
    }));
    let problem = assert_problem(
        client
            .generate(&server, "intro", Some(json!({"step": "PT5S"})))
            .await,
        409,
        "generation-refused",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("HTTP 403 Forbidden: This token is read-only."),
        "{problem}"
    );
    assert_eq!(server.get("/assets/intro/thumbnails").await.status(), 200);
    let logs = w.logs.text();
    assert!(!logs.contains(DEFAULT_TOKEN), "the MK.IO token in the logs");
}

impl Client {
    async fn cancel(
        &self,
        server: &TestServer,
        name: &str,
        key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.http.delete(server.url(&format!("/jobs/{name}")));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send().await.unwrap()
    }
}

/// `DELETE /jobs/{name}` on a running job: the backend's cancel is called once, the job ends
/// `Canceled`, a repeat (or a cancel of a finished job) calls nothing, and the next generate is
/// a new attempt. `cancel_hits` counts the backend's cancel calls.
async fn cancel_round_trip(server: &TestServer, asset: &str, cancel_hits: impl Fn() -> usize) {
    let client = Client::new();
    let (job, location) = job_answer(client.generate(server, asset, None).await, 202).await;
    let name = job["name"].as_str().unwrap().to_owned();
    // Admin only.
    assert_problem(
        client.cancel(server, &name, None).await,
        401,
        "unauthorized",
    )
    .await;
    assert_problem(
        client.cancel(server, &name, Some(API_KEY)).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(cancel_hits(), 0);
    let response = client.cancel(server, &name, Some(ADMIN_KEY)).await;
    let status = response.status().as_u16();
    let (canceled, _) = job_answer(response, status).await;
    assert!(
        (status == 202 && canceled["state"] == "Canceling")
            || (status == 200 && canceled["state"] == "Canceled"),
        "{status} {canceled}"
    );
    assert_eq!(cancel_hits(), 1);
    let (_, done) = poll(&client, server, &location.unwrap()).await;
    assert_eq!(done["state"], "Canceled", "{done}");
    assert_eq!(done.get("links").and_then(|l| l.get("thumbnails")), None);
    // Final: answered as is, nothing asked of the backend.
    let (again, _) = job_answer(client.cancel(server, &name, Some(ADMIN_KEY)).await, 200).await;
    assert_eq!(again["state"], "Canceled");
    assert_eq!(cancel_hits(), 1);
    // Names: not ours → 400; ours but unknown → 404.
    assert_problem(
        client
            .cancel(server, "not-one-of-ours", Some(ADMIN_KEY))
            .await,
        400,
        "invalid-parameter",
    )
    .await;
    let unknown = format!("{}-2", name);
    assert_problem(
        client.cancel(server, &unknown, Some(ADMIN_KEY)).await,
        404,
        "job-not-found",
    )
    .await;
    // A canceled job is retried under the next name, which runs to the end.
    let (second, second_location) =
        job_answer(client.generate(server, asset, None).await, 202).await;
    assert_eq!(second["name"], format!("{name}-2"));
    let (_, done) = poll(&client, server, &second_location.unwrap()).await;
    assert_eq!(done["state"], "Finished", "{done}");
    let (finished, _) = job_answer(
        client
            .cancel(server, done["name"].as_str().unwrap(), Some(ADMIN_KEY))
            .await,
        200,
    )
    .await;
    assert_eq!(
        finished["state"], "Finished",
        "canceling a finished job changes nothing"
    );
    assert_eq!(cancel_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ams_jobs_are_canceled_with_cancel_job_and_writes_map_as_reads() {
    let w = ams_world().await;
    let server = TestServer::start(ams_settings(&w, "")).await;
    w.arm.set_job_steps(5);
    cancel_round_trip(&server, "ClimbingMountAdams", || {
        w.arm.hits(ArmOp::CancelJob)
    })
    .await;

    // A refused cancel is a clear 409, like any refused write.
    let client = Client::new();
    w.arm.set_job_steps(50);
    let (job, _) = job_answer(
        client
            .generate(&server, "ClimbingMountAdams", Some(json!({"step": "PT7S"})))
            .await,
        202,
    )
    .await;
    w.arm.set_writes_refused(Some(WriteRefusal {
        status: 403,
        code: "AuthorizationFailed".into(),
        message: "no cancelJob/action for this identity".into(),
    }));
    let problem = assert_problem(
        client
            .cancel(&server, job["name"].as_str().unwrap(), Some(ADMIN_KEY))
            .await,
        409,
        "generation-refused",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("cancel the job"),
        "{problem}"
    );
    w.arm.set_writes_refused(None);

    // Writes map as reads: a 404 (the account or transform gone) is 404, a 401 (the
    // credential refused) is 503 with the configuration blamed.
    w.arm
        .push_fault(ArmOp::PutTransform, RestFault::Status(404));
    let problem = assert_problem(
        client
            .generate(&server, "ClimbingMountAdams", Some(json!({"step": "PT9S"})))
            .await,
        404,
        "asset-not-found",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("create the transform"),
        "{problem}"
    );
    w.arm
        .push_fault(ArmOp::PutTransform, RestFault::Status(401));
    let problem = assert_problem(
        client
            .generate(&server, "ClimbingMountAdams", Some(json!({"step": "PT9S"})))
            .await,
        503,
        "upstream-unavailable",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("configuration"),
        "{problem}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkio_jobs_are_canceled_with_cancel_job_and_writes_map_as_reads() {
    let w = mkio_world().await;
    let server = TestServer::start(mkio_settings(&w)).await;
    w.mkio.set_job_steps(5);
    cancel_round_trip(&server, "intro", || w.mkio.hits(MkioOp::CancelJob)).await;
    let client = Client::new();
    w.mkio.push_fault(MkioOp::PutJob, RestFault::Status(404));
    assert_problem(
        client
            .generate(&server, "intro", Some(json!({"step": "PT9S"})))
            .await,
        404,
        "asset-not-found",
    )
    .await;
    w.mkio
        .push_fault(MkioOp::PutTransform, RestFault::Status(401));
    assert_problem(
        client
            .generate(&server, "intro", Some(json!({"step": "PT9S"})))
            .await,
        503,
        "upstream-unavailable",
    )
    .await;
    server.stop().await.unwrap();
}
