//! The HTTP API against the bundled samples, black-box: the real server on port 0, and every
//! URL it returns fetched.

use crate::support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use serde_json::Value;
use support::{TestServer, assert_problem, settings};

async fn thumbnails(server: &TestServer, id: &str) -> Value {
    let response = server.get(&format!("/assets/{id}/thumbnails")).await;
    assert_eq!(response.status(), 200, "{id}");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

/// Fetches a URL the service returned and checks it serves image bytes of the stated type/size.
async fn assert_serves_image(server: &TestServer, url: &str, content_type: &str, size: u64) {
    let response = server.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.headers()["content-type"], content_type, "{url}");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, size, "{url}");
    let magic_ok = match content_type {
        "image/jpeg" => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/bmp" => bytes.starts_with(b"BM"),
        _ => false,
    };
    assert!(magic_ok, "{url} does not hold {content_type} bytes");
}

#[tokio::test]
async fn every_url_of_every_sample_serves_its_image() {
    let server = TestServer::start(settings("")).await;
    let mut fetched = 0;
    for id in [
        "builtin-preset",
        "multi-rendition",
        "sprite-storyboard",
        "virtual-folders",
        "no-thumbnails",
    ] {
        let body = thumbnails(&server, id).await;
        assert_eq!(body["assetId"], id);
        for t in body["thumbnails"].as_array().unwrap() {
            assert_serves_image(
                &server,
                t["url"].as_str().unwrap(),
                t["contentType"].as_str().unwrap(),
                t["size"].as_u64().unwrap(),
            )
            .await;
            fetched += 1;
        }
        if let Some(sb) = body.get("storyboard") {
            let url = sb["url"].as_str().unwrap();
            let response = server.client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "image/jpeg");
        }
    }
    assert_eq!(fetched, 5 + 10 + 10 + 3, "thumbnails across the samples");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn builtin_preset_lists_thumbnails_in_order_without_neighbours() {
    let server = TestServer::start(settings("")).await;
    let body = thumbnails(&server, "builtin-preset").await;
    let names: Vec<&str> = body["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        (1..=5)
            .map(|i| format!("Thumbnail{i:06}.jpg"))
            .collect::<Vec<_>>()
    );
    let first = &body["thumbnails"][0];
    assert_eq!(first["index"], 1);
    assert_eq!(first["width"], 320, "from the JPEG header");
    assert_eq!(first["height"], 180);
    assert!(
        first.get("time").is_none(),
        "no storyboard, no timing: no time"
    );
    assert!(first.get("label").is_none());
    assert!(body.get("expiresAt").is_none(), "local URLs do not expire");
    assert!(body.get("storyboard").is_none());
}

#[tokio::test]
async fn multi_rendition_orders_by_index_then_label() {
    let server = TestServer::start(settings("")).await;
    let body = thumbnails(&server, "multi-rendition").await;
    let got: Vec<(u64, String, u64)> = body["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["index"].as_u64().unwrap(),
                t["label"].as_str().unwrap_or("-").to_owned(),
                t["width"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "-".into(), 320),
            (1, "large".into(), 640),
            (1, "small".into(), 160),
            (2, "-".into(), 320),
            (2, "large".into(), 640),
            (2, "small".into(), 160),
            (3, "large".into(), 640),
            (3, "small".into(), 160),
            (4, "large".into(), 640),
            (4, "small".into(), 160),
        ]
    );
}

#[tokio::test]
async fn storyboard_gives_times_and_is_not_a_thumbnail() {
    let server = TestServer::start(settings("")).await;
    let body = thumbnails(&server, "sprite-storyboard").await;
    let thumbs = body["thumbnails"].as_array().unwrap();
    assert_eq!(thumbs.len(), 10);
    assert!(thumbs.iter().all(|t| t["name"] != "forest_sprite.jpg"));
    let times: Vec<f64> = thumbs.iter().map(|t| t["time"].as_f64().unwrap()).collect();
    assert_eq!(times, (0..10).map(|i| i as f64 * 2.0).collect::<Vec<_>>());
    let sb = &body["storyboard"];
    assert_eq!(sb["name"], "forest_sprite.jpg");
    assert_eq!(sb["vttName"], "forest_sprite.vtt");
    assert_eq!(
        (sb["width"].as_u64(), sb["height"].as_u64()),
        (Some(640), Some(270))
    );
    let tiles = sb["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), 10);
    assert_eq!(tiles[5]["x"], 160);
    assert_eq!(tiles[5]["y"], 90);
    assert_eq!(tiles[5]["start"], 10.0);
    assert_eq!(tiles[5]["end"], 12.0);
}

#[tokio::test]
async fn configured_timing_and_layers_apply() {
    let server = TestServer::start(settings(
        "[recognition]\ntiming = { start = \"1s\", step = \"500ms\" }\n",
    ))
    .await;
    let body = thumbnails(&server, "builtin-preset").await;
    let times: Vec<f64> = body["thumbnails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["time"].as_f64().unwrap())
        .collect();
    assert_eq!(times, vec![1.0, 1.5, 2.0, 2.5, 3.0]);
}

#[tokio::test]
async fn virtual_folders_are_kept_in_names_and_urls() {
    let server = TestServer::start(settings("")).await;
    let body = thumbnails(&server, "virtual-folders").await;
    let first = &body["thumbnails"][0];
    assert_eq!(first["name"], "thumbnails/Thumbnail-harbour-000001.png");
    assert!(
        first["url"]
            .as_str()
            .unwrap()
            .ends_with("/local/virtual-folders/thumbnails/Thumbnail-harbour-000001.png")
    );
}

#[tokio::test]
async fn asset_without_thumbnails_is_an_empty_list_and_404_on_redirects() {
    let server = TestServer::start(settings("")).await;
    let body = thumbnails(&server, "no-thumbnails").await;
    assert_eq!(body["thumbnails"], Value::Array(vec![]));
    assert_problem(
        server.get("/assets/no-thumbnails/poster").await,
        404,
        "no-thumbnails",
    )
    .await;
    assert_problem(
        server.get("/assets/no-thumbnails/thumbnails/1").await,
        404,
        "thumbnail-not-found",
    )
    .await;
}

async fn location(server: &TestServer, path: &str) -> String {
    let response = server.get(path).await;
    assert_eq!(response.status(), 302, "{path}");
    let cache_control = response.headers()["cache-control"].to_str().unwrap();
    assert!(cache_control.contains("max-age="), "{cache_control}");
    response.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn thumbnail_redirect_chooses_rendition_and_the_target_loads() {
    let server = TestServer::start(settings("")).await;
    let base = "/assets/multi-rendition/thumbnails";
    let cases = [
        ("/2", "river_large_000002.jpg"), // the widest by default
        ("/2?label=small", "river_small_000002.jpg"),
        ("/2?label=large", "river_large_000002.jpg"),
        ("/1?width=100", "river_small_000001.jpg"),
        ("/1?width=161", "river_320x180_000001.png"),
        ("/1?width=321", "river_large_000001.jpg"),
        ("/1?width=5000", "river_large_000001.jpg"), // none wide enough: the largest
        ("/3?width=200", "river_large_000003.jpg"),
    ];
    for (suffix, expected) in cases {
        let loc = location(&server, &format!("{base}{suffix}")).await;
        assert!(loc.ends_with(expected), "{suffix}: {loc}");
    }
    // `<img src>` works: following the redirect yields the image.
    let followed = reqwest::get(server.url(&format!("{base}/1?label=small")))
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(followed.headers()["content-type"], "image/jpeg");
    assert!(followed.bytes().await.unwrap().starts_with(&[0xFF, 0xD8]));
}

#[tokio::test]
async fn poster_default_and_by_time() {
    let server = TestServer::start(settings("")).await;
    let p = "/assets/sprite-storyboard/poster";
    let cases = [
        ("", "Thumbnail000001.jpg"),
        ("?time=0", "Thumbnail000001.jpg"),
        ("?time=4.9", "Thumbnail000003.jpg"),
        ("?time=5", "Thumbnail000003.jpg"), // tie between 4 s and 6 s: the earlier
        ("?time=5.1", "Thumbnail000004.jpg"),
        ("?time=PT7S", "Thumbnail000004.jpg"),
        // The configuration's duration forms too.
        ("?time=7s", "Thumbnail000004.jpg"),
        ("?time=4900ms", "Thumbnail000003.jpg"),
        ("?time=1m", "Thumbnail000010.jpg"),
        ("?time=PT1M", "Thumbnail000010.jpg"), // past the end clamps to the last
        ("?time=99999", "Thumbnail000010.jpg"),
    ];
    for (query, expected) in cases {
        let loc = location(&server, &format!("{p}{query}")).await;
        assert!(loc.ends_with(expected), "{query}: {loc}");
    }
    // The chosen thumbnail and its time are named.
    let response = server.get(&format!("{p}?time=1m30s")).await;
    assert_eq!(response.headers()["x-thumbnail-index"], "10");
    assert_eq!(response.headers()["x-thumbnail-time"], "18");
    // Without known times, ?time= falls back to the default thumbnail, and says so.
    let response = server.get("/assets/builtin-preset/poster?time=30").await;
    let loc = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.ends_with("Thumbnail000001.jpg"), "{loc}");
    assert_eq!(response.headers()["x-thumbnail-time"], "unknown");
    assert_eq!(response.headers()["x-thumbnail-index"], "1");
    let loc = location(&server, "/assets/multi-rendition/poster?label=small").await;
    assert!(loc.ends_with("river_small_000001.jpg"), "{loc}");
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let server = TestServer::start(settings("")).await;
    // The longest valid id is looked up (and not found), not refused.
    let longest = "a".repeat(260);
    assert_problem(
        server.get(&format!("/assets/{longest}/thumbnails")).await,
        404,
        "asset-not-found",
    )
    .await;
    server.probe.locates.store(0, Ordering::SeqCst);
    let long = "a".repeat(261);
    let invalid_ids = [
        "/assets//thumbnails".to_owned(),
        format!("/assets/{long}/thumbnails"),
        "/assets/a%2Fb/thumbnails".into(),
        "/assets/a..b/thumbnails".into(),
        "/assets/a%00b/thumbnails".into(),
        "/assets/a%0Ab/thumbnails".into(),
        "/assets/a%3Cscript%3E/thumbnails".into(),
        "/assets/a*b/poster".into(),
        "/assets/%FF%FE/thumbnails".into(),
        "/assets/x:y/thumbnails/1".into(),
    ];
    for path in &invalid_ids {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        assert_problem(response, 400, "invalid-asset-id").await;
    }
    // Sent raw: an HTTP client would normalise the dot segments away.
    for path in [
        "/assets/../thumbnails",
        "/assets/./poster",
        "/assets/../thumbnails/1",
    ] {
        let (status, body) = support::raw_get(&server.base, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("invalid-asset-id"), "{path}: {body}");
    }
    assert_eq!(server.probe.calls(), 0, "no backend call for an invalid id");
    for (path, code) in [
        ("/assets/builtin-preset/thumbnails/0", "invalid-parameter"),
        ("/assets/builtin-preset/thumbnails/x", "invalid-parameter"),
        ("/assets/builtin-preset/thumbnails/-1", "invalid-parameter"),
        (
            "/assets/builtin-preset/thumbnails/1?width=0",
            "invalid-parameter",
        ),
        (
            "/assets/builtin-preset/thumbnails/1?width=wide",
            "invalid-parameter",
        ),
        (
            "/assets/builtin-preset/thumbnails/1?label=",
            "invalid-parameter",
        ),
        (
            "/assets/builtin-preset/poster?time=soon",
            "invalid-parameter",
        ),
        ("/assets/builtin-preset/poster?time=-3", "invalid-parameter"),
    ] {
        assert_problem(server.get(path).await, 400, code).await;
    }
    assert_eq!(
        server.probe.calls(),
        0,
        "no backend call for bad parameters"
    );
}

#[tokio::test]
async fn not_found_cases_are_problems() {
    let server = TestServer::start(settings("")).await;
    for (path, code) in [
        ("/assets/no-such-asset/thumbnails", "asset-not-found"),
        ("/assets/no-such-asset/poster", "asset-not-found"),
        ("/assets/no-such-asset/thumbnails/1", "asset-not-found"),
        ("/assets/builtin-preset/thumbnails/6", "thumbnail-not-found"),
        (
            "/assets/builtin-preset/thumbnails/999999999",
            "thumbnail-not-found",
        ),
        (
            "/assets/multi-rendition/thumbnails/1?label=huge",
            "thumbnail-not-found",
        ),
        ("/nowhere", "route-not-found"),
        ("/local/generate.py", "route-not-found"),
    ] {
        assert_problem(server.get(path).await, 404, code).await;
    }
    let response = server
        .client
        .post(server.url("/assets/builtin-preset/thumbnails"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn local_files_route_cannot_leave_the_asset_folders() {
    let server = TestServer::start(settings("")).await;
    for path in [
        "/local/builtin-preset/nothing.jpg",
        "/local/./generate.py",
        "/local/%2E/README.md",
        "/local/%2e%2e/Cargo.toml",
        "/local/builtin-preset/..%2F..%2FCargo.toml",
        "/local/builtin-preset/%2e%2e/%2e%2e/Cargo.toml",
        "/local/builtin-preset/..%5C..%5CCargo.toml",
        "/local/builtin-preset/%5Cetc%5Cpasswd",
        "/local/builtin-preset//etc/passwd",
        "/local/builtin-preset/.hidden",
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["code"] == "file-not-found" || body["code"] == "route-not-found",
            "{path}: {body}"
        );
    }
    // Sent raw, so that no client normalises the dot segments first.
    for path in [
        "/local/builtin-preset/../../Cargo.toml",
        "/local/../Cargo.toml",
        "/local/builtin-preset/../generate.py",
    ] {
        let (status, body) = support::raw_get(&server.base, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("[package]") && !body.contains("import"),
            "{path}"
        );
    }
    // Symlinks pointing out of the root are not followed.
    let dir = tempfile::tempdir().unwrap();
    let asset = dir.path().join("linked");
    std::fs::create_dir(&asset).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", asset.join("Thumbnail000001.jpg")).unwrap();
    std::os::unix::fs::symlink("/etc", asset.join("etc")).unwrap();
    let linked = TestServer::start(support::settings_for_root(dir.path(), "")).await;
    let body = thumbnails(&linked, "linked").await;
    assert_eq!(
        body["thumbnails"],
        Value::Array(vec![]),
        "symlinks are not blobs"
    );
}

#[tokio::test]
async fn health_readiness_and_spec() {
    let server = TestServer::start(settings("")).await;
    let response = server.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok");
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"][0]["name"], "local");
    assert_eq!(body["checks"][0]["status"], "up");
    let response = server.get("/openapi.yaml").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    assert!(response.text().await.unwrap().starts_with("openapi: 3.1"));
}

#[tokio::test]
async fn readiness_is_503_when_the_sample_folder_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start(support::settings_for_root(&dir.path().join("missing"), "")).await;
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"][0]["status"], "down");
    let detail = body["checks"][0]["detail"].as_str().unwrap();
    assert!(
        !detail.contains(&dir.path().display().to_string()),
        "no paths leak: {detail}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = TestServer::start(settings("")).await;
    let mut seen = HashSet::new();
    for path in [
        "/healthz",
        "/assets/builtin-preset/thumbnails",
        "/assets/a..b/thumbnails",
        "/nowhere",
    ] {
        let response = server.get(path).await;
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 36, "{path}: {id}");
        assert!(seen.insert(id));
    }
    // A caller's id is kept.
    let response = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "caller-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "caller-123");
}

#[tokio::test]
async fn head_requests_answer_like_get_without_a_body() {
    let server = TestServer::start(settings("")).await;
    let response = server
        .client
        .head(server.url("/assets/builtin-preset/thumbnails"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 1);
}
