//! The client certificate credential: the app proves itself with a JWT signed by its
//! certificate's private key (`client_assertion`, Microsoft identity platform "certificate
//! credentials") instead of a secret. `azure_identity` 1.0 has one only with OpenSSL, which this
//! service does not link; its `ClientAssertionCredential` makes the token request, this module
//! makes the assertion: RS256 with the certificate's SHA-1 thumbprint as `x5t` (as
//! `azure_identity`'s own does), `aud` the token endpoint, `iss` = `sub` = the client id, a
//! fresh `jti`, valid for five minutes.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientMethodOptions, ClientOptions, Url};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use serde_json::json;

use super::pkcs12;

/// How long an assertion is valid (the documentation asks for 5 to 10 minutes at most).
const ASSERTION_LIFETIME_SECS: i64 = 300;

/// A certificate with its RSA private key, read from a PEM or PFX file.
pub struct Certificate {
    key: RsaKeyPair,
    /// DER, the key's own certificate first, then the rest in file order.
    chain: Vec<Vec<u8>>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("x5t", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Reads a PEM file (a `CERTIFICATE` and an unencrypted `PRIVATE KEY` / `RSA PRIVATE KEY`)
    /// or a PFX file (`password` empty when it has none). Errors never hold the file's bytes.
    pub fn from_file_bytes(bytes: &[u8], password: Option<&str>) -> Result<Self, String> {
        let pkcs12::Contents { keys, certificates } = if bytes
            .windows(11)
            .any(|w| w == b"-----BEGIN ")
        {
            if password.is_some_and(|p| !p.is_empty()) {
                return Err("a password is for PFX files; the PEM key must be unencrypted".into());
            }
            from_pem(bytes)?
        } else {
            pkcs12::parse(bytes, password.unwrap_or_default())?
        };
        let mut keys = keys.iter().map(|der| {
            RsaKeyPair::from_pkcs8(der)
                .or_else(|_| RsaKeyPair::from_der(der))
                .map_err(|_| "the private key is not an RSA key (Entra ID takes RSA certificates)")
        });
        let key = keys.next().ok_or("the file holds no private key")??;
        // The key's certificate: the one whose public key is the key's (its RSAPublicKey DER sits
        // in the certificate's SubjectPublicKeyInfo as is).
        let public = key.public_key().as_ref();
        let own = certificates
            .iter()
            .position(|cert| cert.windows(public.len()).any(|w| w == public))
            .ok_or("no certificate in the file matches its private key")?;
        let mut chain = certificates;
        let leaf = chain.remove(own);
        chain.insert(0, leaf);
        Ok(Self { key, chain })
    }

    /// `x5t`: the base64url SHA-1 thumbprint of the certificate's DER.
    pub fn thumbprint(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &self.chain[0]))
    }
}

/// The DER of every private key and certificate of a PEM file (the same parts as a PFX's).
fn from_pem(bytes: &[u8]) -> Result<pkcs12::Contents, String> {
    let mut keys = Vec::new();
    let mut certificates = Vec::new();
    for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(bytes) {
        let (kind, der) = section.map_err(|e| match e {
            pem::Error::Base64Decode(_) => "a PEM section is not base64".to_owned(),
            _ => "the PEM file is malformed".to_owned(),
        })?;
        match kind {
            SectionKind::Certificate => certificates.push(der),
            SectionKind::RsaPrivateKey | SectionKind::PrivateKey => keys.push(der),
            SectionKind::EcPrivateKey => {
                return Err(
                    "the private key is an EC key (Entra ID takes RSA certificates)".into(),
                );
            }
            _ => {}
        }
    }
    if keys.is_empty() && bytes.windows(19).any(|w| w == b"ENCRYPTED PRIVATE K") {
        return Err(
            "the PEM private key is encrypted: decrypt it (openssl pkcs8) or use a PFX \
                    with a password"
                .into(),
        );
    }
    Ok(pkcs12::Contents { keys, certificates })
}

/// The credential: `ClientAssertionCredential` with assertions signed by `certificate`.
/// `authority_host` is where the token endpoint is (and so the assertion's audience).
pub fn credential(
    tenant_id: &str,
    client_id: &str,
    certificate: Certificate,
    send_chain: bool,
    authority_host: &Url,
    client_options: ClientOptions,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let options = ClientAssertionCredentialOptions {
        client_options: super::with_authority_host(client_options, authority_host),
    };
    // The same endpoint `ClientAssertionCredential` posts to.
    let audience = authority_host
        .join(&format!("/{tenant_id}/oauth2/v2.0/token"))
        .map_err(|e| {
            azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                format!("no token endpoint for tenant {tenant_id}: {e}"),
            )
        })?;
    let assertion = CertificateAssertion {
        client_id: client_id.to_owned(),
        audience: audience.to_string(),
        header: header(&certificate, send_chain),
        key: certificate.key,
    };
    let credential: Arc<dyn TokenCredential> = ClientAssertionCredential::new(
        tenant_id.to_owned(),
        client_id.to_owned(),
        assertion,
        Some(options),
    )?;
    Ok(credential)
}

/// The JWT header, base64url: RS256, `x5t`, and the chain as `x5c` when asked for.
fn header(certificate: &Certificate, send_chain: bool) -> String {
    let mut header = json!({ "alg": "RS256", "typ": "JWT", "x5t": certificate.thumbprint() });
    if send_chain {
        header["x5c"] = certificate
            .chain
            .iter()
            .map(|der| STANDARD.encode(der))
            .collect();
    }
    URL_SAFE_NO_PAD.encode(header.to_string())
}

struct CertificateAssertion {
    client_id: String,
    audience: String,
    header: String,
    key: RsaKeyPair,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl CertificateAssertion {
    fn sign(&self, now: i64) -> Result<String, aws_lc_rs::error::Unspecified> {
        let claims = json!({
            "aud": self.audience,
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.sign(time::OffsetDateTime::now_utc().unix_timestamp())
            .map_err(|_| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "cannot sign the client assertion with the certificate's key",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/credential");
    const PFX_PASSWORD: &str = "test-pfx-password-7e57";

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
    }

    /// The DER of the first certificate of a PEM text.
    fn pem_certificate(pem: &[u8]) -> Vec<u8> {
        from_pem(pem).unwrap().certificates.remove(0)
    }

    /// A fresh RSA key (PKCS#8 PEM) and a self-signed certificate for it (PEM).
    fn generated(name: &str) -> (String, String) {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = key.as_der().unwrap();
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&signer)
            .unwrap();
        (signer.serialize_pem(), cert.pem())
    }

    /// The parts of a signed assertion, its signature checked with `certificate`'s key.
    fn verified(jwt: &str, certificate: &Certificate) -> (serde_json::Value, serde_json::Value) {
        let (input, signature) = jwt.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(
            &RSA_PKCS1_2048_8192_SHA256,
            certificate.key.public_key().as_ref(),
        )
        .verify(
            input.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("signed with the certificate's key");
        let part = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        let (header, claims) = input.split_once('.').unwrap();
        (part(header), part(claims))
    }

    #[test]
    fn a_pem_assertion_is_rs256_with_x5t_aud_iss_sub_and_five_minutes() {
        let (key, cert) = generated("client");
        // Another certificate first: the key's own is found by its public key.
        let (_, other) = generated("ca");
        let pem = format!("{other}{cert}{key}");
        let certificate = Certificate::from_file_bytes(pem.as_bytes(), None).unwrap();
        let own = pem_certificate(cert.as_bytes());
        assert_eq!(certificate.chain[0], own);
        assert_eq!(certificate.chain.len(), 2);
        let x5t = URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, &own));
        assert_eq!(certificate.thumbprint(), x5t);
        assert!(
            !format!("{certificate:?}").contains("BEGIN"),
            "Debug shows no key"
        );

        let audience = "https://login.example/tenant/oauth2/v2.0/token";
        let header = header(&certificate, false);
        let assertion = CertificateAssertion {
            client_id: "app".into(),
            audience: audience.into(),
            header,
            key: certificate.key,
        };
        let jwt = assertion.sign(1_700_000_000).unwrap();
        let certificate = Certificate::from_file_bytes(pem.as_bytes(), None).unwrap();
        let (header, claims) = verified(&jwt, &certificate);
        assert_eq!(header, json!({ "alg": "RS256", "typ": "JWT", "x5t": x5t }));
        assert_eq!(claims["aud"], audience);
        assert_eq!(
            (&claims["iss"], &claims["sub"]),
            (&json!("app"), &json!("app"))
        );
        assert_eq!(claims["nbf"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_300);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
        assert_ne!(
            assertion.sign(1).unwrap(),
            assertion.sign(1).unwrap(),
            "fresh jti"
        );
    }

    #[test]
    fn the_chain_is_sent_as_x5c_when_asked() {
        let (key, cert) = generated("client");
        let certificate =
            Certificate::from_file_bytes(format!("{key}{cert}").as_bytes(), None).unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(super::header(&certificate, true))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header["x5c"],
            json!([STANDARD.encode(pem_certificate(cert.as_bytes()))])
        );
    }

    #[test]
    fn pfx_files_with_aes_or_no_encryption_are_read() {
        let cert = pem_certificate(&fixture("cert.pem"));
        let aes =
            Certificate::from_file_bytes(&fixture("client-aes.pfx"), Some(PFX_PASSWORD)).unwrap();
        assert_eq!(aes.chain, vec![cert.clone()]);
        let plain = Certificate::from_file_bytes(&fixture("client-plain.pfx"), None).unwrap();
        assert_eq!(plain.chain, vec![cert]);
        assert_eq!(
            aes.key.public_key().as_ref(),
            plain.key.public_key().as_ref(),
            "the same key"
        );
    }

    #[test]
    fn pfx_problems_are_told_without_the_password() {
        let err =
            Certificate::from_file_bytes(&fixture("client-aes.pfx"), Some("wrong")).unwrap_err();
        assert_eq!(err, "cannot decrypt the PFX: wrong password");
        let err = Certificate::from_file_bytes(&fixture("client-aes.pfx"), None).unwrap_err();
        assert!(err.contains("wrong password"), "{err}");
        let err = Certificate::from_file_bytes(&fixture("client-legacy.pfx"), Some(PFX_PASSWORD))
            .unwrap_err();
        assert!(err.contains("legacy PKCS#12"), "{err}");
        assert!(!err.contains(PFX_PASSWORD));
    }

    #[test]
    fn pem_problems_are_told_by_name() {
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = Certificate::from_file_bytes(cert.as_bytes(), None).unwrap_err();
        assert!(err.contains("no private key"), "{err}");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = Certificate::from_file_bytes(encrypted.as_bytes(), None).unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
        let err = Certificate::from_file_bytes(cert.as_bytes(), Some("pw")).unwrap_err();
        assert!(err.contains("PFX"), "{err}");
        let (key, _) = generated("client");
        let (_, other) = generated("other");
        let err =
            Certificate::from_file_bytes(format!("{key}{other}").as_bytes(), None).unwrap_err();
        assert!(err.contains("matches"), "{err}");
    }
}
