//! A throwaway PKI for tests (a CA and a leaf for `127.0.0.1`/`localhost` signed by it), an HTTPS
//! server for axum routers, and a reqwest client that trusts only the test CA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

/// A test CA and a leaf certificate it signed, written as PEM files in a temp dir that lives as
/// long as this value.
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM): trust this one.
    pub ca_pem: PathBuf,
    /// The leaf certificate (PEM), SAN `IP:127.0.0.1` and `DNS:localhost`.
    pub cert_pem: PathBuf,
    /// The leaf's private key (PKCS#8 PEM).
    pub key_pem: PathBuf,
    /// The CA certificate (DER).
    pub ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestPki {
    /// Generates a fresh CA and a leaf for `127.0.0.1`/`localhost` signed by it, in `dir`.
    fn generate_in(dir: tempfile::TempDir) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "ams-thumbnails test CA");
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-signed CA");

        // rcgen turns SAN strings that parse as IP addresses into IP SANs.
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("leaf params");
        let mut leaf_name = DistinguishedName::new();
        leaf_name.push(DnType::CommonName, "localhost");
        leaf_params.distinguished_name = leaf_name;
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .expect("leaf signed by the CA");

        let ca_pem = dir.path().join("ca.pem");
        let cert_pem = dir.path().join("cert.pem");
        let key_pem = dir.path().join("key.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write ca.pem");
        std::fs::write(&cert_pem, leaf.pem()).expect("write cert.pem");
        std::fs::write(&key_pem, leaf_key.serialize_pem()).expect("write key.pem");

        Self {
            ca_der: ca.der().to_vec(),
            cert_der: leaf.der().to_vec(),
            key_der: leaf_key.serialize_der(),
            _dir: dir,
            ca_pem,
            cert_pem,
            key_pem,
        }
    }

    /// The CA as a reqwest root certificate.
    pub fn ca_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_der(&self.ca_der).expect("CA certificate (DER)")
    }

    /// A rustls server config presenting the leaf certificate (HTTP/2 and HTTP/1.1 via ALPN).
    pub fn server_config(&self) -> rustls::ServerConfig {
        // Pick the provider explicitly: with more than one rustls crypto backend compiled in,
        // `ServerConfig::builder()` panics when no process-level provider is installed.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![pki_types::CertificateDer::from(self.cert_der.clone())],
                pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
                    self.key_der.clone(),
                )),
            )
            .expect("leaf certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// One test PKI per test process.
///
/// Statics are never dropped, so its files live under cargo's per-target temp dir
/// (`target/tmp/pki`, gone with `cargo clean`) rather than the system temp dir; directories
/// left there by test processes that ended more than an hour ago are removed.
pub fn shared() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pki");
        std::fs::create_dir_all(&parent).expect("create target/tmp/pki");
        sweep_stale(&parent, std::time::Duration::from_secs(3600));
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&parent)
            .expect("temp dir for the shared test PKI");
        TestPki::generate_in(dir)
    })
}

/// Best effort: removes the entries of `parent` not modified for `age`.
fn sweep_stale(parent: &std::path::Path, age: std::time::Duration) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|elapsed| elapsed > age);
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Serves an axum Router over HTTPS on 127.0.0.1:0 with the leaf cert; returns the bound address.
/// Runs until the process ends (or the runtime it was spawned on shuts down).
pub async fn serve_https(router: axum::Router, pki: &TestPki) -> SocketAddr {
    let acceptor = TlsAcceptor::from(Arc::new(pki.server_config()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(_) => {
                    // e.g. EMFILE: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                // A failed handshake (e.g. a client that does not trust the CA) only ends
                // this connection.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// A reqwest client trusting the test CA and nothing else.
pub fn client(pki: &TestPki) -> reqwest::Client {
    client_builder(pki).build().expect("reqwest client")
}

/// A reqwest client builder trusting the test CA and nothing else, to add settings to.
pub fn client_builder(pki: &TestPki) -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_certs_only([pki.ca_certificate()])
}
