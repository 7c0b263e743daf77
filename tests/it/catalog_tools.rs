//! `ams-thumbnails catalog export|scan`, run as the binary with its configuration in the child's
//! environment: exports from the fake ARM and the fake MK.IO over several pages, a scan of
//! Azurite's containers, and every written catalog read back by `source.kind = "storage"`
//! against Azurite (by name, GUID and alternate id; the encrypted asset refused as AMS refuses
//! it).

use crate::support;

use std::path::Path;
use std::process::{Command, Output};

use ams_thumbnails::Settings;
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::fake_arm::{ArmOp, FakeArm, FakeAsset};
use support::fake_entra::FakeEntra;
use support::fake_mkio::{DEFAULT_TOKEN, FakeMkio, FakeMkioAsset, FakeStorage, MkioOp};
use support::seed::{create_container, put_blob};
use support::{TestServer, assert_problem, tls};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_ams-thumbnails");
const HEADER: &str =
    "name,alternateId,assetId,container,storageAccount,prefix,storageEncryptionFormat";

/// Runs the binary from the repository root (its `config/default.toml` names a local source)
/// with `env` and none of the test process's own configuration variables, off the runtime.
async fn run(args: &[&str], env: Vec<(String, String)>) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        for (key, _) in std::env::vars() {
            if key.starts_with("AMS_THUMBNAILS_") || key == "MKIO_TOKEN" {
                cmd.env_remove(key);
            }
        }
        cmd.args(args).envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `[storage]` and `[links]` for Azurite with its account key (what export and scan need).
fn storage_env(az: &Azurite) -> Vec<(String, String)> {
    let endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}");
    env(&[
        ("AMS_THUMBNAILS_STORAGE__ACCOUNT", ACCOUNT),
        ("AMS_THUMBNAILS_STORAGE__ENDPOINT", &endpoint),
        ("AMS_THUMBNAILS_STORAGE__AUTH", "account-key"),
        ("AMS_THUMBNAILS_STORAGE__ACCOUNT_KEY", KEY),
        ("AMS_THUMBNAILS_LINKS__MODE", "account-key-sas"),
        ("AMS_THUMBNAILS_LINKS__ALLOW_HTTP", "true"),
        ("AMS_THUMBNAILS_AUTH__ALLOW_ANONYMOUS_SIGNED_URLS", "true"),
        (
            "AMS_THUMBNAILS_UPSTREAM__CA_FILE",
            &tls::shared().ca_pem.display().to_string(),
        ),
    ])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The storage source over Azurite with `catalog`.
async fn storage_server(az: &Azurite, catalog: &Path) -> TestServer {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [source]\nkind = \"storage\"\ncatalog = \"{catalog}\"\n\
         [storage]\naccount = \"{ACCOUNT}\"\nendpoint = \"{endpoint}\"\nauth = \"account-key\"\naccount_key = \"{KEY}\"\n\
         [auth]\nallow_anonymous_signed_urls = true\n\
         [links]\nmode = \"account-key-sas\"\nallow_http = true\n",
        catalog = catalog.display(),
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
    );
    TestServer::start(Settings::from_toml(&toml).expect("storage settings")).await
}

/// A container holding one thumbnail named `{prefix}Thumbnail000001.jpg`.
async fn seed(client: &reqwest::Client, az: &Azurite, container: &str, prefixes: &[&str]) {
    create_container(client, az, container, None).await;
    let jpeg =
        std::fs::read(support::samples_dir().join("builtin-preset/Thumbnail000001.jpg")).unwrap();
    for prefix in prefixes {
        let name = format!("{prefix}Thumbnail000001.jpg");
        put_blob(client, az, container, &name, &jpeg, "image/jpeg").await;
    }
}

/// Asserts every id answers the one thumbnail of `container` (under `prefix`).
async fn assert_resolves(server: &TestServer, ids: &[&str], container: &str, prefix: &str) {
    for id in ids {
        let response = server
            .get(&format!("/assets/{}/thumbnails", id.replace(' ', "%20")))
            .await;
        assert_eq!(response.status(), 200, "{id}");
        let body: Value = response.json().await.unwrap();
        let thumbs = body["thumbnails"].as_array().unwrap();
        assert_eq!(thumbs.len(), 1, "{id}: {body}");
        assert_eq!(
            thumbs[0]["name"],
            format!("{prefix}Thumbnail000001.jpg"),
            "{id}"
        );
        let url = thumbs[0]["url"].as_str().unwrap();
        assert!(url.contains(&format!("/{container}/")), "{id}: {url}");
    }
}

/// The CSV's data rows by name.
fn rows_by_name(csv: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(HEADER), "{csv}");
    lines
        .map(|line| {
            let cells: Vec<String> = line.split(',').map(str::to_owned).collect();
            assert_eq!(cells.len(), 7, "{line}");
            (cells[0].clone(), cells)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_ams_follows_every_page_and_the_storage_source_serves_it() {
    let pki = tls::shared();
    let entra = FakeEntra::start_https(pki).await;
    let arm = FakeArm::new().with_page_size(2).serve_https(pki).await;
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    // Five assets, three pages: default containers, one of its own with its account named,
    // and one storage-encrypted (its container holds blobs: only the catalog refuses it).
    let assets = [
        ("ClimbingMountAdams", "CLIMB00002", None, "None"),
        ("ClimbingMountBaker", "CLIMB00004", None, "None"),
        ("ClimbingMountRainier", "CLIMB00001", None, "None"),
        ("Legacy Intro", "cms-42", Some("legacy-media"), "None"),
        (
            "ClimbingMountSaintHelens",
            "CLIMB00005",
            None,
            "MediaStorageClientEncryption",
        ),
    ];
    let mut expected = Vec::new();
    for (name, alternate, container, format) in assets {
        let guid = Uuid::new_v4();
        let mut asset = FakeAsset::new(name, guid)
            .alternate_id(alternate)
            .storage_encryption_format(format);
        if let Some(container) = container {
            asset = asset.container(container).storage_account_name(ACCOUNT);
        }
        seed(&client, &az, &asset.container_name(), &[""]).await;
        expected.push((name, alternate, guid.to_string(), asset.container_name()));
        arm.add_asset(asset);
    }

    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.csv");
    let mut vars = storage_env(&az);
    vars.extend(env(&[
        (
            "AMS_THUMBNAILS_SOURCE__SUBSCRIPTION_ID",
            &arm.subscription_id(),
        ),
        (
            "AMS_THUMBNAILS_SOURCE__RESOURCE_GROUP",
            &arm.resource_group(),
        ),
        ("AMS_THUMBNAILS_SOURCE__ACCOUNT_NAME", &arm.account()),
        ("AMS_THUMBNAILS_SOURCE__ARM_ENDPOINT", &arm.base_url()),
        ("AMS_THUMBNAILS_CREDENTIAL__KIND", "client-secret"),
        ("AMS_THUMBNAILS_CREDENTIAL__TENANT_ID", &entra.tenant_id()),
        ("AMS_THUMBNAILS_CREDENTIAL__CLIENT_ID", &entra.client_id()),
        (
            "AMS_THUMBNAILS_CREDENTIAL__CLIENT_SECRET",
            &entra.client_secret(),
        ),
        (
            "AMS_THUMBNAILS_CREDENTIAL__AUTHORITY_HOST",
            &entra.authority_host(),
        ),
    ]));
    // `--from ams` over the repository's default file (a local source): its [source] is
    // dropped, the environment configures AMS.
    let out = run(
        &[
            "catalog",
            "export",
            "--from",
            "ams",
            "--output",
            catalog.to_str().unwrap(),
        ],
        vars.clone(),
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "the catalog went to the file");
    assert_eq!(arm.hits(ArmOp::List), 3, "every page: {stderr}");
    // Not a terminal: a plain line a page, then the summary.
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("exported "))
        .collect();
    assert_eq!(
        progress,
        [
            "exported 2 assets",
            "exported 4 assets",
            "exported 5 assets"
        ],
        "{stderr}"
    );
    assert!(stderr.contains("exported 5 assets from AMS to"), "{stderr}");
    assert!(!stderr.contains(&entra.client_secret()), "{stderr}");

    let written = std::fs::read_to_string(&catalog).unwrap();
    let rows = rows_by_name(&written);
    assert_eq!(rows.len(), 5, "{written}");
    for (name, alternate, guid, container) in &expected {
        let row = &rows[*name];
        assert_eq!(
            row[1..6],
            [
                alternate.to_string(),
                guid.clone(),
                container.clone(),
                ACCOUNT.to_owned(),
                String::new()
            ],
            "{name}"
        );
    }
    assert_eq!(rows["ClimbingMountAdams"][6], "None");
    assert_eq!(
        rows["ClimbingMountSaintHelens"][6],
        "MediaStorageClientEncryption"
    );

    // The same file, as it is, read by the storage source.
    let server = storage_server(&az, &catalog).await;
    for (name, alternate, guid, container) in &expected[..4] {
        assert_resolves(
            &server,
            &[name, alternate, guid, &guid.to_uppercase()],
            container,
            "",
        )
        .await;
    }
    let (name, alternate, guid, _) = &expected[4];
    for id in [*name, *alternate, guid.as_str()] {
        let body = assert_problem(
            server.get(&format!("/assets/{id}/thumbnails")).await,
            409,
            "asset-unservable",
        )
        .await;
        // Word for word what the AMS source answers for it.
        assert_eq!(
            body["detail"],
            "asset ClimbingMountSaintHelens uses storage encryption MediaStorageClientEncryption: \
             its blobs are encrypted and cannot be served",
            "{id}"
        );
    }

    // JSON to stdout: the same rows.
    let out = run(
        &["catalog", "export", "--from", "ams", "--format", "json"],
        vars.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.len(), 5);
    let helens = json
        .iter()
        .find(|r| r["name"] == "ClimbingMountSaintHelens")
        .unwrap();
    assert_eq!(
        helens["storageEncryptionFormat"],
        "MediaStorageClientEncryption"
    );
    assert_eq!(helens["alternateId"], "CLIMB00005");

    // ARM refusing the identity: exit 1, said plainly, no secret.
    arm.set_forbidden(true);
    let out = run(&["catalog", "export", "--from", "ams"], vars).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("listing AMS failed"), "{stderr}");
    assert!(!stderr.contains(&entra.client_secret()), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_mkio_follows_every_page_and_the_storage_source_serves_it() {
    let pki = tls::shared();
    let mkio = FakeMkio::new().with_page_size(2).serve_https(pki).await;
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    mkio.add_storage(FakeStorage::azure(
        "primary-azure",
        az.blob_endpoint.clone(),
    ));
    mkio.add_storage(FakeStorage::other("s3-archive", "AWS.S3"));
    let intro = Uuid::new_v4();
    let outro = Uuid::new_v4();
    let plain = Uuid::new_v4();
    let unnamed = Uuid::new_v4();
    mkio.add_asset(
        FakeMkioAsset::new("intro", intro)
            .alternate_id("cms-7")
            .container("mkio-media")
            .sub_path("videos/intro"),
    );
    mkio.add_asset(
        FakeMkioAsset::new("outro", outro)
            .alternate_id("cms-8")
            .container("mkio-media")
            .sub_path("videos/outro"),
    );
    mkio.add_asset(FakeMkioAsset::new("plain", plain).alternate_id("cms-9"));
    mkio.add_asset(
        FakeMkioAsset::new("no-instance", unnamed)
            .alternate_id("cms-10")
            .container("default-media")
            .storage(None),
    );
    mkio.add_asset(
        FakeMkioAsset::new("in-s3", Uuid::new_v4())
            .container("bucket-media")
            .storage(Some("s3-archive")),
    );
    seed(
        &client,
        &az,
        "mkio-media",
        &["videos/intro/", "videos/outro/"],
    )
    .await;
    seed(&client, &az, &format!("asset-{plain}"), &[""]).await;
    seed(&client, &az, "default-media", &[""]).await;

    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    let mut vars = storage_env(&az);
    vars.extend(env(&[
        ("AMS_THUMBNAILS_SOURCE__BASE_URL", &mkio.base_url()),
        ("AMS_THUMBNAILS_SOURCE__PROJECT", &mkio.project()),
        ("MKIO_TOKEN", DEFAULT_TOKEN),
    ]));
    let out = run(
        &[
            "catalog",
            "export",
            "--from",
            "mkio",
            "-o",
            catalog.to_str().unwrap(),
        ],
        vars,
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(mkio.hits(MkioOp::ListAssets), 3, "every page: {stderr}");
    assert!(
        stderr.contains("skipped in-s3:") && stderr.contains("AWS.S3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("exported 4 assets from MK.IO, skipped 1"),
        "{stderr}"
    );
    assert!(!stderr.contains(DEFAULT_TOKEN), "{stderr}");
    let rows: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&catalog).unwrap()).unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let intro_row = rows.iter().find(|r| r["name"] == "intro").unwrap();
    assert_eq!(intro_row["prefix"], "videos/intro/");
    assert_eq!(intro_row["storageAccount"], ACCOUNT, "from spec.url");
    assert_eq!(intro_row["assetId"], intro.to_string());

    let server = storage_server(&az, &catalog).await;
    let (intro, outro, plain, unnamed) = (
        intro.to_string(),
        outro.to_string(),
        plain.to_string(),
        unnamed.to_string(),
    );
    assert_resolves(
        &server,
        &["intro", "cms-7", &intro],
        "mkio-media",
        "videos/intro/",
    )
    .await;
    assert_resolves(
        &server,
        &["outro", "cms-8", &outro],
        "mkio-media",
        "videos/outro/",
    )
    .await;
    assert_resolves(
        &server,
        &["plain", "cms-9", &plain],
        &format!("asset-{plain}"),
        "",
    )
    .await;
    assert_resolves(
        &server,
        &["no-instance", "cms-10", &unnamed],
        "default-media",
        "",
    )
    .await;
    assert_problem(
        server.get("/assets/in-s3/thumbnails").await,
        404,
        "asset-not-found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_lists_asset_guid_containers_page_by_page() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let mut guids: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();
    guids.sort();
    for guid in &guids {
        seed(&client, &az, &format!("asset-{guid}"), &[""]).await;
    }
    for other in [
        "media",
        "asset-intro",
        "thumbs-2024",
        &format!("asset-{}-old", guids[0]),
    ] {
        create_container(&client, &az, other, None).await;
    }
    let mut vars = storage_env(&az);
    vars.extend(env(&[
        ("AMS_THUMBNAILS_SOURCE__KIND", "storage"),
        ("AMS_THUMBNAILS_STORAGE__PAGE_SIZE", "2"),
    ]));
    let out = run(&["catalog", "scan", "--format", "json"], vars.clone()).await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["assetId"].as_str().unwrap(),
                r["container"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = guids
        .iter()
        .map(|g| (g.clone(), format!("asset-{g}")))
        .collect();
    assert_eq!(
        found,
        expected
            .iter()
            .map(|(g, c)| (g.as_str(), c.as_str()))
            .collect::<Vec<_>>()
    );
    for row in &rows {
        assert_eq!(row["name"], "");
        assert_eq!(row["alternateId"], "");
        assert_eq!(row["storageAccount"], ACCOUNT);
    }
    // `asset-` containers only, two a page: three pages, a line each.
    let pages = stderr.lines().filter(|l| l.starts_with("found ")).count();
    assert_eq!(pages, 3, "{stderr}");
    assert!(
        stderr.contains("found 3 asset containers in devstoreaccount1 (5 listed)"),
        "{stderr}"
    );

    // Written as CSV and read back by the storage source.
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("scan.csv");
    let out = run(
        &["catalog", "scan", "--output", catalog.to_str().unwrap()],
        vars.clone(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(&catalog).unwrap();
    assert_eq!(written.lines().next(), Some(HEADER));
    let server = storage_server(&az, &catalog).await;
    for guid in &guids {
        assert_resolves(
            &server,
            &[guid, &guid.to_uppercase()],
            &format!("asset-{guid}"),
            "",
        )
        .await;
    }

    // Anonymous access cannot list containers: a configuration error, exit 2.
    let mut anonymous = vars.clone();
    anonymous.extend(env(&[
        ("AMS_THUMBNAILS_STORAGE__AUTH", "anonymous"),
        ("AMS_THUMBNAILS_LINKS__MODE", "public"),
    ]));
    let out = run(&["catalog", "scan"], anonymous).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("storage.auth"), "{stderr}");
    // A wrong key: the upstream refuses, exit 1, no key in the message.
    let mut wrong = vars.clone();
    wrong.extend(env(&[(
        "AMS_THUMBNAILS_STORAGE__ACCOUNT_KEY",
        "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=",
    )]));
    let out = run(&["catalog", "scan"], wrong).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("listing Blob Storage failed"), "{stderr}");
    assert!(!stderr.contains("d3Jvbmcta2V5"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_needs_an_ams_or_mkio_source_and_a_matching_extension() {
    let az = Azurite::start_http().await;
    let mut vars = storage_env(&az);
    vars.extend(env(&[("AMS_THUMBNAILS_SOURCE__KIND", "storage")]));
    let out = run(&["catalog", "export"], vars.clone()).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("source.kind") && stderr.contains("--from"),
        "{stderr}"
    );
    let out = run(
        &["catalog", "scan", "--format", "json", "--output", "x.csv"],
        vars,
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(".json"), "{stderr}");
    // `--from mkio` without a project: the key is named.
    let out = run(&["catalog", "export", "--from", "mkio"], storage_env(&az)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("project"), "{stderr}");
}
