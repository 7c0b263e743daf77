//! AMS mode end to end: the fake ARM (shaped like the official examples) and the fake Entra
//! token endpoint over HTTPS, Azurite over HTTPS with OAuth, user delegation SAS and account-key
//! SAS URLs fetched back from Azurite. Every log line of the run, at debug level, is captured
//! and searched for secrets.

use crate::support;

use std::time::Duration;

use ams_thumbnails::Settings;
use futures::future::join_all;
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::fake_arm::{ArmOp, FakeArm, FakeAsset};
use support::fake_entra::{FakeEntra, TokenForm};
use support::faults::RestFault;
use support::logs::Capture;
use support::seed::{create_container, get_blob, put_blob};
use support::{TestServer, assert_problem, tls};
use uuid::Uuid;

const ASSET_ID: &str = "1b648c1a-2268-461d-a1da-742bde23db40";

fn assert_logs_hold_no_secrets(w: &World) {
    w.logs.assert_no_secrets(Some(&w.entra));
}

struct World {
    logs: Capture,
    entra: FakeEntra,
    arm: FakeArm,
    az: Azurite,
    client: reqwest::Client,
}

async fn world() -> World {
    let logs = support::logs::capture();
    let pki = tls::shared();
    let entra = FakeEntra::start_https(pki).await;
    let arm = FakeArm::start_https(pki).await;
    let az = Azurite::start_https_oauth(pki).await;
    let client = tls::client(pki);
    let container = format!("asset-{ASSET_ID}");
    create_container(&client, &az, &container, None).await;
    for i in 1..=3 {
        let name = format!("Thumbnail{i:06}.jpg");
        let bytes =
            std::fs::read(support::samples_dir().join("sprite-storyboard").join(&name)).unwrap();
        put_blob(&client, &az, &container, &name, &bytes, "image/jpeg").await;
    }
    put_blob(
        &client,
        &az,
        &container,
        "ClimbingMountAdams.ism",
        b"<smil/>",
        "application/vnd.ms-sstr+xml",
    )
    .await;
    arm.add_asset(
        FakeAsset::new("ClimbingMountAdams", Uuid::parse_str(ASSET_ID).unwrap())
            .alternate_id("CLIMB00002"),
    );
    arm.add_asset(
        FakeAsset::new("SecretMovie", Uuid::new_v4())
            .storage_encryption_format("MediaStorageClientEncryption"),
    );
    World {
        logs,
        entra,
        arm,
        az,
        client,
    }
}

fn ams_settings(w: &World, storage: &str, links: &str) -> Settings {
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
[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
{storage}
[links]
{links}
[auth]
allow_anonymous_signed_urls = true
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
"#,
        sub = w.arm.subscription_id(),
        rg = w.arm.resource_group(),
        account = w.arm.account(),
        arm = w.arm.base_url(),
        endpoint = w.az.blob_endpoint.replace(ACCOUNT, "{account}"),
        tenant = w.entra.tenant_id(),
        client_id = w.entra.client_id(),
        secret = w.entra.client_secret(),
        authority = w.entra.authority_host(),
        ca = tls::shared().ca_pem.display(),
    );
    Settings::from_toml(&toml).expect("AMS settings")
}

async fn assert_urls_serve_seeded_bytes(w: &World, body: &Value) {
    let thumbs = body["thumbnails"].as_array().unwrap();
    assert_eq!(thumbs.len(), 3, "{body}");
    for t in thumbs {
        let url = t["url"].as_str().unwrap();
        assert!(url.starts_with("https://"), "{url}");
        if !url.contains("sr=c") {
            // Default link settings: 1 h lifetime, 5 min skew, https only.
            support::sas::assert_least_privilege(
                url,
                &support::sas::Expect {
                    allow_http: false,
                    lifetime: Duration::from_secs(3600),
                    clock_skew: Duration::from_secs(300),
                },
            );
        }
        let (status, bytes) = get_blob(&w.client, url).await;
        assert_eq!(status, 200, "{url}");
        let name = t["name"].as_str().unwrap();
        let seeded =
            std::fs::read(support::samples_dir().join("sprite-storyboard").join(name)).unwrap();
        assert_eq!(bytes.as_ref(), seeded.as_slice(), "{name}");
        // One changed character of the signature: refused.
        let tampered = tamper_sig(url);
        assert_eq!(
            get_blob(&w.client, &tampered).await.0,
            403,
            "tampered {url}"
        );
        // The same SAS on another blob: refused.
        let other = url.replace(
            name,
            if name.ends_with("1.jpg") {
                "Thumbnail000002.jpg"
            } else {
                "Thumbnail000001.jpg"
            },
        );
        assert_eq!(get_blob(&w.client, &other).await.0, 403, "other blob");
    }
}

fn tamper_sig(url: &str) -> String {
    let (before, sig_and_rest) = url.split_once("sig=").expect("a signed URL");
    let mut chars: Vec<char> = sig_and_rest.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    format!("{before}sig={}", chars.into_iter().collect::<String>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ams_with_user_delegation_sas() {
    let w = world().await;
    let server = TestServer::start(ams_settings(
        &w,
        "auth = \"entra\"",
        "mode = \"user-delegation-sas\"",
    ))
    .await;

    // By name, by GUID (any case), by alternate id.
    for (id, gets, lists) in [
        ("ClimbingMountAdams", 1, 0),
        (&ASSET_ID.to_uppercase()[..], 2, 1),
        ("CLIMB00002", 3, 2),
    ] {
        let response = server.get(&format!("/assets/{id}/thumbnails")).await;
        assert_eq!(response.status(), 200, "{id}");
        let body: Value = response.json().await.unwrap();
        assert_urls_serve_seeded_bytes(&w, &body).await;
        let url = body["thumbnails"][0]["url"].as_str().unwrap();
        let q: Vec<(String, String)> = url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("sp").as_deref(), Some("r"));
        assert_eq!(get("sr").as_deref(), Some("b"));
        assert_eq!(get("spr").as_deref(), Some("https"));
        assert!(get("skoid").is_some(), "a user delegation SAS");
        assert!(body["expiresAt"].is_string());
        assert_eq!(w.arm.hits(ArmOp::Get), gets, "{id}");
        assert_eq!(w.arm.hits(ArmOp::List), lists, "{id}");
    }

    // Not found: Get 404, then the alternate-id filter finds nothing.
    assert_problem(
        server.get("/assets/NoSuchAsset/thumbnails").await,
        404,
        "asset-not-found",
    )
    .await;
    // Storage-encrypted: a clear 4xx, never a broken URL.
    let body = assert_problem(
        server.get("/assets/SecretMovie/thumbnails").await,
        409,
        "asset-unservable",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("encrypt"));
    // One token per audience, reused: the credential caches it.
    assert!(w.entra.token_requests(TokenForm::ClientCredentials) <= 2);
    assert_logs_hold_no_secrets(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ams_with_account_key_sas_over_https() {
    let w = world().await;
    let server = TestServer::start(ams_settings(
        &w,
        &format!("auth = \"account-key\"\naccount_key = \"{KEY}\""),
        "mode = \"account-key-sas\"",
    ))
    .await;
    let body: Value = server
        .get("/assets/ClimbingMountAdams/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    assert_urls_serve_seeded_bytes(&w, &body).await;
    assert!(
        body["thumbnails"][0]["url"]
            .as_str()
            .unwrap()
            .contains("spr=https&")
    );
    assert_logs_hold_no_secrets(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_cold_requests_make_one_arm_call() {
    use axum::body::Body;
    use tower::ServiceExt;
    let w = world().await;
    let (app, _state, probe) = support::app_with_probe(ams_settings(
        &w,
        "auth = \"entra\"",
        "mode = \"user-delegation-sas\"",
    ));
    let requests = (0..1000).map(|_| {
        let app = app.clone();
        let request = axum::http::Request::get("/assets/ClimbingMountAdams/thumbnails")
            .body(Body::empty())
            .unwrap();
        tokio::spawn(async move { app.oneshot(request).await.unwrap().status().as_u16() })
    });
    let statuses: Vec<u16> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", &statuses[..3]);
    assert_eq!(w.arm.total_hits(), 1, "exactly one ARM call");
    assert_eq!(
        probe.lists.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one listing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arm_throttling_forbidden_and_failures() {
    let w = world().await;
    let server = TestServer::start(ams_settings(
        &w,
        "auth = \"entra\"",
        "mode = \"user-delegation-sas\"",
    ))
    .await;
    let path = "/assets/ClimbingMountAdams/thumbnails";

    // 429 with a short Retry-After: waited out within the budget, then answered.
    w.arm.push_fault(
        ArmOp::Get,
        RestFault::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = std::time::Instant::now();
    assert_eq!(server.get(path).await.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    assert_eq!(w.arm.hits(ArmOp::Get), 2);
    server
        .state
        .resolver
        .invalidate(&ams_thumbnails::asset_id::AssetId::parse("ClimbingMountAdams").unwrap())
        .await;

    // 429 asking for longer than the budget: 503 with Retry-After, at once.
    w.arm.push_fault(
        ArmOp::Get,
        RestFault::TooManyRequests {
            retry_after_secs: Some(60),
        },
    );
    let started = std::time::Instant::now();
    let response = server.get(path).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(response.headers()["retry-after"], "60");
    assert_problem(response, 503, "upstream-unavailable").await;

    // 500 bursts are retried.
    w.arm.push_faults(ArmOp::Get, RestFault::Status(500), 2);
    assert_eq!(server.get(path).await.status(), 200);
    server
        .state
        .resolver
        .invalidate(&ams_thumbnails::asset_id::AssetId::parse("ClimbingMountAdams").unwrap())
        .await;

    // Malformed JSON: 502, not cached, recovers.
    w.arm.push_fault(ArmOp::Get, RestFault::MalformedJson);
    assert_problem(server.get(path).await, 502, "upstream-error").await;
    assert_eq!(server.get(path).await.status(), 200);
    server
        .state
        .resolver
        .invalidate(&ams_thumbnails::asset_id::AssetId::parse("ClimbingMountAdams").unwrap())
        .await;

    // Forbidden: 503 (misconfiguration), never "not found".
    w.arm.set_forbidden(true);
    assert_problem(server.get(path).await, 503, "upstream-unavailable").await;
    assert_problem(server.get(path).await, 503, "upstream-unavailable").await;
    w.arm.set_forbidden(false);
    assert_eq!(server.get(path).await.status(), 200);

    // A nextLink that loops: a failure, not an endless walk.
    w.arm.push_fault(ArmOp::List, RestFault::NextLinkLoop);
    assert_problem(
        server.get("/assets/CLIMB-LOOP/thumbnails").await,
        502,
        "upstream-error",
    )
    .await;

    let logs = w.logs.text();
    assert_eq!(
        logs.matches("AMS rejects the configuration").count(),
        1,
        "the misconfiguration is logged once, not per request"
    );
    assert_logs_hold_no_secrets(&w);
}

/// AMS mints container SAS URLs for Azurite, signed with the emulator's key (the real AMS signs
/// with the storage key it holds).
fn mint_container_sas(w: &World) {
    use ams_thumbnails::azure::sas::{AccountKeySigner, SasProtocol, SasResource};
    let signer = AccountKeySigner::new(ACCOUNT, &ams_thumbnails::secret::Secret::new(KEY)).unwrap();
    let endpoint = w.az.blob_endpoint.clone();
    w.arm
        .set_container_sas_minter(Box::new(move |asset, permissions, expiry| {
            assert_eq!(permissions, "Read", "the service asks for read only");
            let container = asset.container_name();
            let sas = signer.sign(
                SasResource::Container {
                    container: &container,
                },
                "rl",
                None,
                expiry,
                SasProtocol::Https,
                None,
            );
            vec![format!("{endpoint}/{container}?{sas}")]
        }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ams_container_sas_lists_and_is_handed_out_only_when_opted_in() {
    let w = world().await;
    mint_container_sas(&w);
    // Listing with AMS's container SAS (no storage credential of the service's own); URLs are
    // still per-blob user delegation SAS.
    let server = TestServer::start(ams_settings(
        &w,
        "auth = \"ams-container-sas\"",
        "mode = \"user-delegation-sas\"",
    ))
    .await;
    let body: Value = server
        .get("/assets/ClimbingMountAdams/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    assert_urls_serve_seeded_bytes(&w, &body).await;
    assert!(
        body["thumbnails"][0]["url"]
            .as_str()
            .unwrap()
            .contains("skoid=")
    );
    assert_eq!(w.arm.hits(ArmOp::ListContainerSas), 1);

    // Opted in: the container SAS itself in every URL (read + list of the whole container).
    let server = TestServer::start(ams_settings(
        &w,
        "auth = \"ams-container-sas\"",
        "mode = \"ams-container-sas\"\nlifetime = \"2h\"",
    ))
    .await;
    let body: Value = server
        .get("/assets/ClimbingMountAdams/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    let thumbs = body["thumbnails"].as_array().unwrap();
    assert_eq!(thumbs.len(), 3);
    for t in thumbs {
        let url = t["url"].as_str().unwrap();
        assert!(url.contains("sr=c"), "{url}");
        assert_eq!(get_blob(&w.client, url).await.0, 200);
        assert_eq!(get_blob(&w.client, &tamper_sig(url)).await.0, 403);
    }
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(110) && left <= time::Duration::hours(2),
        "{left}"
    );
    assert_logs_hold_no_secrets(&w);
}

#[test]
fn container_sas_modes_need_the_ams_source_and_a_short_lifetime() {
    let err = Settings::from_toml(
        "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\nauth = \"ams-container-sas\"\n[links]\nmode = \"public\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("storage.auth"), "{err}");
}
