//! Credentials other than client secret, end to end: a managed identity (App Service form,
//! served by the fake Entra) lists Azurite over HTTPS and signs user delegation SAS URLs; the
//! delegation key is reused, then renewed before it gets too short.
//!
//! In a process of its own (`support::own_process`): the managed identity is configured
//! through the process environment, which every other test would share.

use crate::support;

use ams_thumbnails::Settings;
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite};
use support::fake_entra::{FakeEntra, TokenForm};
use support::seed::{create_container, get_blob, put_blob};
use support::{TestServer, tls};

const GUID: &str = "0d7c9a2e-4c63-4d9f-9a0e-5b1f2c3d4e5f";

#[test]
fn managed_identity_lists_and_signs_with_renewed_delegation_keys() {
    support::own_process::run(
        module_path!(),
        "managed_identity_lists_and_signs_with_renewed_delegation_keys",
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(managed_identity())
        },
    );
}

async fn managed_identity() {
    let logs = support::logs::capture();
    let pki = tls::shared();
    let entra = FakeEntra::start_https(pki).await;
    let az = Azurite::start_https_oauth(pki).await;
    let client = tls::client(pki);
    let container = format!("asset-{GUID}");
    create_container(&client, &az, &container, None).await;
    let jpeg =
        std::fs::read(support::samples_dir().join("builtin-preset/Thumbnail000001.jpg")).unwrap();
    put_blob(
        &client,
        &az,
        &container,
        "Thumbnail000001.jpg",
        &jpeg,
        "image/jpeg",
    )
    .await;

    // SAFETY: this process runs this one test (`support::own_process`); nothing else reads the
    // environment concurrently.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", entra.msi_endpoint());
        std::env::set_var("IDENTITY_HEADER", entra.identity_header());
    }
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[cache]
ttl = "1s"
min_validity = "1s"
[source]
kind = "storage"
[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
auth = "entra"
[auth]
allow_anonymous_signed_urls = true
[links]
mode = "user-delegation-sas"
lifetime = "3s"
clock_skew = "0s"
[credential]
kind = "managed-identity"
client_id = "{mi_client}"
[upstream]
ca_file = "{ca}"
"#,
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
        mi_client = entra.managed_identity_client_id(),
        ca = pki.ca_pem.display(),
    );
    let server = TestServer::start(Settings::from_toml(&toml).unwrap()).await;
    let path = format!("/assets/{GUID}/thumbnails");

    let body: Value = server.get(&path).await.json().await.unwrap();
    let url = body["thumbnails"][0]["url"].as_str().unwrap().to_owned();
    let (status, bytes) = get_blob(&client, &url).await;
    assert_eq!((status, bytes.as_ref()), (200, jpeg.as_slice()));
    assert!(url.contains("skoid="), "a user delegation SAS: {url}");
    assert!(entra.token_requests(TokenForm::ManagedIdentity) >= 1);
    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 0);

    // Within the key's first half-life the key is reused…
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let again: Value = server.get(&path).await.json().await.unwrap();
    assert_eq!(
        get_blob(&client, again["thumbnails"][0]["url"].as_str().unwrap())
            .await
            .0,
        200
    );
    let keys = || logs.text().matches("user delegation key obtained").count();
    assert_eq!(keys(), 1, "one key for both answers");

    // …and renewed once less than two URL lifetimes remain (key lifetime: 4 × 3 s).
    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    let renewed: Value = server.get(&path).await.json().await.unwrap();
    let renewed_url = renewed["thumbnails"][0]["url"].as_str().unwrap();
    assert_eq!(get_blob(&client, renewed_url).await.0, 200);
    assert_eq!(keys(), 2, "renewed");
    // The first URL has expired by now: Azurite refuses it.
    assert_eq!(get_blob(&client, &url).await.0, 403);
    logs.assert_no_secrets(Some(&entra));
}
