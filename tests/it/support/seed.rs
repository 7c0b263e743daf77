//! TEST-ONLY: an account SAS signer and seeding helpers over plain Blob REST (reqwest, no SDK).
//!
//! Account SAS, signed version 2020-12-06 and later: the string to sign is ten fields, each
//! followed by `\n` (so it ends with one, after the empty encryption scope):
//! `accountname, sp, ss, srt, st, se, sip, spr, sv, ses`; the signature is
//! base64(HMAC-SHA256(base64decode(key), utf8(string to sign))).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use time::macros::format_description;

use super::azurite::{ACCOUNT, Azurite, KEY};

/// The signed version of the SAS made here (field layout of 2020-12-06 and later).
pub const SAS_VERSION: &str = "2025-11-05";
/// Services (`ss`), resource types (`srt`), permissions (`sp`) and protocols (`spr`) granted.
const SAS_SERVICES: &str = "b";
const SAS_RESOURCE_TYPES: &str = "sco";
const SAS_PERMISSIONS: &str = "racwdl";
const SAS_PROTOCOLS: &str = "https,http";

/// The string to sign of an account SAS, signed version 2020-12-06 and later.
#[allow(clippy::too_many_arguments)]
pub fn account_sas_string_to_sign(
    account: &str,
    permissions: &str,
    services: &str,
    resource_types: &str,
    start: &str,
    expiry: &str,
    ip: &str,
    protocols: &str,
    version: &str,
    encryption_scope: &str,
) -> String {
    [
        account,
        permissions,
        services,
        resource_types,
        start,
        expiry,
        ip,
        protocols,
        version,
        encryption_scope,
    ]
    .iter()
    .fold(String::new(), |mut s, field| {
        s.push_str(field);
        s.push('\n');
        s
    })
}

/// base64(HMAC-SHA256(base64decode(key_b64), string_to_sign)).
pub fn sign(key_b64: &str, string_to_sign: &str) -> String {
    let key = BASE64.decode(key_b64).expect("account key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// `YYYY-MM-DDThh:mm:ssZ` in UTC, as SAS times are written.
pub fn sas_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .expect("format SAS time")
}

/// An account SAS query string (no leading `?`): blob service, service/container/object,
/// permissions `racwdl`, http and https, valid until `expiry`.
pub fn account_sas(account: &str, key_b64: &str, expiry: OffsetDateTime) -> String {
    let se = sas_time(expiry);
    let string_to_sign = account_sas_string_to_sign(
        account,
        SAS_PERMISSIONS,
        SAS_SERVICES,
        SAS_RESOURCE_TYPES,
        "",
        &se,
        "",
        SAS_PROTOCOLS,
        SAS_VERSION,
        "",
    );
    let sig = sign(key_b64, &string_to_sign);
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", SAS_VERSION)
        .append_pair("ss", SAS_SERVICES)
        .append_pair("srt", SAS_RESOURCE_TYPES)
        .append_pair("sp", SAS_PERMISSIONS)
        .append_pair("se", &se)
        .append_pair("spr", SAS_PROTOCOLS)
        .append_pair("sig", &sig)
        .finish()
}

/// An account SAS for Azurite's well-known account, valid for an hour.
pub fn azurite_sas() -> String {
    account_sas(
        ACCOUNT,
        KEY,
        OffsetDateTime::now_utc() + time::Duration::hours(1),
    )
}

/// The blob's URL with an account SAS appended.
pub fn blob_url_with_sas(az: &Azurite, container: &str, name: &str) -> String {
    format!("{}?{}", az.blob_url(container, name), azurite_sas())
}

/// Creates `container`; `public_access` `Some("blob")` makes its blobs anonymously readable.
pub async fn create_container(
    client: &reqwest::Client,
    az: &Azurite,
    container: &str,
    public_access: Option<&str>,
) {
    let url = format!(
        "{}?restype=container&{}",
        az.container_url(container),
        azurite_sas()
    );
    let mut request = client.put(&url).body(Vec::<u8>::new());
    if let Some(access) = public_access {
        request = request.header("x-ms-blob-public-access", access);
    }
    let response = request.send().await.expect("Create Container request");
    expect_success(response, &format!("Create Container {container}")).await;
}

/// Uploads a block blob. `name` may contain `/` (virtual folders) and any other character.
pub async fn put_blob(
    client: &reqwest::Client,
    az: &Azurite,
    container: &str,
    name: &str,
    bytes: &[u8],
    content_type: &str,
) {
    let response = client
        .put(blob_url_with_sas(az, container, name))
        .header("x-ms-blob-type", "BlockBlob")
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("Put Blob request");
    expect_success(response, &format!("Put Blob {container}/{name}")).await;
}

/// A plain GET of `url`: status and body.
pub async fn get_blob(client: &reqwest::Client, url: &str) -> (u16, bytes::Bytes) {
    let response = client.get(url).send().await.expect("GET request");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("GET body");
    (status, body)
}

async fn expect_success(response: reqwest::Response, what: &str) {
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        panic!("{what} failed: {status}\n{body}");
    }
}
