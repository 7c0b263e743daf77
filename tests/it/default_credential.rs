//! `credential.kind = "default"` (what an unset `[credential]` means): with only one
//! credential's environment variables set, the chain picks that one, says so once in the log,
//! and the service lists Azurite over HTTPS and signs user delegation SAS URLs with its tokens.
//! Every kind is exercised against the fake Entra ID: environment client secret and client
//! certificate, workload identity (projected token file), managed identity in its App Service
//! and IMDS forms, and the Azure CLI (a fake `az` on `PATH`). With nothing available, one error
//! lists every credential's failure.
//!
//! Each test runs in a process of its own (`support::own_process`): the chain reads the process
//! environment. Each child starts from a clean one: no `AZURE_*` or identity variables, a `PATH`
//! with only `node` (for Azurite) and what the test puts there, and `HTTP_PROXY` on loopback
//! (`NO_PROXY` for loopback itself), so that the IMDS managed identity (always
//! `http://169.254.169.254`) never leaves this machine.

use std::path::{Path, PathBuf};

use crate::support;

use ams_thumbnails::Settings;
use ams_thumbnails::config::{CredentialSettings, UpstreamSettings};
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite};
use support::fake_entra::{FakeEntra, TokenForm};
use support::logs::Capture;
use support::seed::{create_container, get_blob, put_blob};
use support::{TestServer, tls};

const GUID: &str = "5e7d1c2b-8a9f-4b3c-9d2e-1f0a3b4c5d6e";
const CHOSEN: &str = "Entra ID credential chosen by the default chain";

/// Every variable the chain or `azure_identity` reads, and the proxy settings.
const CLEARED: &[&str] = &[
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_AUTHORITY_HOST",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Runs `test` in a child process with a multi-threaded runtime.
fn own_process<F: Future<Output = ()>>(name: &str, test: impl FnOnce() -> F) {
    support::own_process::run(module_path!(), name, || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(test())
    });
}

/// Sets the environment variables.
fn set_env(vars: &[(&str, &str)]) {
    for (name, value) in vars {
        // SAFETY: this process runs this one test (`support::own_process`), which sets its
        // variables before the service it tests reads any.
        unsafe { std::env::set_var(name, value) };
    }
}

/// The clean environment of every test here, with `bin` as the whole `PATH` (holding `node`);
/// `HTTP_PROXY` goes to `proxy` when given, else to a loopback port nothing listens on.
fn clean_env(bin: &Path, proxy: Option<std::net::SocketAddr>) {
    let node = which("node");
    std::os::unix::fs::symlink(&node, bin.join("node")).unwrap();
    for name in CLEARED {
        // SAFETY: as in `set_env`.
        unsafe { std::env::remove_var(name) };
    }
    let proxy = proxy.unwrap_or_else(closed_port);
    set_env(&[
        ("PATH", bin.to_str().unwrap()),
        ("HTTP_PROXY", &format!("http://{proxy}")),
        // The test's own calls to the service stay direct.
        ("NO_PROXY", "127.0.0.1,localhost"),
    ]);
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} on PATH"))
}

/// A loopback address where nothing listens (bound, then let go).
fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Azurite over HTTPS with one thumbnail, the service over it with `credential` (the lines of a
/// `[credential]` section, or nothing), two requests and the image fetched by its user
/// delegation SAS URL; the captured logs, with no secret of `entra` in them.
pub(crate) async fn serve_a_thumbnail(entra: &FakeEntra, credential: &str, logs: &Capture) {
    let pki = tls::shared();
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
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[source]
kind = "storage"
[storage]
account = "{ACCOUNT}"
endpoint = "{endpoint}"
[auth]
allow_anonymous_signed_urls = true
[upstream]
ca_file = "{ca}"
{credential}
"#,
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
        ca = pki.ca_pem.display(),
    );
    let settings = Settings::from_toml(&toml).unwrap();
    let server = TestServer::start(settings).await;
    let path = format!("/assets/{GUID}/thumbnails");
    for _ in 0..2 {
        let response = server.get(&path).await;
        assert_eq!(response.status(), 200, "{}", logs.text());
        let body: Value = response.json().await.unwrap();
        let url = body["thumbnails"][0]["url"].as_str().unwrap();
        assert!(url.contains("skoid="), "a user delegation SAS: {url}");
        let (status, bytes) = get_blob(&client, url).await;
        assert_eq!((status, bytes.as_ref()), (200, jpeg.as_slice()));
    }
    logs.assert_no_secrets(Some(entra));
}

/// The chain chose `label`, and said so exactly once.
fn assert_chosen(logs: &Capture, label: &str) {
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(CHOSEN)).collect();
    assert_eq!(lines.len(), 1, "one choice, logged once: {lines:#?}");
    assert!(
        lines[0].contains(&format!("credential={label}")),
        "{label} chosen: {}",
        lines[0]
    );
}

/// Asserts that only `form` asked the fake for tokens.
fn assert_only(entra: &FakeEntra, form: TokenForm) {
    for other in [
        TokenForm::ClientCredentials,
        TokenForm::ClientCertificate,
        TokenForm::WorkloadIdentity,
        TokenForm::ManagedIdentity,
        TokenForm::Imds,
    ] {
        let count = entra.token_requests(other);
        if other == form {
            assert!(count >= 1, "{form:?} used");
        } else {
            assert_eq!(count, 0, "{other:?} not used");
        }
    }
}

/// A fresh RSA key and its self-signed certificate as one PEM text, and the certificate's DER.
pub fn generated_certificate() -> (String, Vec<u8>) {
    use aws_lc_rs::encoding::AsDer;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = key.as_der().unwrap();
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ams-thumbnails test client".to_owned()])
        .unwrap()
        .self_signed(&signer)
        .unwrap();
    (
        format!("{}{}", cert.pem(), signer.serialize_pem()),
        cert.der().to_vec(),
    )
}

#[test]
fn picks_the_environment_client_secret() {
    own_process("picks_the_environment_client_secret", || async {
        let dir = tempfile::tempdir().unwrap();
        clean_env(dir.path(), None);
        let logs = support::logs::capture();
        let entra = FakeEntra::start_https(tls::shared()).await;
        set_env(&[
            ("AZURE_TENANT_ID", &entra.tenant_id()),
            ("AZURE_CLIENT_ID", &entra.client_id()),
            ("AZURE_CLIENT_SECRET", &entra.client_secret()),
            ("AZURE_AUTHORITY_HOST", &entra.authority_host()),
        ]);
        // No [credential]: the default chain.
        serve_a_thumbnail(&entra, "", &logs).await;
        assert_chosen(&logs, "environment (client secret)");
        assert_only(&entra, TokenForm::ClientCredentials);
    });
}

#[test]
fn picks_the_environment_client_certificate() {
    own_process("picks_the_environment_client_certificate", || async {
        let dir = tempfile::tempdir().unwrap();
        clean_env(dir.path(), None);
        let logs = support::logs::capture();
        let (pem, der) = generated_certificate();
        let pem_path = dir.path().join("client.pem");
        std::fs::write(&pem_path, &pem).unwrap();
        let entra = FakeEntra::new()
            .with_certificate(der)
            .serve_https(tls::shared())
            .await;
        set_env(&[
            ("AZURE_TENANT_ID", &entra.tenant_id()),
            ("AZURE_CLIENT_ID", &entra.client_id()),
            ("AZURE_CLIENT_CERTIFICATE_PATH", pem_path.to_str().unwrap()),
            ("AZURE_AUTHORITY_HOST", &entra.authority_host()),
        ]);
        serve_a_thumbnail(&entra, "[credential]\nkind = \"default\"", &logs).await;
        assert_chosen(&logs, "environment (client certificate)");
        assert_only(&entra, TokenForm::ClientCertificate);
        let key_body = pem
            .split("PRIVATE KEY-----")
            .nth(1)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap();
        assert!(!logs.text().contains(key_body), "the key in the logs");
    });
}

#[test]
fn picks_the_workload_identity() {
    own_process("picks_the_workload_identity", || async {
        let dir = tempfile::tempdir().unwrap();
        clean_env(dir.path(), None);
        let logs = support::logs::capture();
        // What the AKS webhook projects: a service account token (any JWT to the fake).
        let federated = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGh1bWJzIn0.ZmVkZXJhdGVkLTdlNTc";
        let token_file = dir.path().join("azure-identity-token");
        std::fs::write(&token_file, federated).unwrap();
        let entra = FakeEntra::new()
            .with_federated_token(federated)
            .serve_https(tls::shared())
            .await;
        set_env(&[
            ("AZURE_TENANT_ID", &entra.tenant_id()),
            ("AZURE_CLIENT_ID", &entra.workload_identity_client_id()),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AZURE_AUTHORITY_HOST", &entra.authority_host()),
        ]);
        serve_a_thumbnail(&entra, "", &logs).await;
        assert_chosen(&logs, "workload identity");
        assert_only(&entra, TokenForm::WorkloadIdentity);
        assert!(
            !logs.text().contains(federated),
            "the federated token in the logs"
        );
    });
}

#[test]
fn picks_the_app_service_managed_identity() {
    own_process("picks_the_app_service_managed_identity", || async {
        let dir = tempfile::tempdir().unwrap();
        clean_env(dir.path(), None);
        let logs = support::logs::capture();
        let entra = FakeEntra::start_https(tls::shared()).await;
        set_env(&[
            ("IDENTITY_ENDPOINT", &entra.msi_endpoint()),
            ("IDENTITY_HEADER", &entra.identity_header()),
            // A user-assigned identity, by its client id.
            ("AZURE_CLIENT_ID", &entra.managed_identity_client_id()),
        ]);
        serve_a_thumbnail(&entra, "", &logs).await;
        assert_chosen(&logs, "managed identity (App Service)");
        assert_only(&entra, TokenForm::ManagedIdentity);
        assert!(!logs.text().contains(&entra.identity_header()));
    });
}

#[test]
fn picks_the_imds_managed_identity() {
    own_process("picks_the_imds_managed_identity", || async {
        let dir = tempfile::tempdir().unwrap();
        let entra = FakeEntra::start_https(tls::shared()).await;
        let proxy = entra.serve_imds_proxy().await;
        clean_env(dir.path(), Some(proxy));
        let logs = support::logs::capture();
        set_env(&[("AZURE_CLIENT_ID", &entra.managed_identity_client_id())]);
        serve_a_thumbnail(&entra, "", &logs).await;
        assert_chosen(&logs, "managed identity (IMDS)");
        assert_only(&entra, TokenForm::Imds);
        let requests = entra.imds_requests();
        assert!(!requests.is_empty());
        for request in requests {
            assert_eq!(request.host, "169.254.169.254", "addressed to IMDS");
            assert_eq!(
                request.api_version, "2019-08-01",
                "what azure_identity 1.0 sends"
            );
        }
    });
}

#[test]
fn picks_the_azure_cli() {
    own_process("picks_the_azure_cli", || async {
        let dir = tempfile::tempdir().unwrap();
        clean_env(dir.path(), None);
        let logs = support::logs::capture();
        let entra = FakeEntra::start_https(tls::shared()).await;
        // `az account get-access-token` as Azure CLI 2.54+ prints it, for Storage only (shell
        // builtins only: PATH holds nothing else).
        let token = entra.mint_token("https://storage.azure.com");
        let expires_on = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
        let calls = dir.path().join("az-calls");
        let az = dir.path().join("az");
        std::fs::write(
            &az,
            format!(
                r#"#!/bin/sh
echo "$*" >> '{calls}'
case "$*" in
  "account get-access-token -o json --scope https://storage.azure.com/.default") ;;
  *) echo "ERROR: unexpected arguments: $*" >&2; exit 2 ;;
esac
echo '{{"accessToken": "{token}", "expiresOn": "2099-01-01 00:00:00.000000", "expires_on": {expires_on}, "subscription": "7e57a000-0000-4000-8000-00000000000a", "tenant": "{tenant}", "tokenType": "Bearer"}}'
"#,
                calls = calls.display(),
                tenant = entra.tenant_id(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        serve_a_thumbnail(&entra, "", &logs).await;
        assert_chosen(&logs, "Azure CLI");
        let calls = std::fs::read_to_string(&calls).unwrap();
        assert!(
            calls
                .lines()
                .all(|l| l.starts_with("account get-access-token")),
            "{calls}"
        );
        assert!(!logs.text().contains(&token), "the CLI's token in the logs");
        let text = logs.text();
        let skipped = text
            .lines()
            .find(|l| l.contains("ManagedIdentityCredential will use IMDS"))
            .is_some();
        assert!(skipped, "the IMDS managed identity was tried first");
    });
}

#[test]
fn nothing_available_gives_one_error_listing_every_failure() {
    own_process(
        "nothing_available_gives_one_error_listing_every_failure",
        || async {
            let dir = tempfile::tempdir().unwrap();
            clean_env(dir.path(), None);
            let logs = support::logs::capture();
            let upstream = UpstreamSettings::default();
            let http = ams_thumbnails::azure::http_client(&upstream).unwrap();
            let options = ams_thumbnails::azure::client_options(&upstream, &http);
            let credential =
                ams_thumbnails::azure::credential::build(&CredentialSettings::Default, &options)
                    .unwrap();
            let started = std::time::Instant::now();
            let err = credential
                .get_token(&["https://storage.azure.com/.default"], None)
                .await
                .unwrap_err();
            assert_eq!(*err.kind(), azure_core::error::ErrorKind::Credential);
            let text = err.to_string();
            assert_eq!(
                text,
                "no credential of the default chain got a token (environment: AZURE_TENANT_ID, \
             AZURE_CLIENT_ID not set (with AZURE_CLIENT_SECRET or \
             AZURE_CLIENT_CERTIFICATE_PATH); workload identity: AZURE_FEDERATED_TOKEN_FILE, \
             AZURE_CLIENT_ID, AZURE_TENANT_ID not set; managed identity (IMDS): no token \
             within 2000 ms (not available here); Azure CLI: AzureCliCredential \
             authentication failed. az not found on PATH To troubleshoot, visit \
             https://aka.ms/azsdk/rust/identity/troubleshoot#azure-cli)"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "bounded"
            );
            let warned = logs
                .text()
                .lines()
                .filter(|l| l.contains("Entra ID default credential chain failed"))
                .count();
            assert_eq!(warned, 1, "the failure is logged with the error");
            assert!(!logs.text().contains(CHOSEN));
        },
    );
}
