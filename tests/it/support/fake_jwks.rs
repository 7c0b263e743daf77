//! A fake Entra ID signing-key endpoint (JWKS) over HTTPS, and signing keys the tests mint
//! tokens with.
//!
//! The key set can be replaced at any time (key rotation), the endpoint can be made to fail,
//! and every request is counted, so tests can prove how often the service fetches the keys.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::tls::{self, TestPki};

/// A signing key a test holds: it signs tokens and publishes its public half as a JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    /// A fresh 2048-bit RSA key (RS256), as Entra ID uses.
    pub fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("RSA key generation");
        let pkcs8 = pair.as_der().expect("PKCS#8 export");
        // jsonwebtoken signs RSA with the PKCS#1 RSAPrivateKey inside the PKCS#8 envelope.
        let pkcs1 = pkcs8_private_key(pkcs8.as_ref());
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(pkcs1))
    }

    /// A fresh P-256 key (ES256).
    pub fn ec(kid: &str) -> Self {
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
        .expect("EC key generation");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8 export");
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let mut jwk = serde_json::to_value(jwk).expect("JWK as JSON");
        // As Entra ID publishes them: no `alg`, an `issuer` the JWK spec does not know.
        jwk.as_object_mut().unwrap().remove("alg");
        jwk["issuer"] = json!("https://login.microsoftonline.com/{tenantid}/v2.0");
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        }
    }

    /// The public key as published in a JWKS.
    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A token over `claims`, its header naming this key.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(Some(&self.kid), self.alg, claims)
    }

    /// A token signed by this key whose header says `kid` and `alg` (which may lie).
    pub fn sign_as(&self, kid: Option<&str>, alg: Algorithm, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign the token")
    }
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (DER).
fn pkcs8_private_key(der: &[u8]) -> &[u8] {
    let (tag, info, _) = tlv(der);
    assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
    let (_version, rest) = {
        let (tag, v, rest) = tlv(info);
        assert_eq!(tag, 0x02, "version INTEGER");
        (v, rest)
    };
    let (tag, _algorithm, rest) = tlv(rest);
    assert_eq!(tag, 0x30, "AlgorithmIdentifier SEQUENCE");
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    key
}

/// One DER tag-length-value: (tag, value, the bytes after it).
fn tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let (len, header) = match der[1] {
        short if short < 0x80 => (usize::from(short), 2),
        long => {
            let n = usize::from(long & 0x7f);
            let len = der[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        }
    };
    (tag, &der[header..header + len], &der[header + len..])
}

struct JwksState {
    keys: Mutex<Vec<Value>>,
    hits: AtomicUsize,
    /// 0: answer normally; else answer this status.
    fail_status: AtomicU16,
}

/// The JWKS endpoint, `GET /{tenant}/discovery/v2.0/keys` as Entra ID serves it.
#[derive(Clone)]
pub struct FakeJwks {
    state: Arc<JwksState>,
    /// The full JWKS URL.
    pub url: url::Url,
}

pub const TENANT: &str = "7e57a000-0000-4000-8000-00000000000a";

impl FakeJwks {
    /// Serves an empty key set over HTTPS with the test PKI.
    pub async fn start(pki: &TestPki) -> Self {
        let state = Arc::new(JwksState {
            keys: Mutex::new(Vec::new()),
            hits: AtomicUsize::new(0),
            fail_status: AtomicU16::new(0),
        });
        let router = Router::new()
            .route("/{tenant}/discovery/v2.0/keys", get(keys))
            .with_state(state.clone());
        let addr = tls::serve_https(router, pki).await;
        let url = format!("https://{addr}/{TENANT}/discovery/v2.0/keys")
            .parse()
            .unwrap();
        Self { state, url }
    }

    /// Replaces the published keys (rotation).
    pub fn publish(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    /// Publishes raw JWKS entries (keys the service must skip, for instance).
    pub fn publish_raw(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    /// Makes every request answer `status` (`None`: answer normally again).
    pub fn fail_with(&self, status: Option<u16>) {
        self.state
            .fail_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn keys(State(state): State<Arc<JwksState>>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let status = state.fail_status.load(Ordering::SeqCst);
    if status != 0 {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let keys = state.keys.lock().unwrap().clone();
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({ "keys": keys }).to_string(),
    )
        .into_response()
}
