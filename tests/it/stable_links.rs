//! Stable signed URLs (`links.window`, `links.response_cache_control`) against a real Azurite:
//! two separately built instances, and one instance re-signing after its cache is dropped,
//! hand out byte-identical URLs within a window; every URL serves its blob, with the
//! `Cache-Control` that was signed into it; the next window signs new URLs.

use crate::support;

use std::time::Duration;

use ams_thumbnails::Settings;
use ams_thumbnails::asset_id::AssetId;
use serde_json::Value;
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::fake_entra::FakeEntra;
use support::seed::{create_container, get_blob, put_blob};
use support::{TestServer, tls};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const GUID: &str = "5e0c2b1d-7a4f-4c3e-9d2a-8b6f1e0a3c47";
const NAMES: [&str; 3] = [
    "Thumbnail000001.jpg",
    "Thumbnail000002.jpg",
    "Thumbnail000003.jpg",
];
const CACHE_CONTROL: &str = "public, max-age={max_age}, immutable";

async fn seed(client: &reqwest::Client, az: &Azurite) -> Vec<Vec<u8>> {
    let container = format!("asset-{GUID}");
    create_container(client, az, &container, None).await;
    let mut seeded = Vec::new();
    for name in NAMES {
        let bytes =
            std::fs::read(support::samples_dir().join("sprite-storyboard").join(name)).unwrap();
        put_blob(client, az, &container, name, &bytes, "image/jpeg").await;
        seeded.push(bytes);
    }
    seeded
}

fn account_key_settings(az: &Azurite, links: &str) -> Settings {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [source]\nkind = \"storage\"\n\
         [storage]\naccount = \"{ACCOUNT}\"\nendpoint = \"{endpoint}\"\nauth = \"account-key\"\naccount_key = \"{KEY}\"\n\
         [auth]\nallow_anonymous_signed_urls = true\n\
         [links]\nmode = \"account-key-sas\"\nallow_http = true\n{links}",
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
    );
    Settings::from_toml(&toml).expect("settings")
}

/// The window of length `window` that `t` falls in (UNIX-epoch multiples), computed here
/// independently of the service.
fn window_of(t: OffsetDateTime, window: Duration) -> OffsetDateTime {
    let w = window.as_secs() as i64;
    let s = t.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(s - s.rem_euclid(w)).unwrap()
}

fn urls(body: &Value) -> Vec<String> {
    body["thumbnails"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|t| t["url"].as_str().unwrap().to_owned())
        .collect()
}

fn param(url: &str, key: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {key} in {url}"))
}

fn time_param(url: &str, key: &str) -> OffsetDateTime {
    OffsetDateTime::parse(&param(url, key), &Rfc3339).unwrap()
}

async fn thumbnails(server: &TestServer) -> Value {
    let response = server.get(&format!("/assets/{GUID}/thumbnails")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn drop_cached(server: &TestServer) {
    server
        .state
        .resolver
        .invalidate(&AssetId::parse(GUID).unwrap())
        .await;
}

/// Three answers in one window: instance A, instance B, and A again after its cache was
/// dropped (so it signs again). Retried when a window boundary fell between them.
async fn three_answers_in_one_window(
    a: &TestServer,
    b: &TestServer,
    window: Duration,
) -> (OffsetDateTime, [Value; 3]) {
    for _ in 0..3 {
        let before = window_of(OffsetDateTime::now_utc(), window);
        drop_cached(a).await;
        let first = thumbnails(a).await;
        let second = thumbnails(b).await;
        drop_cached(a).await;
        let third = thumbnails(a).await;
        if window_of(OffsetDateTime::now_utc(), window) == before {
            return (before, [first, second, third]);
        }
    }
    panic!("three window boundaries in a row: is the window shorter than a request?");
}

/// Every URL serves its seeded bytes, with the signed `Cache-Control`.
async fn assert_served(
    client: &reqwest::Client,
    urls: &[String],
    seeded: &[Vec<u8>],
    cache_control: &str,
) {
    assert_eq!(urls.len(), seeded.len());
    for (url, bytes) in urls.iter().zip(seeded) {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{url}");
        assert_eq!(
            response.headers()["cache-control"].to_str().unwrap(),
            cache_control,
            "{url}"
        );
        assert_eq!(&response.bytes().await.unwrap()[..], &bytes[..], "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_key_urls_are_identical_across_instances_within_a_window() {
    let logs = support::logs::capture();
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let seeded = seed(&client, &az).await;
    let links = format!(
        "window = \"1h\"\nlifetime = \"2h\"\nclock_skew = \"5m\"\nresponse_cache_control = \"{CACHE_CONTROL}\"\n"
    );
    let a = TestServer::start(account_key_settings(&az, &links)).await;
    let b = TestServer::start(account_key_settings(&az, &links)).await;
    let window = Duration::from_secs(3600);

    let (start, [first, second, third]) = three_answers_in_one_window(&a, &b, window).await;
    let signed = urls(&first);
    assert_eq!(
        signed,
        urls(&second),
        "another instance signs the same URLs"
    );
    assert_eq!(signed, urls(&third), "a refresh signs the same URLs");
    assert_eq!(first["expiresAt"], second["expiresAt"]);
    assert_eq!(
        a.probe.links.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "A signed twice, not from its cache"
    );

    // st and se on the window: one skew before its start, one lifetime after it.
    for url in &signed {
        assert_eq!(time_param(url, "st"), start - Duration::from_secs(300));
        assert_eq!(time_param(url, "se"), start + Duration::from_secs(7200));
        assert_eq!(param(url, "rscc"), "public, max-age=3600, immutable");
        support::sas::assert_least_privilege(
            url,
            &support::sas::Expect {
                allow_http: true,
                lifetime: Duration::from_secs(7200),
                clock_skew: window + Duration::from_secs(300),
            },
        );
    }
    let expires_at = OffsetDateTime::parse(first["expiresAt"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(expires_at, start + Duration::from_secs(7200));

    // The bytes, with the Cache-Control signed into the URL: lifetime - window.
    assert_served(&client, &signed, &seeded, "public, max-age=3600, immutable").await;
    // rscc is signed: another value is refused.
    let widened = signed[0].replace("max-age%3D3600", "max-age%3D99999");
    assert_ne!(widened, signed[0]);
    assert_eq!(get_blob(&client, &widened).await.0, 403);
    logs.assert_no_secrets(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_window_signs_new_urls() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let seeded = seed(&client, &az).await;
    let server = TestServer::start(account_key_settings(
        &az,
        "window = \"2s\"\nlifetime = \"5s\"\nclock_skew = \"0s\"\n[cache]\nmin_validity = \"1s\"\n",
    ))
    .await;
    let window = Duration::from_secs(2);
    let old = urls(&thumbnails(&server).await);
    // No skew: st is the start of the window the URLs were signed in. Wait past its end.
    let next = time_param(&old[0], "st") + window;
    let wait = next - OffsetDateTime::now_utc() + time::Duration::milliseconds(50);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    drop_cached(&server).await;
    let new = urls(&thumbnails(&server).await);
    for (old, new) in old.iter().zip(&new) {
        assert_ne!(old, new);
        assert_eq!(time_param(new, "se") - time_param(old, "se"), window);
        assert_eq!(time_param(new, "st"), next);
    }
    // Both generations work (the old one until its own se).
    for urls in [&old, &new] {
        for (url, bytes) in urls.iter().zip(&seeded) {
            let (status, body) = get_blob(&client, url).await;
            assert_eq!((status, &body[..]), (200, &bytes[..]), "{url}");
        }
    }
}

/// User delegation SAS: the key is asked for with start and expiry on window boundaries, so
/// one instance re-signs byte-identical URLs within a window (one key). Azurite derives the
/// key's value from the request (identity, start, expiry), so there two instances sign
/// identical URLs too; Azure does not document that, so production relies on the shared tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_delegation_urls_are_stable_within_a_window() {
    let logs = support::logs::capture();
    let pki = tls::shared();
    let entra = FakeEntra::start_https(pki).await;
    let az = Azurite::start_https_oauth(pki).await;
    let client = tls::client(pki);
    let seeded = seed(&client, &az).await;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
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
window = "1h"
lifetime = "2h"
clock_skew = "5m"
response_cache_control = "private, max-age={{max_age}}"
[credential]
kind = "client-secret"
tenant_id = "{tenant}"
client_id = "{client_id}"
client_secret = "{secret}"
authority_host = "{authority}"
[upstream]
ca_file = "{ca}"
"#,
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
        tenant = entra.tenant_id(),
        client_id = entra.client_id(),
        secret = entra.client_secret(),
        authority = entra.authority_host(),
        ca = pki.ca_pem.display(),
    );
    let a = TestServer::start(Settings::from_toml(&toml).unwrap()).await;
    let b = TestServer::start(Settings::from_toml(&toml).unwrap()).await;
    let window = Duration::from_secs(3600);

    let (start, [first, second, third]) = three_answers_in_one_window(&a, &b, window).await;
    let signed = urls(&first);
    assert!(signed[0].contains("skoid="), "a user delegation SAS");
    assert_eq!(signed, urls(&third), "a refresh signs the same URLs");
    assert_eq!(signed, urls(&second), "on Azurite, another instance too");
    let keys = logs.text().matches("user delegation key obtained").count();
    assert_eq!(keys, 2, "one key per instance for the whole window");

    // The key period: two lifetimes in whole windows, starting on a multiple of 4 h.
    let period = window_of(start, Duration::from_secs(4 * 3600));
    for url in &signed {
        assert_eq!(time_param(url, "st"), start - Duration::from_secs(300));
        assert_eq!(time_param(url, "se"), start + Duration::from_secs(7200));
        assert_eq!(time_param(url, "skt"), period - Duration::from_secs(300));
        assert_eq!(
            time_param(url, "ske"),
            period + Duration::from_secs(4 * 3600 - 3600 + 7200)
        );
        support::sas::assert_least_privilege(
            url,
            &support::sas::Expect {
                allow_http: false,
                lifetime: Duration::from_secs(7200),
                clock_skew: window + Duration::from_secs(300),
            },
        );
    }
    assert_served(&client, &signed, &seeded, "private, max-age=3600").await;
    logs.assert_no_secrets(Some(&entra));
}
