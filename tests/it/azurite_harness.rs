//! Proves the Azurite test harness: a real Azurite starts (http, and https with OAuth on the test
//! PKI), the account SAS signer is accepted (and a wrong signature refused), and seeded blobs read
//! back byte for byte.

use crate::support;

use support::azurite::{ACCOUNT, Azurite, KEY};
use support::seed::{self, account_sas, create_container, get_blob, put_blob};
use support::tls;

/// Blob names that exercise the URL encoding: a virtual folder, a space, unicode, `#` and `?`.
const BLOBS: [(&str, &[u8], &str); 3] = [
    (
        "poster.jpg",
        b"\xff\xd8\xff\xe0 not really a jpeg",
        "image/jpeg",
    ),
    (
        "thumbs/Mon film #2/vid\u{e9}o 1 ?.png",
        b"\x89PNG\r\n\x1a\n pixels",
        "image/png",
    ),
    ("notes.txt", b"plain text\n", "text/plain"),
];

#[tokio::test]
async fn http_azurite_serves_seeded_blobs_with_the_account_sas() {
    let az = Azurite::start_http().await;
    assert!(
        az.blob_endpoint
            .starts_with(&format!("http://127.0.0.1:{}/", az.port)),
        "{}",
        az.blob_endpoint
    );
    assert!(az.blob_endpoint.ends_with("/devstoreaccount1"));
    let client = reqwest::Client::new();

    create_container(&client, &az, "media", None).await;
    for (name, bytes, content_type) in BLOBS {
        put_blob(&client, &az, "media", name, bytes, content_type).await;
    }

    for (name, bytes, content_type) in BLOBS {
        let url = seed::blob_url_with_sas(&az, "media", name);
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {url}");
        assert_eq!(response.headers()["content-type"], content_type, "{name}");
        assert_eq!(&response.bytes().await.unwrap()[..], bytes, "{name}");
    }

    // The SAS lists the container too, and the names come back decoded.
    let list = format!(
        "{}?restype=container&comp=list&{}",
        az.container_url("media"),
        seed::azurite_sas()
    );
    let (status, body) = get_blob(&client, &list).await;
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, 200, "{body}");
    for (name, _, _) in BLOBS {
        let escaped = name.replace('&', "&amp;");
        assert!(
            body.contains(&format!("<Name>{escaped}</Name>")),
            "{name} in {body}"
        );
    }

    // Private container, no SAS: Azurite answers 403 AuthorizationFailure.
    let (status, body) = get_blob(&client, &az.blob_url("media", "poster.jpg")).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>AuthorizationFailure</Code>"), "{body}");

    // Public (blob-level) container: readable with no SAS at all.
    create_container(&client, &az, "public", Some("blob")).await;
    put_blob(
        &client,
        &az,
        "public",
        "a b/c.jpg",
        b"public bytes",
        "image/jpeg",
    )
    .await;
    let (status, body) = get_blob(&client, &az.blob_url("public", "a b/c.jpg")).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"public bytes");
    // ...but not listable anonymously (blob-level access only).
    let (status, _) = get_blob(
        &client,
        &format!("{}?restype=container&comp=list", az.container_url("public")),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn azurite_verifies_the_account_sas_signature() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    create_container(&client, &az, "sas-check", None).await;
    put_blob(
        &client,
        &az,
        "sas-check",
        "x.bin",
        b"xyz",
        "application/octet-stream",
    )
    .await;
    let blob = az.blob_url("sas-check", "x.bin");
    let expiry = time::OffsetDateTime::now_utc() + time::Duration::hours(1);

    let good = account_sas(ACCOUNT, KEY, expiry);
    let (status, body) = get_blob(&client, &format!("{blob}?{good}")).await;
    assert_eq!((status, &body[..]), (200, &b"xyz"[..]));

    // Another key: same fields, wrong signature.
    let other_key =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let forged = account_sas(ACCOUNT, other_key, expiry);
    let (status, body) = get_blob(&client, &format!("{blob}?{forged}")).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>AuthorizationFailure</Code>"), "{body}");

    // Signed fields are bound: widening `sp` after signing is refused.
    let widened = good.replace("sp=racwdl", "sp=racwdlx");
    assert_ne!(widened, good);
    let (status, _) = get_blob(&client, &format!("{blob}?{widened}")).await;
    assert_eq!(status, 403);

    // The exact layout matters: the pre-2020-12-06 layout (no `ses` line) is refused for sv
    // 2025-11-05.
    let se = seed::sas_time(expiry);
    let old_layout = format!(
        "{ACCOUNT}\nracwdl\nb\nsco\n\n{se}\n\nhttps,http\n{}\n",
        seed::SAS_VERSION
    );
    let sig = seed::sign(KEY, &old_layout);
    let old = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", seed::SAS_VERSION)
        .append_pair("ss", "b")
        .append_pair("srt", "sco")
        .append_pair("sp", "racwdl")
        .append_pair("se", &se)
        .append_pair("spr", "https,http")
        .append_pair("sig", &sig)
        .finish();
    let (status, _) = get_blob(&client, &format!("{blob}?{old}")).await;
    assert_eq!(status, 403);

    // Expired: refused.
    let expired = account_sas(
        ACCOUNT,
        KEY,
        time::OffsetDateTime::now_utc() - time::Duration::minutes(5),
    );
    let (status, _) = get_blob(&client, &format!("{blob}?{expired}")).await;
    assert_eq!(status, 403);
}

#[test]
fn account_sas_string_to_sign_has_ten_newline_terminated_fields() {
    let s = seed::account_sas_string_to_sign(
        "acct",
        "r",
        "b",
        "o",
        "",
        "2030-01-01T00:00:00Z",
        "",
        "https",
        "2025-11-05",
        "",
    );
    assert_eq!(
        s,
        "acct\nr\nb\no\n\n2030-01-01T00:00:00Z\n\nhttps\n2025-11-05\n\n"
    );
    // Known answer, computed by Azurite 3.37.0's own generateAccountSASSignature for the
    // well-known key.
    let expiry = time::macros::datetime!(2030-01-01 00:00:00 UTC);
    let sas = account_sas(ACCOUNT, KEY, expiry);
    assert_eq!(
        sas,
        "sv=2025-11-05&ss=b&srt=sco&sp=racwdl&se=2030-01-01T00%3A00%3A00Z&spr=https%2Chttp\
         &sig=ABJfqMcb%2BNOHtTvF2NCd3WWDuo9QxTFf7AePBC%2Bv5P8%3D"
    );
}

#[tokio::test]
async fn https_oauth_azurite_trusts_the_test_pki() {
    let pki = tls::shared();
    let az = Azurite::start_https_oauth(pki).await;
    assert_eq!(
        az.blob_endpoint,
        format!("https://127.0.0.1:{}/devstoreaccount1", az.port)
    );
    assert!(az.is_https());
    let client = tls::client(pki);

    // Seeding over https with the account SAS works on the OAuth instance too.
    create_container(&client, &az, "secure", None).await;
    put_blob(
        &client,
        &az,
        "secure",
        "dir/é.jpg",
        b"tls bytes",
        "image/jpeg",
    )
    .await;
    let (status, body) = get_blob(
        &client,
        &seed::blob_url_with_sas(&az, "secure", "dir/é.jpg"),
    )
    .await;
    assert_eq!((status, &body[..]), (200, &b"tls bytes"[..]));

    // --oauth basic is on: a well-formed (unsigned) Entra-style token is accepted, a token for
    // another audience or garbage is refused.
    let blob = az.blob_url("secure", "dir/é.jpg");
    let bearer_get = |token: String| {
        client
            .get(&blob)
            .bearer_auth(token)
            .header("x-ms-version", seed::SAS_VERSION)
            .send()
    };
    let response = bearer_get(jwt("https://storage.azure.com")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(&response.bytes().await.unwrap()[..], b"tls bytes");
    let response = bearer_get(jwt("https://vault.azure.net")).await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = bearer_get("not-a-jwt".to_owned()).await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = client.get(&blob).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403, "no credentials at all");

    // A client without the test CA cannot talk to it: the certificate really is checked.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("https://127.0.0.1:{}/", az.port))
        .send()
        .await
        .expect_err("an untrusted certificate must fail the handshake");
    assert!(err.is_connect(), "{err:?}");

    // The same CA also works for `localhost`.
    let (status, _) = get_blob(
        &client,
        &format!(
            "https://localhost:{}/devstoreaccount1/secure/dir/%C3%A9.jpg?{}",
            az.port,
            seed::azurite_sas()
        ),
    )
    .await;
    assert_eq!(status, 200);
}

/// An unsigned JWT shaped like an Entra ID access token for `aud`, valid for an hour.
fn jwt(aud: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let header = b64(serde_json::json!({ "alg": "RS256", "typ": "JWT" }));
    let claims = b64(serde_json::json!({
        "aud": aud,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
        "oid": "11111111-2222-3333-4444-555555555555",
        "tid": tenant,
    }));
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

#[tokio::test]
async fn serve_https_serves_a_router_to_the_test_client() {
    let pki = tls::shared();
    let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
    let addr = tls::serve_https(router, pki).await;
    assert!(addr.ip().is_loopback());
    let response = tls::client(pki)
        .get(format!("https://{addr}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "hi");
}

#[tokio::test]
async fn two_azurites_run_at_once_and_are_independent() {
    let (mut a, b) = tokio::join!(Azurite::start_http(), Azurite::start_http());
    assert_ne!(a.port, b.port);
    let client = reqwest::Client::new();
    create_container(&client, &a, "only-in-a", None).await;
    put_blob(&client, &a, "only-in-a", "k", b"a", "text/plain").await;

    let (status, body) = get_blob(&client, &seed::blob_url_with_sas(&a, "only-in-a", "k")).await;
    assert_eq!((status, &body[..]), (200, &b"a"[..]));
    let (status, _) = get_blob(&client, &seed::blob_url_with_sas(&b, "only-in-a", "k")).await;
    assert_eq!(status, 404);

    // stop: the port stops answering; restart: same port, empty again (in memory).
    let port = a.port;
    a.stop().await;
    assert!(
        client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_err()
    );
    a.restart().await;
    assert_eq!(a.port, port);
    let (status, _) = get_blob(&client, &seed::blob_url_with_sas(&a, "only-in-a", "k")).await;
    assert_eq!(status, 404);
    create_container(&client, &a, "only-in-a", None).await;

    // Dropping one leaves the other running.
    drop(a);
    let (status, _) = get_blob(&client, &format!("http://127.0.0.1:{}/", b.port)).await;
    assert_eq!(status, 400);
}
