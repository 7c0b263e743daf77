//! The MK.IO catalog (src/source/mkio.rs) against the fake MK.IO
//! (tests/it/support/fake_mkio.rs) over HTTPS with the test CA: lookups by name, GUID and
//! alternate id (across pages, every nextLink form), storage instances resolved once, subPath
//! prefixes, and every failure mapped to its `SourceError`. A few tests check the fake itself against the docs payloads.

use crate::support;

use std::time::{Duration, Instant};

use ams_thumbnails::asset_id::AssetId;
use ams_thumbnails::config::{Invalid, MkioSourceSettings, UpstreamSettings};
use ams_thumbnails::secret::Secret;
use ams_thumbnails::source::mkio::MkioCatalog;
use ams_thumbnails::source::{AssetLocation, Catalog, HealthCheck, SourceError};
use futures::future::join_all;
use serde_json::Value;
use support::fake_mkio::{self, FakeMkio, FakeMkioAsset, FakeStorage, MkioOp, NextLinkForm};
use support::faults::RestFault;
use support::tls;
use uuid::Uuid;

const ASSET_ID: &str = "1b648c1a-2268-461d-a1da-742bde23db40";
const DEFAULT_ACCOUNT: &str = "defaultacct";

fn upstream(max_retries: u32, retry_budget: Duration) -> UpstreamSettings {
    UpstreamSettings {
        max_retries,
        retry_budget,
        ..UpstreamSettings::default()
    }
}

fn settings_for(base_url: &str, project: &str, token: Option<&str>) -> MkioSourceSettings {
    MkioSourceSettings {
        base_url: url::Url::parse(base_url).unwrap(),
        project: project.to_owned(),
        token: token.map(Secret::new),
        token_file: None,
        storage_cache_ttl: Duration::from_secs(600),
    }
}

fn settings(fake: &FakeMkio) -> MkioSourceSettings {
    settings_for(&fake.base_url(), &fake.project(), Some(&fake.token()))
}

fn https_client(timeout: Duration) -> reqwest::Client {
    tls::client_builder(tls::shared())
        .timeout(timeout)
        .build()
        .unwrap()
}

fn catalog_with(settings: &MkioSourceSettings, upstream: &UpstreamSettings) -> MkioCatalog {
    MkioCatalog::new(
        settings,
        upstream,
        https_client(Duration::from_secs(10)),
        DEFAULT_ACCOUNT,
    )
    .expect("catalog builds")
}

fn catalog(fake: &FakeMkio) -> MkioCatalog {
    catalog_with(&settings(fake), &upstream(3, Duration::from_secs(5)))
}

fn id(raw: &str) -> AssetId {
    AssetId::parse(raw).unwrap()
}

fn location(account: &str, container: &str, prefix: &str) -> AssetLocation {
    let mut location = AssetLocation::new(account, container);
    location.prefix = prefix.to_owned();
    location
}

/// The docs' asset: `ClimbingMountAdams`, alternate id `CLIMB00002`, in `primary-azure`.
async fn fake_with_asset() -> FakeMkio {
    let fake = FakeMkio::start_https(tls::shared()).await;
    fake.add_asset(
        FakeMkioAsset::new("ClimbingMountAdams", Uuid::parse_str(ASSET_ID).unwrap())
            .alternate_id("CLIMB00002"),
    );
    fake
}

/// Neither the token nor a storage SAS signature in what callers (and logs) get to see.
fn assert_no_secrets(fake: &FakeMkio, shown: &str) {
    assert!(!shown.contains(&fake.token()), "the token in {shown}");
    assert!(
        !shown.contains(fake_mkio::STORAGE_SAS_SIG),
        "a storage SAS in {shown}"
    );
}

// ------------------------------------------------------------------------------------------
// Lookups
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn by_name_with_the_storage_instance_resolved() {
    let fake = fake_with_asset().await;
    let catalog = catalog(&fake);
    let found = catalog.locate(&id("ClimbingMountAdams")).await.unwrap();
    // `primary-azure` is https://mystorageaccount.blob.core.windows.net in the docs.
    assert_eq!(
        found,
        location("mystorageaccount", &format!("asset-{ASSET_ID}"), "")
    );
    assert!(found.container_sas.is_none(), "MK.IO hands out no SAS");
    assert_no_secrets(&fake, &format!("{found:?}"));
    assert_eq!(fake.hits(MkioOp::GetAsset), 1);
    assert_eq!(fake.hits(MkioOp::ListAssets), 0);
    assert_eq!(fake.hits(MkioOp::GetStorage), 1);
    assert_eq!(
        fake.last_authorization(),
        Some(format!("Bearer {}", fake.token()))
    );
}

#[tokio::test]
async fn by_guid_through_the_asset_id_filter() {
    let fake = fake_with_asset().await;
    let catalog = catalog(&fake);
    let found = catalog.locate(&id(&ASSET_ID.to_uppercase())).await.unwrap();
    assert_eq!(found.container, format!("asset-{ASSET_ID}"));
    // Get by name (404), then the filter, unquoted GUID as OData writes it.
    assert_eq!(fake.hits(MkioOp::GetAsset), 1);
    assert_eq!(fake.hits(MkioOp::ListAssets), 1);
    assert_eq!(
        fake.filters(),
        vec![format!("properties/assetId eq {ASSET_ID}")]
    );
}

#[tokio::test]
async fn by_alternate_id_across_pages_with_every_next_link_form() {
    for form in [
        NextLinkForm::Absolute,
        NextLinkForm::Relative,
        NextLinkForm::QueryOnly,
    ] {
        // Pages of 2 over 8 assets, filtered after paging: the match is on page 3, pages 1
        // and 2 come back empty with a nextLink.
        let fake = FakeMkio::new()
            .with_page_size(2)
            .with_filter_after_paging(true)
            .with_next_link_form(form)
            .serve_https(tls::shared())
            .await;
        for i in 1..=8 {
            fake.add_asset(
                FakeMkioAsset::new(format!("asset-{i}"), Uuid::new_v4())
                    .alternate_id(format!("CMS-{i:04}"))
                    .container(format!("container-{i}")),
            );
        }
        let catalog = catalog(&fake);
        let found = catalog.locate(&id("CMS-0006")).await.unwrap();
        assert_eq!(found.container, "container-6", "{form:?}");
        assert_eq!(fake.hits(MkioOp::GetAsset), 1, "{form:?}");
        assert_eq!(fake.hits(MkioOp::ListAssets), 3, "{form:?}");
        // The filter is kept on every page.
        assert_eq!(
            fake.filters(),
            vec!["properties/alternateId eq 'CMS-0006'"; 3],
            "{form:?}"
        );

        // Not there at all: every page is read, then "not found" (the last full page has a
        // nextLink to an empty one, as the openapi describes: 4 full pages and an empty one).
        fake.reset_counters();
        let err = catalog.locate(&id("CMS-9999")).await.unwrap_err();
        assert!(matches!(err, SourceError::NotFound), "{form:?}: {err:?}");
        assert_eq!(fake.hits(MkioOp::ListAssets), 5, "{form:?}");
    }
}

#[tokio::test]
async fn sub_path_and_storage_url_folders_become_the_prefix() {
    let fake = FakeMkio::start_https(tls::shared()).await;
    fake.add_storage(FakeStorage::azure(
        "scoped",
        "https://otheraccount.blob.core.windows.net/media/shows/",
    ));
    fake.add_storage(FakeStorage::azure(
        "emulator",
        "http://127.0.0.1:10000/devstoreaccount1",
    ));
    fake.add_asset(
        FakeMkioAsset::new("source-video", Uuid::new_v4())
            .container("source-video")
            .sub_path("incoming"),
    );
    fake.add_asset(
        FakeMkioAsset::new("deep", Uuid::new_v4())
            .container("source-video")
            .sub_path("path/to/asset"),
    );
    fake.add_asset(
        FakeMkioAsset::new("in-scoped-folder", Uuid::new_v4())
            .storage(Some("scoped"))
            .container("media")
            .sub_path("ep1"),
    );
    fake.add_asset(
        FakeMkioAsset::new("other-container", Uuid::new_v4())
            .storage(Some("scoped"))
            .container("archive")
            .sub_path("ep2"),
    );
    fake.add_asset(
        FakeMkioAsset::new("emulated", Uuid::new_v4())
            .storage(Some("emulator"))
            .container("asset-1"),
    );
    fake.add_asset(
        FakeMkioAsset::new("no-storage", Uuid::new_v4())
            .storage(None)
            .container("plain"),
    );
    let catalog = catalog(&fake);
    for (name, expected) in [
        (
            "source-video",
            location("mystorageaccount", "source-video", "incoming/"),
        ),
        (
            "deep",
            location("mystorageaccount", "source-video", "path/to/asset/"),
        ),
        // The storage URL's folder belongs to its container.
        (
            "in-scoped-folder",
            location("otheraccount", "media", "shows/ep1/"),
        ),
        (
            "other-container",
            location("otheraccount", "archive", "ep2/"),
        ),
        ("emulated", location("devstoreaccount1", "asset-1", "")),
        ("no-storage", location(DEFAULT_ACCOUNT, "plain", "")),
    ] {
        assert_eq!(catalog.locate(&id(name)).await.unwrap(), expected, "{name}");
    }
}

#[tokio::test]
async fn storage_instances_are_read_once_then_cached() {
    let fake = FakeMkio::start_https(tls::shared()).await;
    fake.add_storage(FakeStorage::azure(
        "second",
        "https://secondaccount.blob.core.windows.net",
    ));
    for i in 0..20 {
        fake.add_asset(FakeMkioAsset::new(format!("a{i}"), Uuid::new_v4()));
    }
    fake.add_asset(FakeMkioAsset::new("b", Uuid::new_v4()).storage(Some("second")));
    let catalog = catalog(&fake);

    // Twenty cold lookups at once: one storage call.
    let ids: Vec<AssetId> = (0..20).map(|i| id(&format!("a{i}"))).collect();
    let results = join_all(ids.iter().map(|i| catalog.locate(i))).await;
    for r in results {
        assert_eq!(r.unwrap().account, "mystorageaccount");
    }
    assert_eq!(fake.hits(MkioOp::GetAsset), 20);
    assert_eq!(fake.hits(MkioOp::GetStorage), 1);
    catalog.locate(&id("a3")).await.unwrap();
    assert_eq!(fake.hits(MkioOp::GetStorage), 1);
    // Another instance: its own call, once.
    assert_eq!(
        catalog.locate(&id("b")).await.unwrap().account,
        "secondaccount"
    );
    catalog.locate(&id("b")).await.unwrap();
    assert_eq!(fake.hits(MkioOp::GetStorage), 2);

    // Past the TTL, read again.
    let mut short = settings(&fake);
    short.storage_cache_ttl = Duration::from_millis(200);
    let catalog = catalog_with(&short, &upstream(3, Duration::from_secs(5)));
    fake.reset_counters();
    catalog.locate(&id("a1")).await.unwrap();
    catalog.locate(&id("a2")).await.unwrap();
    assert_eq!(fake.hits(MkioOp::GetStorage), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    catalog.locate(&id("a1")).await.unwrap();
    assert_eq!(fake.hits(MkioOp::GetStorage), 2);
}

#[tokio::test]
async fn unknown_assets_are_not_found_after_every_lookup() {
    let fake = fake_with_asset().await;
    let catalog = catalog(&fake);
    let err = catalog.locate(&id("NoSuchAsset")).await.unwrap_err();
    assert!(matches!(err, SourceError::NotFound), "{err:?}");
    assert_eq!(fake.hits(MkioOp::GetAsset), 1);
    assert_eq!(fake.hits(MkioOp::ListAssets), 1);

    fake.reset_counters();
    let err = catalog
        .locate(&id("00000000-0000-4000-8000-000000000000"))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::NotFound), "{err:?}");
    assert_eq!(fake.hits(MkioOp::GetAsset), 1);
    assert_eq!(
        fake.hits(MkioOp::ListAssets),
        2,
        "assetId, then alternateId"
    );
    assert_eq!(fake.hits(MkioOp::GetStorage), 0);

    // Longer than an alternate id can be: the name lookup only.
    fake.reset_counters();
    let long = "x".repeat(65);
    assert!(matches!(
        catalog.locate(&id(&long)).await,
        Err(SourceError::NotFound)
    ));
    assert_eq!(fake.total_hits(), 1);
}

#[tokio::test]
async fn storage_that_cannot_be_served() {
    let fake = FakeMkio::start_https(tls::shared()).await;
    fake.add_storage(FakeStorage::other("bucket", "AWS.S3"));
    fake.add_storage(FakeStorage::azure("cdn", "https://media.example.com/files"));
    fake.add_asset(FakeMkioAsset::new("in-s3", Uuid::new_v4()).storage(Some("bucket")));
    fake.add_asset(FakeMkioAsset::new("in-cdn", Uuid::new_v4()).storage(Some("cdn")));
    fake.add_asset(FakeMkioAsset::new("orphan", Uuid::new_v4()).storage(Some("gone")));
    let catalog = catalog(&fake);

    let err = catalog.locate(&id("in-s3")).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Unservable { reason } if reason.contains("AWS.S3")),
        "{err:?}"
    );
    // A definite answer about the instance: cached like a usable one.
    catalog.locate(&id("in-s3")).await.unwrap_err();
    assert_eq!(fake.hits(MkioOp::GetStorage), 1);

    let err = catalog.locate(&id("in-cdn")).await.unwrap_err();
    assert!(matches!(err, SourceError::Upstream { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("example.com"), "{err:?}");
    let err = catalog.locate(&id("orphan")).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Upstream { message, .. } if message.contains("gone")),
        "{err:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Failures
// ------------------------------------------------------------------------------------------

/// Every scenario that makes the catalog log "rejects the configuration", each counted in this
/// test's own log capture.
#[tokio::test]
async fn rejected_token_forbidden_and_unknown_project_are_misconfigured_and_logged_once() {
    let logs = support::logs::capture();
    let rejections = || {
        logs.text()
            .matches("MK.IO rejects the configuration")
            .count()
    };
    let fake = fake_with_asset().await;

    // 401: never retried, logged once however often it happens.
    let wrong = settings_for(&fake.base_url(), &fake.project(), Some("not-the-token"));
    let catalog = catalog_with(&wrong, &upstream(3, Duration::from_secs(5)));
    for _ in 0..3 {
        let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
        assert!(
            matches!(&err, SourceError::Misconfigured { message, .. } if message.contains("401")),
            "{err:?}"
        );
        assert!(!format!("{err:?}").contains("not-the-token"), "{err:?}");
    }
    assert_eq!(fake.hits(MkioOp::GetAsset), 3);
    assert_eq!(fake.total_hits(), 3);
    assert!(catalog.check().await.is_err());
    assert_eq!(rejections(), 1, "logged once");

    // 403.
    fake.set_forbidden(true);
    let catalog = catalog_with(&settings(&fake), &upstream(3, Duration::from_secs(5)));
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Misconfigured { message, .. } if message.contains("403")),
        "{err:?}"
    );
    fake.set_forbidden(false);

    // An unknown project: the list's 404 says so (the name lookup's 404 cannot).
    let elsewhere = settings_for(&fake.base_url(), "no-such-project", Some(&fake.token()));
    let catalog = catalog_with(&elsewhere, &upstream(3, Duration::from_secs(5)));
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Misconfigured { message, .. } if message.contains("no-such-project")),
        "{err:?}"
    );
    assert_eq!(
        catalog.check().await.unwrap_err(),
        "MK.IO does not know the configured project"
    );
    assert_eq!(rejections(), 3, "once per catalog");
    assert_no_secrets(&fake, &logs.text());
}

#[tokio::test]
async fn throttling_is_retried_with_and_without_retry_after() {
    let fake = fake_with_asset().await;
    let catalog = catalog(&fake);

    // Retry-After: 1 is honoured.
    fake.push_fault(
        MkioOp::GetAsset,
        RestFault::TooManyRequests {
            retry_after_secs: Some(1),
        },
    );
    let started = Instant::now();
    catalog.locate(&id("ClimbingMountAdams")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(fake.hits(MkioOp::GetAsset), 2);

    // No Retry-After: backoff (200 ms, 400 ms, jittered).
    fake.push_faults(
        MkioOp::GetAsset,
        RestFault::TooManyRequests {
            retry_after_secs: None,
        },
        2,
    );
    let started = Instant::now();
    catalog.locate(&id("ClimbingMountAdams")).await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert_eq!(fake.hits(MkioOp::GetAsset), 5);

    // The storage and list calls are retried the same way.
    fake.push_fault(
        MkioOp::ListAssets,
        RestFault::TooManyRequests {
            retry_after_secs: None,
        },
    );
    fake.push_fault(MkioOp::GetStorage, RestFault::Status(500));
    let fresh = catalog_with(&settings(&fake), &upstream(3, Duration::from_secs(5)));
    fresh.locate(&id("CLIMB00002")).await.unwrap();
    assert_eq!(fake.hits(MkioOp::ListAssets), 2);
    assert_eq!(fake.hits(MkioOp::GetStorage), 3, "1 + the retried 500 + 1");
    assert_eq!(fake.pending_faults(MkioOp::GetStorage), 0);
}

#[tokio::test]
async fn throttling_beyond_the_budget_is_throttled() {
    let fake = fake_with_asset().await;
    let catalog = catalog_with(&settings(&fake), &upstream(2, Duration::from_secs(3)));

    // A Retry-After beyond the budget: no wait, no retry; the wait is passed on.
    fake.push_fault(
        MkioOp::GetAsset,
        RestFault::TooManyRequests {
            retry_after_secs: Some(60),
        },
    );
    let started = Instant::now();
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(
            err,
            SourceError::Throttled {
                backend: "mkio",
                retry_after: Some(d)
            } if d == Duration::from_secs(60)
        ),
        "{err:?}"
    );
    assert_eq!(fake.hits(MkioOp::GetAsset), 1);

    // Without Retry-After: as many retries as allowed, then throttled with no hint.
    fake.push_faults(
        MkioOp::GetAsset,
        RestFault::TooManyRequests {
            retry_after_secs: None,
        },
        5,
    );
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Throttled {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.hits(MkioOp::GetAsset), 1 + 3, "a try and two retries");
    fake.clear_faults();

    // 5xx: 503 past the budget is throttling, other 5xx an upstream error.
    fake.push_faults(MkioOp::GetAsset, RestFault::Status(503), 3);
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(matches!(err, SourceError::Throttled { .. }), "{err:?}");
    fake.push_faults(MkioOp::GetAsset, RestFault::Status(500), 3);
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Upstream { message, .. } if message.contains("500")),
        "{err:?}"
    );
    // Other 4xx: not retried.
    fake.reset_counters();
    fake.push_fault(MkioOp::GetAsset, RestFault::Status(400));
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(matches!(err, SourceError::Upstream { .. }), "{err:?}");
    assert_eq!(fake.hits(MkioOp::GetAsset), 1);
}

#[tokio::test]
async fn malformed_json_is_an_upstream_error_and_not_cached() {
    let fake = fake_with_asset().await;
    let catalog = catalog(&fake);
    for op in [MkioOp::GetAsset, MkioOp::GetStorage] {
        fake.push_fault(op, RestFault::MalformedJson);
        let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
        assert!(
            matches!(&err, SourceError::Upstream { message, .. } if message.contains("malformed")),
            "{op:?}: {err:?}"
        );
    }
    fake.push_fault(MkioOp::ListAssets, RestFault::MalformedJson);
    let err = catalog.locate(&id("CLIMB00002")).await.unwrap_err();
    assert!(matches!(err, SourceError::Upstream { .. }), "{err:?}");
    // The failed storage read left nothing behind.
    fake.reset_counters();
    catalog.locate(&id("ClimbingMountAdams")).await.unwrap();
    assert_eq!(fake.hits(MkioOp::GetStorage), 1);
}

#[tokio::test]
async fn a_looping_next_link_is_an_upstream_error() {
    let fake = fake_with_asset().await;
    let catalog = catalog(&fake);
    fake.push_fault(MkioOp::ListAssets, RestFault::NextLinkLoop);
    let err = catalog.locate(&id("NotAnAlternateId")).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Upstream { message, .. } if message.contains("loops")),
        "{err:?}"
    );
    // The first page, then its link, then the same link again: detected before it is fetched.
    assert_eq!(fake.hits(MkioOp::ListAssets), 2);
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed() {
    let fake = FakeMkio::new()
        .with_page_size(1)
        .with_filter_after_paging(true)
        .serve_https(tls::shared())
        .await;
    fake.add_asset(FakeMkioAsset::new("a", Uuid::new_v4()));
    fake.add_asset(FakeMkioAsset::new("b", Uuid::new_v4()).alternate_id("B-ALT"));
    let catalog = catalog(&fake);
    // Absolute links now point elsewhere: the token must not follow them.
    fake.set_base_url("https://collector.invalid");
    let err = catalog.locate(&id("B-ALT")).await.unwrap_err();
    assert!(
        matches!(&err, SourceError::Upstream { message, .. } if message.contains("away")),
        "{err:?}"
    );
    assert_eq!(fake.hits(MkioOp::ListAssets), 1);
}

#[tokio::test]
async fn unreachable_and_slow_upstreams() {
    // Nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("https://{}", listener.local_addr().unwrap());
    drop(listener);
    let catalog = catalog_with(
        &settings_for(&closed, "p", Some("t")),
        &upstream(1, Duration::from_secs(2)),
    );
    let err = catalog.locate(&id("anything")).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable { .. }), "{err:?}");
    assert_eq!(
        catalog.check().await.unwrap_err(),
        "MK.IO is unreachable or failing"
    );

    // Slower than the client's timeout, every try.
    let fake = fake_with_asset().await;
    fake.push_faults(
        MkioOp::GetAsset,
        RestFault::Delay(Duration::from_secs(2)),
        2,
    );
    let catalog = MkioCatalog::new(
        &settings(&fake),
        &upstream(1, Duration::from_secs(2)),
        https_client(Duration::from_millis(300)),
        DEFAULT_ACCOUNT,
    )
    .unwrap();
    let err = catalog.locate(&id("ClimbingMountAdams")).await.unwrap_err();
    assert!(matches!(err, SourceError::Timeout { .. }), "{err:?}");
    assert_eq!(fake.hits(MkioOp::GetAsset), 2);

    // A dropped connection is retried.
    fake.clear_faults();
    fake.push_fault(MkioOp::GetAsset, RestFault::DropConnection);
    catalog_with(&settings(&fake), &upstream(2, Duration::from_secs(3)))
        .locate(&id("ClimbingMountAdams"))
        .await
        .unwrap();
}

// ------------------------------------------------------------------------------------------
// Token sources, health, plain HTTP
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_from_a_file() {
    let fake = fake_with_asset().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mkio-token");
    std::fs::write(&path, format!("  {}\n", fake.token())).unwrap();
    let mut from_file = settings_for(&fake.base_url(), &fake.project(), None);
    from_file.token_file = Some(path.clone());
    let catalog = catalog_with(&from_file, &upstream(3, Duration::from_secs(5)));
    catalog.locate(&id("ClimbingMountAdams")).await.unwrap();
    assert_eq!(
        fake.last_authorization(),
        Some(format!("Bearer {}", fake.token()))
    );

    // A missing file fails start-up naming the key (and never a token).
    from_file.token_file = Some(dir.path().join("missing"));
    let err = MkioCatalog::new(
        &from_file,
        &UpstreamSettings::default(),
        reqwest::Client::new(),
        DEFAULT_ACCOUNT,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Invalid { key, .. } if key == "source.token_file"),
        "{err}"
    );
    // Both set: refused with the settings, before any catalog is built.
    from_file.token = Some(Secret::new("x"));
    from_file.token_file = Some(path);
    let err = from_file.validate().unwrap_err();
    assert_eq!(err.key, "source.token_file", "{err}");
}

#[tokio::test]
async fn health_check_lists_one_asset() {
    let fake = fake_with_asset().await;
    let catalog = catalog(&fake);
    assert_eq!(catalog.name(), "mkio");
    assert!(!catalog.required(), "an upstream every replica shares");
    catalog.check().await.unwrap();
    assert_eq!(fake.hits(MkioOp::ListAssets), 1);
    fake.push_faults(
        MkioOp::ListAssets,
        RestFault::TooManyRequests {
            retry_after_secs: Some(60),
        },
        1,
    );
    assert_eq!(catalog.check().await.unwrap_err(), "MK.IO is throttling");
}

#[tokio::test]
async fn the_plain_router_serves_a_loopback_http_base_url() {
    let fake = FakeMkio::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = fake.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    fake.set_base_url(&base);
    fake.add_asset(FakeMkioAsset::new("plain-http", Uuid::new_v4()).sub_path("x/y"));
    let catalog = MkioCatalog::new(
        &settings(&fake),
        &upstream(1, Duration::from_secs(2)),
        reqwest::Client::new(),
        DEFAULT_ACCOUNT,
    )
    .unwrap();
    assert_eq!(
        catalog.locate(&id("plain-http")).await.unwrap().prefix,
        "x/y/"
    );
}

// ------------------------------------------------------------------------------------------
// The fake against the docs payloads
// ------------------------------------------------------------------------------------------

async fn fake_get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = tls::client(tls::shared()).get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn fake_bodies_have_the_shape_of_the_docs_payloads() {
    let fake = FakeMkio::start_https(tls::shared()).await;
    fake.add_asset(
        FakeMkioAsset::new("source-video", Uuid::new_v4())
            .container("source-video")
            .description("Source video for encoding")
            .sub_path("incoming")
            .label("series", "my-show")
            .label("season", "2"),
    );
    let token = fake.token();

    // Asset: the PUT example's properties and labels, plus the read-only fields.
    let (status, body) = fake_get(&fake.asset_url("source-video"), Some(&token)).await;
    assert_eq!(status, 200);
    let example = fake_mkio::load_example("docs-asset-put-request.json");
    for (key, value) in example["properties"].as_object().unwrap() {
        assert_eq!(&body["properties"][key], value, "properties.{key}");
    }
    assert_eq!(body["labels"], example["labels"]);
    assert_eq!(body["name"], "source-video");
    for key in ["assetId", "created", "lastModified"] {
        assert!(body["properties"][key].is_string(), "{key}");
    }

    // List: the trimmed example's envelope.
    let (status, body) = fake_get(&fake.assets_url(), Some(&token)).await;
    assert_eq!(status, 200);
    let example = fake_mkio::load_example("docs-list-assets-response-trimmed.json");
    assert_eq!(keys(&body["supplemental"]), keys(&example["supplemental"]));
    assert_eq!(body["supplemental"]["kind"], "Asset");
    assert_eq!(body["supplemental"]["pagination"]["total"], 1);
    assert_eq!(body["value"][0]["name"], "source-video");
    assert!(body.get("@odata.nextLink").is_none(), "one partial page");

    // Storage: the PUT example's spec, its SAS signature replaced.
    let (status, body) = fake_get(&fake.storage_url("primary-azure"), Some(&token)).await;
    assert_eq!(status, 200);
    let example = fake_mkio::load_example("docs-storage-put-azure-request.json");
    assert_eq!(body["metadata"]["name"], "primary-azure");
    assert_eq!(body["spec"]["url"], example["spec"]["url"]);
    assert_eq!(body["spec"]["type"], "Microsoft.Storage");
    let sas = body["spec"]["credential"]["sasToken"].as_str().unwrap();
    assert!(
        sas.ends_with(&format!("sig={}", fake_mkio::STORAGE_SAS_SIG)),
        "{sas}"
    );
    assert_eq!(
        body["spec"]["credential"]["signedExpiry"],
        "2026-12-31T23:59:59Z"
    );

    // Errors: the docs' error body.
    let example = fake_mkio::load_example("docs-error-response.json");
    let (status, body) = fake_get(&fake.asset_url("source-video"), None).await;
    assert_eq!(status, 401);
    assert_eq!(keys(&body), keys(&example));
    assert_eq!(keys(&body["error"]), keys(&example["error"]));
    assert_eq!(body["status"], 401);
    let (status, body) = fake_get(&fake.asset_url("nope"), Some(&token)).await;
    assert_eq!((status, body["status"].clone()), (404, Value::from(404)));
    assert!(body["ref"].is_string());
    fake.push_fault(
        MkioOp::GetAsset,
        RestFault::TooManyRequests {
            retry_after_secs: Some(3),
        },
    );
    let response = tls::client(tls::shared())
        .get(fake.asset_url("source-video"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 429);

    // $filter forms, and a bad one.
    let filtered = format!(
        "{}?$filter=name%20eq%20%27source-video%27",
        fake.assets_url()
    );
    let (_, body) = fake_get(&filtered, Some(&token)).await;
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    let bad = format!(
        "{}?$filter=properties/description%20eq%20%27x%27",
        fake.assets_url()
    );
    assert_eq!(fake_get(&bad, Some(&token)).await.0, 400);
}
