//! MK.IO mode end to end: the fake MK.IO Media API (shaped like MediaKind's examples) over
//! HTTPS, blobs in Azurite under the asset's subPath, every URL fetched back.

use crate::support;

use ams_thumbnails::Settings;
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::fake_mkio::{DEFAULT_TOKEN, FakeMkio, FakeMkioAsset, FakeStorage, MkioOp};
use support::seed::{create_container, get_blob, put_blob};
use support::{TestServer, assert_problem, tls};
use uuid::Uuid;

const ASSET_ID: &str = "5b1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkio_assets_resolve_by_name_and_alternate_id_with_sub_path_honoured() {
    let logs = support::logs::capture();
    let pki = tls::shared();
    let mkio = FakeMkio::start_https(pki).await;
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    create_container(&client, &az, "mkio-media", None).await;
    let jpeg =
        std::fs::read(support::samples_dir().join("builtin-preset/Thumbnail000001.jpg")).unwrap();
    let png = std::fs::read(
        support::samples_dir().join("virtual-folders/thumbnails/Thumbnail-harbour-000001.png"),
    )
    .unwrap();
    // Two assets share the container; each lives under its own subPath.
    for (name, bytes, ct) in [
        ("videos/intro/Thumbnail000001.jpg", &jpeg, "image/jpeg"),
        ("videos/intro/Thumbnail000002.jpg", &jpeg, "image/jpeg"),
        (
            "videos/intro/intro.ism",
            &b"<smil/>".to_vec(),
            "application/octet-stream",
        ),
        ("videos/outro/Thumbnail000001.png", &png, "image/png"),
    ] {
        put_blob(&client, &az, "mkio-media", name, bytes, ct).await;
    }
    mkio.add_storage(FakeStorage::azure(
        "primary-azure",
        az.blob_endpoint.clone(),
    ));
    mkio.add_asset(
        FakeMkioAsset::new("intro", Uuid::parse_str(ASSET_ID).unwrap())
            .alternate_id("cms-7")
            .container("mkio-media")
            .sub_path("videos/intro")
            .storage(Some("primary-azure")),
    );
    mkio.add_asset(
        FakeMkioAsset::new("outro", Uuid::new_v4())
            .container("mkio-media")
            .sub_path("videos/outro/")
            .storage(Some("primary-azure")),
    );
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[source]
kind = "mkio"
base_url = "{base}"
project = "{project}"
token = "{DEFAULT_TOKEN}"
[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
auth = "account-key"
account_key = "{KEY}"
[links]
mode = "account-key-sas"
allow_http = true
[auth]
allow_anonymous_signed_urls = true
[upstream]
ca_file = "{ca}"
"#,
        base = mkio.base_url(),
        project = mkio.project(),
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
        ca = pki.ca_pem.display(),
    );
    let server = TestServer::start(Settings::from_toml(&toml).expect("MK.IO settings")).await;

    for id in ["intro", "cms-7", ASSET_ID] {
        let response = server.get(&format!("/assets/{id}/thumbnails")).await;
        assert_eq!(response.status(), 200, "{id}");
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
                "videos/intro/Thumbnail000001.jpg",
                "videos/intro/Thumbnail000002.jpg"
            ],
            "{id}"
        );
        for t in body["thumbnails"].as_array().unwrap() {
            let (status, bytes) = get_blob(&client, t["url"].as_str().unwrap()).await;
            assert_eq!((status, bytes.as_ref()), (200, jpeg.as_slice()), "{id}");
        }
    }
    let outro: Value = server
        .get("/assets/outro/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outro["thumbnails"].as_array().unwrap().len(), 1);
    assert_eq!(
        outro["thumbnails"][0]["name"],
        "videos/outro/Thumbnail000001.png"
    );
    assert_eq!(
        get_blob(&client, outro["thumbnails"][0]["url"].as_str().unwrap())
            .await
            .0,
        200
    );
    assert_problem(
        server.get("/assets/nobody/thumbnails").await,
        404,
        "asset-not-found",
    )
    .await;
    assert_eq!(
        mkio.hits(MkioOp::GetStorage),
        1,
        "the storage instance is resolved once"
    );
    let logs = logs.text();
    assert!(!logs.contains(DEFAULT_TOKEN), "the MK.IO token in the logs");
    assert!(!logs.contains(KEY));
}
