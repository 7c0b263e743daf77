//! Entra ID bearer tokens: signed by the test, checked against a local JWKS over HTTPS.
//!
//! Every answer comes from the service itself (route table, gate, guard), built from settings
//! with `[auth.jwt]` pointing at the fake tenant; the validator is also called directly where
//! a test is about it alone.

use crate::support;

use std::time::Duration;

use ams_thumbnails::config::{ApiKeySettings, AuthMode, AuthSettings, RateLimitSettings, Role};
use ams_thumbnails::http::auth::{JwtError, JwtSettings, JwtValidator};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tower::ServiceExt;

use support::fake_jwks::{FakeJwks, TENANT, TestKey};
use support::logs::Capture;
use support::tls;

const AUDIENCE: &str = "api://ams-thumbnails";
const CLIENT_ID: &str = "7e57a000-0000-4000-8000-0000000000c1";
const OBJECT_ID: &str = "7e57a000-0000-4000-8000-0000000000b1";
const FRONTEND_KEY: &str = "frontend-key-0123456789";

fn issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Claims as Entra ID v2.0 puts them in an app-only access token.
fn claims(roles: &[&str]) -> Value {
    let now = now();
    json!({
        "aud": CLIENT_ID,
        "iss": issuer(),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "aio": "E2ZgYJg...",
        "azp": "7e57a000-0000-4000-8000-0000000000d1",
        "azpacr": "1",
        "oid": OBJECT_ID,
        "sub": OBJECT_ID,
        "tid": TENANT,
        "roles": roles,
        "ver": "2.0",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// `[auth.jwt]` for the fake tenant, over `extra` TOML.
fn jwt_settings(jwks: &FakeJwks, extra: &str) -> JwtSettings {
    use figment::providers::{Format, Toml};
    let text = format!(
        "issuer = \"{}\"\naudiences = [\"{AUDIENCE}\", \"{CLIENT_ID}\"]\njwks_url = \"{}\"\n\
         api_roles = [\"Thumbnails.Read\"]\nadmin_roles = [\"Thumbnails.Admin\"]\n\
         ops_roles = [\"Thumbnails.Ops\"]\n{extra}",
        issuer(),
        jwks.url
    );
    figment::Figment::from(Toml::string(&text))
        .extract()
        .expect("valid [auth.jwt]")
}

/// A validator trusting the test CA, with short timeouts.
fn validator(settings: JwtSettings) -> JwtValidator {
    let http = tls::client_builder(tls::shared())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    JwtValidator::new(settings, http)
}

fn sha256(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The service itself over the samples (`auth.api` and `auth.ops` = "api-key", one API key,
/// tokens per `jwt` when given, the fake tenant's JWKS trusted through `upstream.ca_file`),
/// in process: every answer here comes through the real route table, gate and guard.
fn app(jwt: Option<JwtSettings>, rate: RateLimitSettings) -> Router {
    let mut settings = support::settings("");
    settings.auth = AuthSettings {
        api: AuthMode::ApiKey,
        ops: AuthMode::ApiKey,
        api_keys: vec![ApiKeySettings {
            name: "frontend".into(),
            sha256: sha256(FRONTEND_KEY),
            roles: vec![Role::Api],
        }],
        jwt,
        ..Default::default()
    };
    settings.rate_limit = rate;
    settings.upstream.ca_file = Some(tls::shared().ca_pem.clone());
    settings.upstream.connect_timeout = Duration::from_secs(2);
    settings.upstream.timeout = Duration::from_secs(5);
    support::app_with_probe(settings).0
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts a problem with this status and code.
    fn problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{}",
            self.body
        );
        assert_eq!(self.body["code"], code, "{}", self.body);
        self
    }

    fn challenge(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }
}

async fn call(app: &Router, method: Method, path: &str, bearer: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, token: &str) -> Answer {
    call(
        app,
        Method::GET,
        "/assets/builtin-preset/thumbnails",
        Some(token),
    )
    .await
}

/// Asserts that no captured log line holds any of `tokens` or their signatures.
fn assert_not_logged(logs: &Capture, tokens: &[&str]) {
    let logs = logs.text();
    for token in tokens {
        assert!(!logs.contains(token), "a bearer token in the logs");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token signature in the logs");
    }
}

#[tokio::test]
async fn valid_tokens_get_the_roles_their_claims_map_to() {
    let logs = support::logs::capture();
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("rsa-key-1");
    jwks.publish(&[&key]);
    let app = app(Some(jwt_settings(&jwks, "")), RateLimitSettings::default());

    let reader = key.sign(&claims(&["Thumbnails.Read"]));
    assert_eq!(get(&app, &reader).await.status, 200);
    // v1.0-style audience (the Application ID URI) is accepted too.
    let uri_audience = key.sign(&with(claims(&["Thumbnails.Read"]), "aud", json!(AUDIENCE)));
    assert_eq!(get(&app, &uri_audience).await.status, 200);
    // A delegated scope grants the role as an app role does.
    let mut delegated = claims(&[]);
    delegated.as_object_mut().unwrap().remove("roles");
    delegated["scp"] = json!("User.Read Thumbnails.Read");
    let delegated = key.sign(&delegated);
    assert_eq!(get(&app, &delegated).await.status, 200);

    // The reader may not invalidate: 403 with an insufficient_scope challenge.
    let cache = "/assets/builtin-preset/cache";
    let refused = call(&app, Method::DELETE, cache, Some(&reader)).await;
    refused.problem(403, "forbidden");
    assert!(
        refused.challenge().contains("error=\"insufficient_scope\""),
        "{}",
        refused.challenge()
    );
    let admin = key.sign(&claims(&["Thumbnails.Admin"]));
    assert_eq!(
        call(&app, Method::DELETE, cache, Some(&admin)).await.status,
        204
    );
    assert_eq!(
        call(&app, Method::GET, "/metrics", Some(&reader))
            .await
            .status,
        403
    );
    let ops = key.sign(&claims(&["Thumbnails.Ops"]));
    assert_eq!(
        call(&app, Method::GET, "/metrics", Some(&ops)).await.status,
        200
    );
    // A valid token whose roles map to nothing: 403 on the API, not 401.
    let stranger = key.sign(&claims(&["Something.Else"]));
    get(&app, &stranger).await.problem(403, "forbidden");

    // API keys keep working beside tokens; no credential is still 401.
    assert_eq!(get(&app, FRONTEND_KEY).await.status, 200);
    let anonymous = call(&app, Method::GET, "/assets/builtin-preset/thumbnails", None).await;
    anonymous.problem(401, "unauthorized");
    assert_eq!(anonymous.challenge(), "Bearer realm=\"ams-thumbnails\"");

    assert_eq!(jwks.hits(), 1, "the keys are fetched once and cached");
    let text = logs.text();
    assert!(
        text.contains(&format!("client={OBJECT_ID}"))
            || text.contains(&format!("client=\"{OBJECT_ID}\"")),
        "the token's subject is logged as the client"
    );
    assert_not_logged(
        &logs,
        &[&reader, &uri_audience, &delegated, &admin, &ops, &stranger],
    );
}

#[tokio::test]
async fn refused_tokens_get_401_invalid_token() {
    let logs = support::logs::capture();
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("rsa-key-1");
    let impostor = TestKey::rsa("rsa-key-1");
    jwks.publish(&[&key]);
    let app = app(
        Some(jwt_settings(&jwks, "leeway = \"60s\"\n")),
        RateLimitSettings::default(),
    );
    let read = || claims(&["Thumbnails.Read"]);
    let now = now();

    // Within the leeway: still accepted.
    let just_expired = key.sign(&with(read(), "exp", json!(now - 30)));
    assert_eq!(
        get(&app, &just_expired).await.status,
        200,
        "exp within the leeway"
    );
    let almost_valid = key.sign(&with(read(), "nbf", json!(now + 30)));
    assert_eq!(
        get(&app, &almost_valid).await.status,
        200,
        "nbf within the leeway"
    );

    let valid = key.sign(&read());
    let (header, payload, signature) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    // The payload of an admin token under the reader token's signature.
    let admin_payload = key.sign(&claims(&["Thumbnails.Admin"]));
    let swapped = format!(
        "{header}.{}.{signature}",
        admin_payload.split('.').nth(1).unwrap()
    );
    let mut no_subject = read();
    no_subject.as_object_mut().unwrap().remove("oid");
    no_subject.as_object_mut().unwrap().remove("sub");
    let mut no_audience = read();
    no_audience.as_object_mut().unwrap().remove("aud");
    let mut no_expiry = read();
    no_expiry.as_object_mut().unwrap().remove("exp");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            key.sign(&with(read(), "exp", json!(now - 3600))),
            "expired",
        ),
        (
            "not yet valid",
            key.sign(&with(read(), "nbf", json!(now + 3600))),
            "not valid yet",
        ),
        (
            "wrong audience",
            key.sign(&with(read(), "aud", json!("api://someone-else"))),
            "audience",
        ),
        (
            "wrong issuer",
            key.sign(&with(
                read(),
                "iss",
                json!("https://login.microsoftonline.com/another-tenant/v2.0"),
            )),
            "issuer",
        ),
        (
            "v1.0 issuer",
            key.sign(&with(
                read(),
                "iss",
                json!(format!("https://sts.windows.net/{TENANT}/")),
            )),
            "issuer",
        ),
        ("no audience", key.sign(&no_audience), "required claim"),
        ("no expiry", key.sign(&no_expiry), "required claim"),
        ("no subject", key.sign(&no_subject), "subject"),
        (
            "signed by another key under the same kid",
            impostor.sign(&read()),
            "signature",
        ),
        ("tampered payload", swapped, "signature"),
        (
            "HS256 (not an accepted algorithm)",
            {
                let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
                h.kid = Some(key.kid.clone());
                jsonwebtoken::encode(
                    &h,
                    &read(),
                    &jsonwebtoken::EncodingKey::from_secret(b"guess").unwrap(),
                )
                .unwrap()
            },
            "algorithm",
        ),
        (
            "no kid",
            key.sign_as(None, Algorithm::RS256, &read()),
            "kid",
        ),
        (
            "garbage header",
            format!("bm90LWpzb24.{payload}.{signature}"),
            "header",
        ),
    ];
    let mut tokens = vec![valid.clone(), just_expired.clone(), almost_valid.clone()];
    for (what, token, reason) in &cases {
        let answer = get(&app, token).await;
        answer.problem(401, "unauthorized");
        let challenge = answer.challenge();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
        let detail = answer.body["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{what}: {detail}");
        assert!(
            !detail.contains(token.as_str()) && !detail.contains(token.split('.').nth(1).unwrap()),
            "{what}: the token is echoed"
        );
        tokens.push(token.clone());
    }
    // A bad token is refused even on a public route (like a wrong key).
    get(&app, &cases[0].1).await.problem(401, "unauthorized");
    assert_eq!(
        call(&app, Method::GET, "/healthz", Some(&cases[0].1))
            .await
            .status,
        401
    );
    assert_eq!(jwks.hits(), 1, "refusals cost no extra fetch");
    assert_not_logged(
        &logs,
        &tokens.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

#[tokio::test]
async fn es256_is_accepted_only_when_configured() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let rsa = TestKey::rsa("rsa-key");
    let ec = TestKey::ec("ec-key");
    jwks.publish(&[&rsa, &ec]);
    let read = claims(&["Thumbnails.Read"]);

    let default = app(Some(jwt_settings(&jwks, "")), RateLimitSettings::default());
    assert_eq!(get(&default, &rsa.sign(&read)).await.status, 200);
    get(&default, &ec.sign(&read))
        .await
        .problem(401, "unauthorized");

    let both = app(
        Some(jwt_settings(&jwks, "algorithms = [\"RS256\", \"ES256\"]\n")),
        RateLimitSettings::default(),
    );
    let a = get(&both, &ec.sign(&read)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(get(&both, &rsa.sign(&read)).await.status, 200);
    // The RSA key's kid with an EC algorithm: the key does not fit.
    let confused = ec.sign_as(Some(&rsa.kid), Algorithm::ES256, &read);
    get(&both, &confused).await.problem(401, "unauthorized");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_after_the_cooldown() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let old = TestKey::rsa("key-2024");
    let new = TestKey::rsa("key-2025");
    jwks.publish(&[&old]);
    let app = app(
        Some(jwt_settings(&jwks, "jwks_refresh_cooldown = \"300ms\"\n")),
        RateLimitSettings::default(),
    );
    let read = claims(&["Thumbnails.Read"]);
    assert_eq!(get(&app, &old.sign(&read)).await.status, 200);
    assert_eq!(jwks.hits(), 1);

    // Entra ID starts signing with a new key.
    jwks.publish(&[&new, &old]);
    let fresh = new.sign(&read);
    // Right after a fetch, an unknown kid does not refetch.
    let early = get(&app, &fresh).await;
    early.problem(401, "unauthorized");
    assert!(
        early.body["detail"].as_str().unwrap().contains("kid"),
        "{}",
        early.body
    );
    assert_eq!(jwks.hits(), 1, "no refetch within the cooldown");

    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        get(&app, &fresh).await.status,
        200,
        "one refetch finds the new key"
    );
    assert_eq!(jwks.hits(), 2);
    assert_eq!(get(&app, &fresh).await.status, 200);
    assert_eq!(
        get(&app, &old.sign(&read)).await.status,
        200,
        "the old key still works"
    );
    assert_eq!(jwks.hits(), 2, "known keys need no fetch");

    // The old key is withdrawn: after the next refresh its tokens are refused.
    jwks.publish(&[&new]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let unknown = TestKey::rsa("key-2026");
    get(&app, &unknown.sign(&read))
        .await
        .problem(401, "unauthorized");
    assert_eq!(jwks.hits(), 3);
    get(&app, &old.sign(&read))
        .await
        .problem(401, "unauthorized");
    assert_eq!(get(&app, &fresh).await.status, 200);
    assert_eq!(jwks.hits(), 3);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_one_jwks_fetch() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("real-key");
    jwks.publish(&[&key]);
    let app = app(Some(jwt_settings(&jwks, "")), RateLimitSettings::default());
    let read = claims(&["Thumbnails.Read"]);
    // Cold cache, 200 concurrent tokens with made-up kids.
    let flood: Vec<String> = (0..200)
        .map(|i| key.sign_as(Some(&format!("made-up-{i}")), Algorithm::RS256, &read))
        .collect();
    let answers = futures::future::join_all(flood.iter().map(|t| get(&app, t))).await;
    for answer in &answers {
        answer.problem(401, "unauthorized");
    }
    assert_eq!(jwks.hits(), 1, "one fetch for the whole flood");
    // And after it, within the cooldown: still no fetch, real tokens still pass.
    for token in flood.iter().take(50) {
        get(&app, token).await.problem(401, "unauthorized");
    }
    assert_eq!(get(&app, &key.sign(&read)).await.status, 200);
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test]
async fn an_unreachable_jwks_is_503_not_401() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("key");
    jwks.publish(&[&key]);
    jwks.fail_with(Some(503));
    let app = app(
        Some(jwt_settings(
            &jwks,
            "jwks_refresh_cooldown = \"200ms\"\njwks_cache_ttl = \"400ms\"\n",
        )),
        RateLimitSettings::default(),
    );
    let token = key.sign(&claims(&["Thumbnails.Read"]));
    let answer = get(&app, &token).await;
    answer.problem(503, "upstream-unavailable");
    assert!(answer.challenge().is_empty(), "not the caller's fault");
    get(&app, &token).await.problem(503, "upstream-unavailable");
    assert_eq!(jwks.hits(), 1, "no retry before the cooldown");

    // Back up: after the cooldown, the next token fetches the keys.
    jwks.fail_with(None);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(get(&app, &token).await.status, 200);
    assert_eq!(jwks.hits(), 2);

    // Down again once the cache is stale: the known keys keep working.
    jwks.fail_with(Some(500));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get(&app, &token).await.status, 200, "stale keys serve");
    assert_eq!(jwks.hits(), 3);

    // Nothing listening at all.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut settings = jwt_settings(&jwks, "");
    settings.jwks_url = format!("https://{closed}/{TENANT}/discovery/v2.0/keys")
        .parse()
        .unwrap();
    let unreachable = validator(settings.clone());
    assert!(matches!(
        unreachable.validate(&token).await,
        Err(JwtError::Unavailable(_))
    ));
    let app = app_with(settings);
    get(&app, &token).await.problem(503, "upstream-unavailable");
}

fn app_with(jwt: JwtSettings) -> Router {
    app(Some(jwt), RateLimitSettings::default())
}

#[tokio::test]
async fn tokens_are_rate_limited_per_subject() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("key");
    jwks.publish(&[&key]);
    let app = app(
        Some(jwt_settings(&jwks, "")),
        RateLimitSettings {
            requests_per_second: 0.01,
            burst: 2,
            ..RateLimitSettings::default()
        },
    );
    let first = key.sign(&claims(&["Thumbnails.Read"]));
    let second_token_same_subject =
        key.sign(&with(claims(&["Thumbnails.Read"]), "jti", json!("another")));
    let other = key.sign(&with(
        with(claims(&["Thumbnails.Read"]), "oid", json!("someone-else")),
        "sub",
        json!("someone-else"),
    ));
    assert_eq!(get(&app, &first).await.status, 200);
    assert_eq!(get(&app, &second_token_same_subject).await.status, 200);
    get(&app, &first).await.problem(429, "rate-limited");
    assert_eq!(
        get(&app, &other).await.status,
        200,
        "buckets are per subject"
    );
}

#[tokio::test]
async fn without_jwt_settings_bearer_jwts_are_api_keys() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("key");
    jwks.publish(&[&key]);
    let app = app(None, RateLimitSettings::default());
    let answer = get(&app, &key.sign(&claims(&["Thumbnails.Read"]))).await;
    answer.problem(401, "unauthorized");
    assert_eq!(answer.challenge(), "Bearer realm=\"ams-thumbnails\"");
    assert!(answer.body["detail"].as_str().unwrap().contains("API key"));
    assert_eq!(jwks.hits(), 0);
}

#[tokio::test]
async fn an_api_key_shaped_like_a_jwt_stays_a_key() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let odd_key = "part1.part2.part3";
    let mut settings = support::settings("");
    settings.auth = AuthSettings {
        api: AuthMode::ApiKey,
        api_keys: vec![ApiKeySettings {
            name: "odd".into(),
            sha256: sha256(odd_key),
            roles: vec![Role::Api],
        }],
        jwt: Some(jwt_settings(&jwks, "")),
        ..Default::default()
    };
    settings.upstream.ca_file = Some(tls::shared().ca_pem.clone());
    let app = support::app_with_probe(settings).0;
    assert_eq!(get(&app, odd_key).await.status, 200);
    assert_eq!(jwks.hits(), 0, "no JWKS fetch for a key");
}

#[tokio::test]
async fn jwks_entries_the_service_cannot_use_are_skipped() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("good");
    let mut encryption = TestKey::rsa("enc").jwk();
    encryption["use"] = json!("enc");
    jwks.publish_raw(vec![
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        json!({"kty": "OKP", "kid": "weird", "crv": "X25519", "x": "AAAA"}),
        json!({"kty": "unknown", "kid": "future"}),
        encryption,
        key.jwk(),
    ]);
    let app = app(Some(jwt_settings(&jwks, "")), RateLimitSettings::default());
    let read = claims(&["Thumbnails.Read"]);
    assert_eq!(get(&app, &key.sign(&read)).await.status, 200);
    // A symmetric key in the set must never verify an HS256 token.
    let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
    h.kid = Some("hmac".into());
    let forged = jsonwebtoken::encode(
        &h,
        &read,
        &jsonwebtoken::EncodingKey::from_secret(b"secret").unwrap(),
    )
    .unwrap();
    get(&app, &forged).await.problem(401, "unauthorized");
}

// ---- Through the real service (config `[auth.jwt]` wired into `app()`) ----

/// The service's settings over the samples: API and ops need a credential, tokens from the
/// fake tenant accepted (its JWKS trusted through `upstream.ca_file`).
fn service_settings(jwks: &FakeJwks, extra_jwt: &str) -> ams_thumbnails::Settings {
    support::settings(&format!(
        "[auth]\napi = \"api-key\"\nops = \"api-key\"\n\
         [auth.jwt]\nissuer = \"{}\"\naudiences = [\"{CLIENT_ID}\"]\njwks_url = \"{}\"\n\
         api_roles = [\"Thumbnails.Read\"]\nadmin_roles = [\"Thumbnails.Admin\"]\n\
         ops_roles = [\"Thumbnails.Ops\"]\n{extra_jwt}\n\
         [upstream]\nca_file = \"{}\"\n",
        issuer(),
        jwks.url,
        tls::shared().ca_pem.display()
    ))
}

#[tokio::test]
async fn the_service_accepts_entra_tokens_from_its_configuration() {
    let logs = support::logs::capture();
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("service-key");
    jwks.publish(&[&key]);
    let server = support::TestServer::start(service_settings(&jwks, "")).await;
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = server.client.request(method, server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let list = "/assets/builtin-preset/thumbnails";
    let cache = "/assets/builtin-preset/cache";

    let reader = key.sign(&claims(&["Thumbnails.Read"]));
    let response = send(reqwest::Method::GET, list, Some(&reader))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(!body["thumbnails"].as_array().unwrap().is_empty(), "{body}");
    support::assert_problem(
        send(reqwest::Method::GET, list, None).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    support::assert_problem(
        send(reqwest::Method::DELETE, cache, Some(&reader))
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let admin = key.sign(&claims(&["Thumbnails.Admin"]));
    assert_eq!(
        send(reqwest::Method::DELETE, cache, Some(&admin))
            .await
            .unwrap()
            .status(),
        204
    );
    let ops = key.sign(&claims(&["Thumbnails.Ops"]));
    assert_eq!(
        send(reqwest::Method::GET, "/metrics", Some(&ops))
            .await
            .unwrap()
            .status(),
        200
    );
    let expired = key.sign(&with(
        claims(&["Thumbnails.Read"]),
        "exp",
        json!(now() - 3600),
    ));
    let response = send(reqwest::Method::GET, list, Some(&expired))
        .await
        .unwrap();
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    support::assert_problem(response, 401, "unauthorized").await;

    // A key not seen yet, within the (default 5 min) cooldown of a successful fetch: refused
    // without a refetch.
    let unknown = TestKey::rsa("unknown-key").sign(&claims(&["Thumbnails.Read"]));
    let response = send(reqwest::Method::GET, list, Some(&unknown))
        .await
        .unwrap();
    support::assert_problem(response, 401, "unauthorized").await;
    assert_eq!(jwks.hits(), 1, "one fetch for the whole test");

    let text = logs.text();
    assert!(
        text.contains(&format!("client={OBJECT_ID}"))
            || text.contains(&format!("client=\"{OBJECT_ID}\"")),
        "the subject is logged as the client"
    );
    assert_not_logged(&logs, &[&reader, &admin, &ops, &expired, &unknown]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_service_answers_503_while_the_jwks_is_unreachable() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("k");
    jwks.publish(&[&key]);
    jwks.fail_with(Some(500));
    let server = support::TestServer::start(service_settings(&jwks, "")).await;
    let token = key.sign(&claims(&["Thumbnails.Read"]));
    let response = server
        .client
        .get(server.url("/assets/builtin-preset/thumbnails"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    support::assert_problem(response, 503, "upstream-unavailable").await;
    assert_eq!(server.probe.calls(), 0);
    server.stop().await.unwrap();
}

#[test]
fn jwt_settings_are_validated_at_start_up() {
    let base = |jwt: &str, auth: &str| {
        ams_thumbnails::Settings::from_toml(&format!(
            "[auth]\n{auth}[auth.jwt]\nissuer = \"{}\"\naudiences = [\"{CLIENT_ID}\"]\n{jwt}",
            issuer()
        ))
    };
    let https = "jwks_url = \"https://login.microsoftonline.com/t/discovery/v2.0/keys\"\n";
    // Tokens alone may guard the API (no API key needed) ...
    base(https, "api = \"api-key\"\n").expect("tokens grant the api role");
    // ... but ops needs a key or ops_roles.
    let err = base(https, "ops = \"api-key\"\n").unwrap_err().to_string();
    assert!(err.contains("auth.ops"), "{err}");
    base(
        &format!("{https}ops_roles = [\"Thumbnails.Ops\"]\n"),
        "ops = \"api-key\"\n",
    )
    .expect("ops_roles grant ops");
    let err = base("jwks_url = \"http://keys.test/keys\"\n", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.jwt.jwks_url"), "{err}");
    let err = base(&format!("{https}algorithms = [\"HS256\"]\n"), "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("HS256") || err.contains("algorithms"), "{err}");
    let err = base(&format!("{https}audience = \"x\"\n"), "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("audience"), "{err}");
}
