//! Storage-only mode (AMS retired) against a real Azurite: containers found by template or
//! catalog, listed page by page, and every returned URL fetched back from Azurite.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use ams_thumbnails::Settings;
use futures::future::join_all;
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::seed::{create_container, get_blob, put_blob};
use support::{TestServer, assert_problem};

const GUID: &str = "1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b";

fn sample(path: &str) -> Vec<u8> {
    std::fs::read(support::samples_dir().join(path)).unwrap()
}

/// A container laid out like the output of an AMS job: thumbnails (one in a virtual folder
/// with a space), a sprite with its VTT, and the video neighbours.
async fn seed_asset(client: &reqwest::Client, az: &Azurite, container: &str, public: Option<&str>) {
    create_container(client, az, container, public).await;
    for i in 1..=3 {
        let name = format!("Thumbnail{i:06}.jpg");
        put_blob(
            client,
            az,
            container,
            &name,
            &sample(&format!("sprite-storyboard/{name}")),
            "image/jpeg",
        )
        .await;
    }
    put_blob(
        client,
        az,
        container,
        "extra thumbs/Thumbnail-forest-000004.png",
        &sample("virtual-folders/thumbnails/Thumbnail-harbour-000001.png"),
        "image/png",
    )
    .await;
    put_blob(
        client,
        az,
        container,
        "forest_sprite.jpg",
        &sample("sprite-storyboard/forest_sprite.jpg"),
        "image/jpeg",
    )
    .await;
    put_blob(
        client,
        az,
        container,
        "forest_sprite.vtt",
        &sample("sprite-storyboard/forest_sprite.vtt"),
        "text/vtt",
    )
    .await;
    put_blob(
        client,
        az,
        container,
        "forest_1280x720_2500.mp4",
        &sample("sprite-storyboard/forest_1280x720_2500.mp4"),
        "video/mp4",
    )
    .await;
    put_blob(
        client,
        az,
        container,
        "forest.ism",
        &sample("sprite-storyboard/forest.ism"),
        "application/octet-stream",
    )
    .await;
}

fn storage_settings(az: &Azurite, extra: &str) -> Settings {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [source]\nkind = \"storage\"\n{extra_source}\
         [storage]\naccount = \"{ACCOUNT}\"\nendpoint = \"{endpoint}\"\nauth = \"account-key\"\naccount_key = \"{KEY}\"\npage_size = 2\n\
         [auth]\nallow_anonymous_signed_urls = true\n\
         [links]\nmode = \"account-key-sas\"\nallow_http = true\n{extra}",
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
        extra_source = "",
    );
    Settings::from_toml(&toml).expect("storage settings")
}

/// Fetches every URL of an answer from Azurite and checks it returns the seeded bytes.
async fn assert_every_url_serves_its_blob(
    client: &reqwest::Client,
    body: &Value,
    container: &str,
    az: &Azurite,
) -> usize {
    let mut fetched = 0;
    let mut urls: Vec<(String, String)> = body["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["url"].as_str().unwrap().to_owned(),
                t["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    if let Some(sb) = body.get("storyboard") {
        urls.push((
            sb["url"].as_str().unwrap().to_owned(),
            sb["name"].as_str().unwrap().to_owned(),
        ));
    }
    for (url, name) in urls {
        if url.contains("sig=") {
            // Emulator over http; lifetimes as configured by the tests (at most 1 h).
            support::sas::assert_least_privilege(
                &url,
                &support::sas::Expect {
                    allow_http: true,
                    lifetime: std::time::Duration::from_secs(3600),
                    clock_skew: std::time::Duration::from_secs(300),
                },
            );
        }
        let (status, bytes) = get_blob(client, &url).await;
        assert_eq!(status, 200, "{url}");
        let (_, expected) = get_blob(
            client,
            &support::seed::blob_url_with_sas(az, container, &name),
        )
        .await;
        assert_eq!(bytes, expected, "{name}: the exact seeded bytes");
        fetched += 1;
    }
    fetched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_mode_with_account_key_sas_serves_every_blob() {
    let logs = support::logs::capture();
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let container = format!("asset-{GUID}");
    seed_asset(&client, &az, &container, None).await;
    let server = TestServer::start(storage_settings(&az, "")).await;

    // GUIDs are case-insensitive; the container uses the lower-case form.
    let response = server
        .get(&format!("/assets/{}/thumbnails", GUID.to_uppercase()))
        .await;
    assert_eq!(response.status(), 200);
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache_control.starts_with("private, max-age="),
        "{cache_control}"
    );
    let body: Value = response.json().await.unwrap();
    let names: Vec<&str> = body["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Thumbnail000001.jpg",
            "Thumbnail000002.jpg",
            "Thumbnail000003.jpg",
            "extra thumbs/Thumbnail-forest-000004.png"
        ]
    );
    assert_eq!(
        body["thumbnails"][1]["time"], 2.0,
        "time from the storyboard VTT read from Azurite"
    );
    assert_eq!(body["thumbnails"][0]["contentType"], "image/jpeg");
    assert_eq!(body["storyboard"]["tiles"].as_array().unwrap().len(), 10);
    assert!(body["expiresAt"].is_string());
    assert_eq!(
        assert_every_url_serves_its_blob(&client, &body, &container, &az).await,
        5
    );

    // Each URL is a read-only SAS for its one blob.
    let url = body["thumbnails"][0]["url"].as_str().unwrap().to_owned();
    let query: Vec<(String, String)> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("sp").as_deref(), Some("r"));
    assert_eq!(get("sr").as_deref(), Some("b"));
    assert_eq!(
        get("spr").as_deref(),
        Some("https,http"),
        "http only because allow_http (emulator)"
    );

    // Tampered signature, another blob, or a write: refused by Azurite.
    let sig = get("sig").unwrap();
    let mut tampered_sig = sig.clone().into_bytes();
    tampered_sig[0] = if tampered_sig[0] == b'A' { b'B' } else { b'A' };
    let tampered = url.replace(
        &url::form_urlencoded::byte_serialize(sig.as_bytes()).collect::<String>(),
        &url::form_urlencoded::byte_serialize(&tampered_sig).collect::<String>(),
    );
    assert_ne!(tampered, url);
    assert_eq!(get_blob(&client, &tampered).await.0, 403, "tampered sig");
    let other_blob = url.replace("Thumbnail000001.jpg", "Thumbnail000002.jpg");
    assert_eq!(
        get_blob(&client, &other_blob).await.0,
        403,
        "SAS of another blob"
    );
    let put = client
        .put(&url)
        .header("x-ms-blob-type", "BlockBlob")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403, "read-only");

    // The redirect routes point at working SAS URLs too.
    let response = server.get(&format!("/assets/{GUID}/thumbnails/2")).await;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(get_blob(&client, &location).await.0, 200);
    let response = server
        .get(&format!("/assets/{GUID}/poster?time=PT4S"))
        .await;
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("Thumbnail000003.jpg"), "{location}");
    logs.assert_no_secrets(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_stop_working_when_they_expire() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let container = format!("asset-{GUID}");
    seed_asset(&client, &az, &container, None).await;
    let server = TestServer::start(storage_settings(
        &az,
        "lifetime = \"3s\"\nclock_skew = \"0s\"\n[cache]\nmin_validity = \"1s\"\n",
    ))
    .await;
    let body: Value = server
        .get(&format!("/assets/{GUID}/thumbnails"))
        .await
        .json()
        .await
        .unwrap();
    let url = body["thumbnails"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(get_blob(&client, &url).await.0, 200);
    tokio::time::sleep(Duration::from_millis(4200)).await;
    assert_eq!(get_blob(&client, &url).await.0, 403, "past its expiry");
    // The service itself never hands out the expired URL again.
    let fresh: Value = server
        .get(&format!("/assets/{GUID}/thumbnails"))
        .await
        .json()
        .await
        .unwrap();
    let fresh_url = fresh["thumbnails"][0]["url"].as_str().unwrap();
    assert_ne!(fresh_url, url);
    assert_eq!(get_blob(&client, fresh_url).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_crosses_page_boundaries() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let container = format!("asset-{GUID}");
    create_container(&client, &az, &container, None).await;
    let jpeg = sample("builtin-preset/Thumbnail000001.jpg");
    // 5,003 blobs: more than one full page of 5,000.
    let names: Vec<String> = (1..=5003).map(|i| format!("Thumbnail{i:06}.jpg")).collect();
    for chunk in names.chunks(64) {
        join_all(
            chunk
                .iter()
                .map(|n| put_blob(&client, &az, &container, n, &jpeg, "image/jpeg")),
        )
        .await;
    }
    // 101 pages of 50, then two pages of 5,000 (the service maximum).
    for page_size in [50, 5000] {
        let mut settings = storage_settings(&az, "").tap_page_size(page_size);
        settings.server.request_timeout = std::time::Duration::from_secs(120);
        let server = TestServer::start(settings).await;
        let body: Value = server
            .get(&format!("/assets/{GUID}/thumbnails"))
            .await
            .json()
            .await
            .unwrap();
        let thumbs = body["thumbnails"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"));
        assert_eq!(thumbs.len(), 5003, "page size {page_size}");
        assert_eq!(thumbs[5002]["index"], 5003);
        assert_eq!(server.probe.lists.load(Ordering::SeqCst), 1);
    }
}

trait TapPageSize {
    fn tap_page_size(self, n: u32) -> Self;
}

impl TapPageSize for Settings {
    fn tap_page_size(mut self, n: u32) -> Self {
        self.storage.page_size = n;
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_mode_with_public_container_and_cdn_base() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    seed_asset(&client, &az, "legacy-intro", Some("container")).await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.csv");
    std::fs::write(
        &catalog,
        format!("name,alternateId,assetId,container,storageAccount\nIntro Video,cms-42,{GUID},legacy-intro,\n"),
    )
    .unwrap();
    // "CDN": the same Azurite reached under another host name, standing in for a CDN origin.
    let cdn = az.blob_endpoint.replace("127.0.0.1", "localhost");
    let mut settings = storage_settings(&az, &format!("cdn_base = \"{cdn}\"\n"));
    settings.storage.auth = ams_thumbnails::config::StorageAuth::Anonymous;
    settings.links.mode = ams_thumbnails::config::LinkMode::Public;
    settings.source = ams_thumbnails::config::SourceSettings::Storage(
        ams_thumbnails::config::StorageSourceSettings {
            catalog: Some(catalog),
            ..Default::default()
        },
    );
    let server = TestServer::start(settings).await;
    for id in ["Intro Video", "cms-42", GUID] {
        let response = server
            .get(&format!("/assets/{}/thumbnails", id.replace(' ', "%20")))
            .await;
        assert_eq!(response.status(), 200, "{id}");
        assert!(
            response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .starts_with("public")
        );
        let body: Value = response.json().await.unwrap();
        assert!(body.get("expiresAt").is_none(), "public URLs do not expire");
        let url = body["thumbnails"][0]["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("{cdn}/legacy-intro/")), "{url}");
        assert!(!url.contains("sig="));
        assert_eq!(
            assert_every_url_serves_its_blob(&client, &body, "legacy-intro", &az).await,
            5
        );
    }
    assert_problem(
        server.get("/assets/not-in-catalog/thumbnails").await,
        404,
        "asset-not-found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_containers_wrong_keys_and_impossible_names() {
    let az = Azurite::start_http().await;
    let server = TestServer::start(storage_settings(&az, "")).await;
    assert_problem(
        server.get(&format!("/assets/{GUID}/thumbnails")).await,
        404,
        "asset-not-found",
    )
    .await;
    // A name that cannot form a container is not found, without a storage call.
    assert_problem(
        server.get("/assets/My%20Video/thumbnails").await,
        404,
        "asset-not-found",
    )
    .await;

    let mut wrong = storage_settings(&az, "");
    wrong.storage.account_key = Some(ams_thumbnails::secret::Secret::new(
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    ));
    let client = reqwest::Client::new();
    create_container(&client, &az, &format!("asset-{GUID}"), None).await;
    let server = TestServer::start(wrong).await;
    let body = assert_problem(
        server.get(&format!("/assets/{GUID}/thumbnails")).await,
        503,
        "upstream-unavailable",
    )
    .await;
    assert!(!body.to_string().contains("sig="), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_cold_requests_list_once() {
    use axum::body::Body;
    use tower::ServiceExt;
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let container = format!("asset-{GUID}");
    seed_asset(&client, &az, &container, None).await;
    // In process: 1,000 sockets on each side would exceed the file descriptor limit.
    let (app, _state, probe) = support::app_with_probe(storage_settings(&az, ""));
    let path = format!("/assets/{GUID}/thumbnails");
    let requests = (0..1000).map(|_| {
        let app = app.clone();
        let request = axum::http::Request::get(path.as_str())
            .body(Body::empty())
            .unwrap();
        tokio::spawn(async move { app.oneshot(request).await.unwrap().status().as_u16() })
    });
    let statuses: Vec<u16> = join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", &statuses[..5]);
    assert_eq!(probe.locates.load(Ordering::SeqCst), 1);
    assert_eq!(probe.lists.load(Ordering::SeqCst), 1, "one listing");
    assert_eq!(probe.reads.load(Ordering::SeqCst), 1, "one VTT read");
    assert_eq!(probe.links.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_storage_and_the_service_recovers_without_restart() {
    let mut az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let container = format!("asset-{GUID}");
    seed_asset(&client, &az, &container, None).await;
    let server = TestServer::start(storage_settings(
        &az,
        "[upstream]\nmax_retries = 1\nretry_budget = \"1s\"\n",
    ))
    .await;
    let ready: Value = server.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"][0]["name"], "storage");

    az.stop().await;
    // Storage is every replica's upstream: its outage is reported, never a reason to take
    // this replica out of the load balancer (cached answers would still be served).
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"][0]["status"], "down");
    assert_eq!(ready["checks"][0]["required"], false);
    let response = server.get(&format!("/assets/{GUID}/thumbnails")).await;
    let retry_after = response.headers().get("retry-after").cloned();
    let body = assert_problem(response, 503, "upstream-unavailable").await;
    assert_eq!(
        retry_after.as_ref().map(|v| v.to_str().unwrap()),
        Some("5"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internals: {body}"
    );

    // Back (empty, in-memory): seeded again, the service answers without a restart.
    az.restart().await;
    seed_asset(&client, &az, &container, None).await;
    let response = server.get(&format!("/assets/{GUID}/thumbnails")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        assert_every_url_serves_its_blob(&client, &body, &container, &az).await,
        5
    );
    assert_eq!(server.get("/readyz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_prefix_scopes_the_listing() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    create_container(&client, &az, "shared-assets", None).await;
    let jpeg = sample("builtin-preset/Thumbnail000001.jpg");
    for name in [
        "intro/Thumbnail000001.jpg",
        "intro/Thumbnail000002.jpg",
        "outro/Thumbnail000001.jpg",
    ] {
        put_blob(&client, &az, "shared-assets", name, &jpeg, "image/jpeg").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        r#"[{"name":"intro","container":"shared-assets","prefix":"intro/"},{"name":"outro","container":"shared-assets","prefix":"outro/"}]"#,
    )
    .unwrap();
    let mut settings = storage_settings(&az, "");
    settings.source = ams_thumbnails::config::SourceSettings::Storage(
        ams_thumbnails::config::StorageSourceSettings {
            catalog: Some(catalog),
            ..Default::default()
        },
    );
    let server = TestServer::start(settings).await;
    let intro: Value = server
        .get("/assets/intro/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = intro["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["intro/Thumbnail000001.jpg", "intro/Thumbnail000002.jpg"]
    );
    let outro: Value = server
        .get("/assets/outro/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outro["thumbnails"].as_array().unwrap().len(), 1);
    assert_eq!(
        get_blob(&client, outro["thumbnails"][0]["url"].as_str().unwrap())
            .await
            .0,
        200
    );
}
