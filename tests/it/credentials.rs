//! Credentials other than client secret, end to end: a managed identity (App Service form,
//! served by the fake Entra) lists Azurite over HTTPS and signs user delegation SAS URLs; the
//! delegation key is reused, then renewed before it gets too short. A client certificate from
//! a PFX file does the same; a PFX that cannot be read stops start-up, naming its key.
//!
//! The managed identity test runs in a process of its own (`support::own_process`): it is
//! configured through the process environment, which every other test would share. The
//! default chain's tests are in `default_credential.rs`.

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

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/credential");
const PFX_PASSWORD: &str = "test-pfx-password-7e57";

/// The DER of `tests/fixtures/credential/cert.pem`, the certificate of the fixture PFX files.
fn fixture_certificate() -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(format!("{FIXTURES}/cert.pem"))
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn client_certificate_from_a_pfx_lists_and_signs() {
    let logs = support::logs::capture();
    let entra = FakeEntra::new()
        .with_certificate(fixture_certificate())
        .serve_https(tls::shared())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("pfx-password");
    std::fs::write(&password_file, format!("{PFX_PASSWORD}\n")).unwrap();
    let credential = format!(
        r#"[credential]
kind = "client-certificate"
tenant_id = "{tenant}"
client_id = "{client}"
certificate_path = "{FIXTURES}/client-aes.pfx"
certificate_password_file = "{password_file}"
authority_host = "{authority}"
"#,
        tenant = entra.tenant_id(),
        client = entra.client_id(),
        password_file = password_file.display(),
        authority = entra.authority_host(),
    );
    crate::default_credential::serve_a_thumbnail(&entra, &credential, &logs).await;
    assert!(entra.token_requests(TokenForm::ClientCertificate) >= 1);
    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 0);
    assert!(
        !logs.text().contains(PFX_PASSWORD),
        "the PFX password in the logs"
    );
    assert!(
        !logs.text().contains("chosen by the default chain"),
        "an explicit kind is no chain"
    );
}

#[test]
fn an_unreadable_certificate_stops_start_up_naming_its_key() {
    let check = |file: &str, password: &str| {
        let toml = format!(
            "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\n[auth]\n\
             allow_anonymous_signed_urls = true\n[credential]\nkind = \"client-certificate\"\n\
             tenant_id = \"t\"\nclient_id = \"c\"\ncertificate_path = \"{FIXTURES}/{file}\"\n\
             certificate_password = \"{password}\"\n"
        );
        let settings = Settings::from_toml(&toml).unwrap();
        ams_thumbnails::server::compose::check(&settings)
    };
    assert!(check("client-aes.pfx", PFX_PASSWORD).is_ok());
    let wrong = check("client-aes.pfx", "not-the-password-7e57").unwrap_err();
    assert_eq!(wrong.key, "credential.certificate_path");
    assert!(
        wrong
            .message
            .ends_with("client-aes.pfx: cannot decrypt the PFX: wrong password")
    );
    assert!(!wrong.to_string().contains("not-the-password-7e57"));
    let legacy = check("client-legacy.pfx", PFX_PASSWORD).unwrap_err();
    assert!(
        legacy.message.contains("legacy PKCS#12 encryption"),
        "{legacy}"
    );
    let missing = check("absent.pfx", "").unwrap_err();
    assert!(missing.message.contains("cannot read"), "{missing}");
}
