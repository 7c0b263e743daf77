//! `POST /events/storage` and `OPTIONS /events/storage`: Azure Event Grid deliveries of Blob
//! Storage events, built from Microsoft's documented payloads (`tests/fixtures/eventgrid/`).
//! The handshakes and credentials run against the real route table and gate; the invalidation
//! end to end against a real Azurite: a thumbnail written after an asset was cached is listed
//! as soon as its event arrives, with a TTL far away.

use crate::support;

use ams_thumbnails::Settings;
use ams_thumbnails::http::events::parse::{Delivery, EventKind};
use serde_json::{Value, json};
use support::azurite::{ACCOUNT, Azurite, KEY};
use support::fake_jwks::{FakeJwks, TENANT, TestKey};
use support::seed::{create_container, put_blob};
use support::{TestServer, assert_problem, tls};

pub(crate) const SECRET: &str = "events-secret-0123456789";
const TOPIC: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/media/providers/Microsoft.Storage/storageAccounts/";

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eventgrid")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A documented event with its subject and topic (or source) pointing at `container` of the
/// emulator's account, everything else as published.
pub(crate) fn event_for(name: &str, container: &str, blob: &str) -> String {
    let mut events: Value = serde_json::from_str(&fixture(name)).unwrap();
    for event in events.as_array_mut().unwrap() {
        event["subject"] =
            format!("/blobServices/default/containers/{container}/blobs/{blob}").into();
        let origin = if event.get("specversion").is_some() {
            "source"
        } else {
            "topic"
        };
        event[origin] = format!("{TOPIC}{ACCOUNT}").into();
    }
    events.to_string()
}

fn containers(delivery: &Delivery) -> Vec<(String, String)> {
    match delivery {
        Delivery::Changes(c) => c
            .containers
            .iter()
            .map(|c| (c.account.clone(), c.container.clone()))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_documented_payloads_parse() {
    let parse = |name: &str| Delivery::parse(fixture(name).as_bytes()).expect(name);
    let one = |account: &str, container: &str| vec![(account.to_owned(), container.to_owned())];
    for (name, container) in [
        ("blob-created.eventgrid.json", "test-container"),
        ("blob-created.cloudevents.json", "test-container"),
        ("blob-deleted.eventgrid.json", "testcontainer"),
        ("blob-deleted.cloudevents.json", "testcontainer"),
        // Renames within one file system: the source's container is the same one.
        ("blob-renamed.eventgrid.json", "my-file-system"),
        ("blob-renamed.cloudevents.json", "my-file-system"),
        ("directory-renamed.eventgrid.json", "my-file-system"),
        ("directory-deleted.eventgrid.json", "my-file-system"),
    ] {
        let delivery = parse(name);
        assert_eq!(
            containers(&delivery),
            one("my-storage-account", container),
            "{name}"
        );
        let Delivery::Changes(changes) = delivery else {
            unreachable!()
        };
        assert_eq!(changes.events(), 1, "{name}");
        assert_eq!(changes.counts[EventKind::Other.index()], 0, "{name}");
    }
    let expected: Value =
        serde_json::from_str(&fixture("subscription-validation.response.json")).unwrap();
    assert_eq!(
        parse("subscription-validation.eventgrid.json"),
        Delivery::Validation {
            code: expected["validationResponse"].as_str().unwrap().to_owned()
        }
    );
}

/// The service over the samples with `[events]` on (secret only), over `extra` TOML.
fn events_settings(extra: &str) -> Settings {
    support::settings(&format!(
        "[events]\nenabled = true\nsecret = \"{SECRET}\"\n{extra}"
    ))
}

pub(crate) async fn post(
    server: &TestServer,
    query: &str,
    content_type: &str,
    body: String,
) -> reqwest::Response {
    server
        .client
        .post(server.url(&format!("/events/storage{query}")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn both_handshakes_are_answered() {
    // CORS configured: its layer must let the webhook's OPTIONS through to the route.
    let server = TestServer::start(events_settings(
        "[api]\ncors_allowed_origins = [\"https://app.example\"]\n",
    ))
    .await;
    let code = format!("?code={SECRET}");

    let response = post(
        &server,
        &code,
        "application/json",
        fixture("subscription-validation.eventgrid.json"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let expected: Value =
        serde_json::from_str(&fixture("subscription-validation.response.json")).unwrap();
    assert_eq!(body, expected);

    let options = |query: String, origin: Option<&'static str>| {
        let mut request = server.client.request(
            reqwest::Method::OPTIONS,
            server.url(&format!("/events/storage{query}")),
        );
        if let Some(origin) = origin {
            request = request.header("webhook-request-origin", origin);
        }
        request.send()
    };
    let response = options(code.clone(), Some("eventgrid.azure.net"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );
    assert_eq!(response.headers()["webhook-allowed-rate"], "*");
    assert_eq!(response.headers()["allow"], "POST, OPTIONS");
    // No origin asked: nothing granted.
    let response = options(code, None).await.unwrap();
    assert!(!response.headers().contains_key("webhook-allowed-origin"));
    // The handshake needs the credential too.
    let response = options(String::new(), Some("eventgrid.azure.net"))
        .await
        .unwrap();
    assert!(!response.headers().contains_key("webhook-allowed-origin"));
    assert_problem(response, 401, "unauthorized").await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn deliveries_need_the_secret_and_never_see_it_echoed() {
    let logs = support::logs::capture();
    let server = TestServer::start(events_settings("")).await;
    let body = || fixture("blob-created.eventgrid.json");
    for query in [
        "",
        "?code=",
        "?code=events-secret-012345678",
        "?key=events-secret-0123456789",
    ] {
        let response = post(&server, query, "application/json", body()).await;
        let problem = assert_problem(response, 401, "unauthorized").await;
        assert!(!problem.to_string().contains("events-secret"), "{problem}");
    }
    let response = post(
        &server,
        &format!("?code={SECRET}"),
        "application/json",
        body(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"events": 1, "containers": 1})
    );
    assert!(
        !logs.text().contains(SECRET),
        "the secret stays out of the logs"
    );
    server.stop().await.unwrap();

    // Off: the route answers like a path no route matches, credential or not.
    let server = TestServer::start(support::settings("")).await;
    let response = post(
        &server,
        &format!("?code={SECRET}"),
        "application/json",
        body(),
    )
    .await;
    assert_problem(response, 404, "route-not-found").await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_deliveries_are_refused_with_a_stable_code() {
    let server = TestServer::start(events_settings("")).await;
    let code = format!("?code={SECRET}");
    for (content_type, body) in [
        ("application/json", "not json".to_owned()),
        ("application/json", "\"an event\"".to_owned()),
        (
            "application/json",
            r#"[{"eventType":"Microsoft.Storage.BlobCreated"}]"#.to_owned(),
        ),
        (
            "application/json",
            event_for("blob-created.eventgrid.json", "c", "x")
                .replace("/blobServices/default", "/elsewhere"),
        ),
        (
            "application/cloudevents+json",
            r#"{"specversion":"1.0","type":"Microsoft.Storage.BlobDeleted","source":"x","id":"1"}"#
                .to_owned(),
        ),
        (
            "application/json",
            fixture("subscription-validation.eventgrid.json").replace("validationCode", "code"),
        ),
    ] {
        let response = post(&server, &code, content_type, body.clone()).await;
        let problem = assert_problem(response, 400, "malformed-event").await;
        assert!(
            !problem["detail"].as_str().unwrap().contains("elsewhere"),
            "{body}"
        );
    }
    let response = post(
        &server,
        &code,
        "text/plain",
        fixture("blob-created.eventgrid.json"),
    )
    .await;
    assert_problem(response, 415, "unsupported-media-type").await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn entra_tokens_of_event_grid_are_accepted_for_the_events_audience_only() {
    let jwks = FakeJwks::start(tls::shared()).await;
    let key = TestKey::rsa("events-key");
    jwks.publish(&[&key]);
    let issuer = format!("https://login.microsoftonline.com/{TENANT}/v2.0");
    let mut settings = support::settings(&format!(
        "[events]\nenabled = true\n[events.entra]\naudiences = [\"api://thumbs-events\"]\n\
         issuer = \"{issuer}\"\njwks_url = \"{}\"\n",
        jwks.url
    ));
    settings.upstream.ca_file = Some(tls::shared().ca_pem.clone());
    let server = TestServer::start(settings).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = |aud: &str, roles: &[&str]| {
        key.sign(&json!({
            "aud": aud, "iss": issuer, "iat": now, "nbf": now, "exp": now + 3600,
            "oid": "7e57a000-0000-4000-8000-0000000000e9", "tid": TENANT, "roles": roles,
        }))
    };
    let deliver = |token: Option<String>| {
        let mut request = server
            .client
            .post(server.url("/events/storage"))
            .header("content-type", "application/cloudevents-batch+json")
            .body(fixture("blob-deleted.cloudevents.json"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let good = token(
        "api://thumbs-events",
        &["AzureEventGridSecureWebhookSubscriber"],
    );
    assert_eq!(deliver(Some(good)).await.unwrap().status(), 200);
    let other_audience = token(
        "api://ams-thumbnails",
        &["AzureEventGridSecureWebhookSubscriber"],
    );
    let response = deliver(Some(other_audience)).await.unwrap();
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_problem(response, 401, "unauthorized").await;
    let no_role = token("api://thumbs-events", &["Thumbnails.Read"]);
    assert_problem(deliver(Some(no_role)).await.unwrap(), 403, "forbidden").await;
    assert_problem(deliver(None).await.unwrap(), 401, "unauthorized").await;
    server.stop().await.unwrap();
}

// --- End to end against Azurite ------------------------------------------------------------

fn thumbnail(i: usize) -> Vec<u8> {
    std::fs::read(support::samples_dir().join(format!(
        "sprite-storyboard/Thumbnail{:06}.jpg",
        (i - 1) % 3 + 1
    )))
    .unwrap()
}

async fn put_thumbnail(
    client: &reqwest::Client,
    az: &Azurite,
    container: &str,
    i: usize,
) -> String {
    let name = format!("Thumbnail{i:06}.jpg");
    put_blob(client, az, container, &name, &thumbnail(i), "image/jpeg").await;
    name
}

/// Storage source over Azurite, `asset-{assetId}` containers; answers (found or not) cached
/// for an hour, so only an event can make a new blob show.
fn storage_settings(az: &Azurite) -> Settings {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [source]\nkind = \"storage\"\n\
         [storage]\naccount = \"{ACCOUNT}\"\nendpoint = \"{endpoint}\"\nauth = \"account-key\"\naccount_key = \"{KEY}\"\n\
         [auth]\nallow_anonymous_signed_urls = true\n\
         [links]\nmode = \"account-key-sas\"\nallow_http = true\n\
         [cache]\nttl = \"1h\"\nnot_found_ttl = \"1h\"\n\
         [events]\nenabled = true\nsecret = \"{SECRET}\"\n",
        endpoint = az.blob_endpoint.replace(ACCOUNT, "{account}"),
    );
    Settings::from_toml(&toml).expect("storage settings")
}

async fn names(server: &TestServer, id: &str) -> Vec<String> {
    let response = server.get(&format!("/assets/{id}/thumbnails")).await;
    assert_eq!(response.status(), 200, "{id}");
    let body: Value = response.json().await.unwrap();
    body["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The documented event of `schema` (`eventgrid` or `cloudevents`) for a blob, delivered.
pub(crate) async fn deliver(server: &TestServer, schema: &str, container: &str, blob: &str) {
    let (name, content_type) = match schema {
        "eventgrid" => ("blob-created.eventgrid.json", "application/json"),
        _ => (
            "blob-created.cloudevents.json",
            "application/cloudevents-batch+json",
        ),
    };
    let response = post(
        server,
        &format!("?code={SECRET}"),
        content_type,
        event_for(name, container, blob),
    )
    .await;
    assert_eq!(response.status(), 200, "{schema}");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"events": 1, "containers": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_thumbnail_is_listed_as_soon_as_its_event_arrives() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let guid = "1b4f8e2a-5c3d-4e6f-9a7b-0c1d2e3f4a5b";
    let container = format!("asset-{guid}");
    create_container(&client, &az, &container, None).await;
    let first = put_thumbnail(&client, &az, &container, 1).await;
    let server = TestServer::start(storage_settings(&az)).await;
    assert_eq!(names(&server, guid).await, std::slice::from_ref(&first));

    let mut expected = vec![first];
    for (i, schema) in [(2, "eventgrid"), (3, "cloudevents")] {
        let name = put_thumbnail(&client, &az, &container, i).await;
        // Cached: the new blob is not seen yet.
        assert_eq!(names(&server, guid).await, expected, "{schema}: before");
        deliver(&server, schema, &container, &name).await;
        expected.push(name);
        assert_eq!(names(&server, guid).await, expected, "{schema}: after");
    }

    // Another container, another type for this one, a replay of nothing new: no load.
    let calls = server.probe.calls();
    let code = format!("?code={SECRET}");
    let elsewhere = event_for("blob-created.eventgrid.json", "asset-unknown", "x.jpg");
    let tier = event_for(
        "blob-created.eventgrid.json",
        &container,
        "Thumbnail000001.jpg",
    )
    .replace(
        "Microsoft.Storage.BlobCreated",
        "Microsoft.Storage.BlobTierChanged",
    );
    let other_account = event_for("blob-created.eventgrid.json", &container, "x.jpg").replace(
        &format!("storageAccounts/{ACCOUNT}"),
        "storageAccounts/otheraccount",
    );
    for body in [elsewhere, tier, other_account] {
        let response = post(&server, &code, "application/json", body).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(names(&server, guid).await, expected);
    assert_eq!(server.probe.calls(), calls, "nothing was invalidated");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asset_cached_as_not_found_appears_when_its_container_fills() {
    let az = Azurite::start_http().await;
    let client = reqwest::Client::new();
    let server = TestServer::start(storage_settings(&az)).await;
    for (guid, schema) in [
        ("22222222-2222-4222-8222-222222222222", "eventgrid"),
        ("33333333-3333-4333-8333-333333333333", "cloudevents"),
    ] {
        // Asked as written by a caller (upper case) and as stored (lower case).
        let spellings = [guid.to_uppercase(), guid.to_owned()];
        for id in &spellings {
            assert_problem(
                server.get(&format!("/assets/{id}/thumbnails")).await,
                404,
                "asset-not-found",
            )
            .await;
        }
        let container = format!("asset-{guid}");
        create_container(&client, &az, &container, None).await;
        let name = put_thumbnail(&client, &az, &container, 1).await;
        // Still "not found" from the cache: a negative entry names no container.
        assert_eq!(
            server
                .get(&format!("/assets/{guid}/thumbnails"))
                .await
                .status(),
            404,
            "{schema}: before"
        );
        deliver(&server, schema, &container, &name).await;
        for id in &spellings {
            assert_eq!(
                names(&server, id).await,
                std::slice::from_ref(&name),
                "{schema}: {id}"
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn events_are_counted_by_type() {
    let server = TestServer::start(events_settings("")).await;
    let before = server.get("/metrics").await.text().await.unwrap();
    let count =
        |text: &str, kind: &str| support::metric(text, "storage_events_total", &[("type", kind)]);
    let batch = format!(
        "[{},{}]",
        fixture("blob-created.eventgrid.json")
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']'),
        fixture("blob-deleted.eventgrid.json")
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
    );
    let response = post(
        &server,
        &format!("?code={SECRET}"),
        "application/json",
        batch,
    )
    .await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"events": 2, "containers": 2})
    );
    let after = server.get("/metrics").await.text().await.unwrap();
    for kind in ["BlobCreated", "BlobDeleted"] {
        assert!(count(&after, kind) >= count(&before, kind) + 1.0, "{kind}");
    }
    let invalidated = |text: &str| {
        support::metric(
            text,
            "storage_event_invalidations_total",
            &[("scope", "container")],
        )
    };
    assert!(invalidated(&after) >= invalidated(&before) + 2.0);
    server.stop().await.unwrap();
}
