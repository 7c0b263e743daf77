//! What a frontend needs: storyboards, batch lookups, HTTP caching, compression, CORS, metrics
//! and cache invalidation — against the real server and the bundled samples.

use crate::support;

use std::io::Read;
use std::sync::atomic::Ordering;

use serde_json::Value;
use support::{TestServer, assert_problem, metric, settings};

#[tokio::test]
async fn storyboard_vtt_and_json_point_at_working_urls() {
    let server = TestServer::start(settings("")).await;
    let response = server.get("/assets/sprite-storyboard/storyboard.vtt").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/vtt; charset=utf-8"
    );
    let vtt = response.text().await.unwrap();
    let parsed =
        ams_thumbnails::recognise::vtt::parse("x.vtt", &vtt).expect("valid storyboard VTT");
    assert_eq!(parsed.tiles.len(), 10);
    assert_eq!(parsed.tiles[3].x, 480);
    // Every cue's image is the absolute sprite URL, and it loads.
    let cue_url = vtt
        .lines()
        .find(|l| l.contains("#xywh="))
        .unwrap()
        .split('#')
        .next()
        .unwrap()
        .to_owned();
    assert!(cue_url.starts_with("http://127.0.0.1:"), "{cue_url}");
    let sprite = server.client.get(&cue_url).send().await.unwrap();
    assert_eq!(sprite.status(), 200);
    assert_eq!(sprite.headers()["content-type"], "image/jpeg");

    let json: Value = server
        .get("/assets/sprite-storyboard/storyboard.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["assetId"], "sprite-storyboard");
    assert_eq!(json["url"], cue_url);
    assert_eq!(
        (json["width"].as_u64(), json["height"].as_u64()),
        (Some(640), Some(270))
    );
    let tiles = json["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), 10);
    assert_eq!(tiles[9]["end"], 20.0);

    for path in [
        "/assets/builtin-preset/storyboard.vtt",
        "/assets/builtin-preset/storyboard.json",
    ] {
        assert_problem(server.get(path).await, 404, "no-storyboard").await;
    }
    assert_problem(
        server.get("/assets/ghost/storyboard.json").await,
        404,
        "asset-not-found",
    )
    .await;
}

#[tokio::test]
async fn batch_resolves_each_distinct_id_once() {
    let server = TestServer::start(settings("[api]\nbatch_limit = 5\n")).await;
    let body = serde_json::json!({
        "assetIds": ["builtin-preset", "ghost", "builtin-preset", "a/b", "multi-rendition"]
    });
    let response = server
        .client
        .post(server.url("/assets:batchGet"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    let summary: Vec<(&str, u64)> = results
        .iter()
        .map(|r| {
            (
                r["assetId"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("builtin-preset", 200),
            ("ghost", 404),
            ("a/b", 400),
            ("multi-rendition", 200)
        ]
    );
    assert_eq!(
        results[0]["result"]["thumbnails"].as_array().unwrap().len(),
        5
    );
    assert_eq!(results[1]["problem"]["code"], "asset-not-found");
    assert_eq!(results[2]["problem"]["code"], "invalid-asset-id");
    // The single answers are byte-identical to the list route's.
    let single: Value = server
        .get("/assets/multi-rendition/thumbnails")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(results[3]["result"], single);
    // The duplicate was resolved once; the invalid id never reached the backend.
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 3);

    let too_many = serde_json::json!({"assetIds": ["a1", "a2", "a3", "a4", "a5", "a6"]});
    let response = server
        .client
        .post(server.url("/assets:batchGet"))
        .json(&too_many)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid-body").await;
    for bad in [r#"{"ids":[]}"#, "not json", r#"{"assetIds":"x"}"#] {
        let response = server
            .client
            .post(server.url("/assets:batchGet"))
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_problem(response, 400, "invalid-body").await;
    }
}

#[tokio::test]
async fn etag_and_conditional_requests() {
    let server = TestServer::start(settings("")).await;
    let path = "/assets/builtin-preset/thumbnails";
    let first = server.get(path).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong: {etag}"
    );
    assert!(
        first.headers()["vary"]
            .to_str()
            .unwrap()
            .contains("accept-encoding")
    );
    let cache_control = first.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache_control.starts_with("public, max-age="),
        "{cache_control}"
    );

    let revalidated = server
        .client
        .get(server.url(path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert!(revalidated.bytes().await.unwrap().is_empty());

    let changed = server
        .client
        .get(server.url(path))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    // Another asset has another tag.
    let other = server.get("/assets/multi-rendition/thumbnails").await;
    assert_ne!(other.headers()["etag"], etag.as_str());
}

#[tokio::test]
async fn gzip_when_accepted_without_extra_work_per_hit() {
    let server = TestServer::start(settings("")).await;
    let path = "/assets/sprite-storyboard/thumbnails";
    let plain = server.get(path).await.bytes().await.unwrap();
    let renders = server.state.resolver.stats().renders;
    // A client that leaves bodies as sent (reqwest's gzip feature is on in this build).
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let response = raw
        .get(server.url(path))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.unwrap();
    assert!(
        compressed.len() < plain.len() / 2,
        "{} vs {}",
        compressed.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    assert_eq!(
        server.state.resolver.stats().renders,
        renders,
        "compressed at load, not per hit"
    );
    let refused = raw
        .get(server.url(path))
        .header("accept-encoding", "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert!(refused.headers().get("content-encoding").is_none());
}

/// One HTTP/1.1 exchange on an open connection: the status and the header names and values
/// of the answer (its body read by `Content-Length`).
async fn exchange(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    request: &str,
) -> (u16, Vec<(String, String)>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let status = line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, headers)
}

/// The list answer's headers are written into the request's own (emptied) map, which hyper
/// hands from one answer to the next request on a connection: nothing of an earlier request
/// or answer may show in a later one.
#[tokio::test]
async fn answers_on_one_connection_carry_only_their_own_headers() {
    let server = TestServer::start(settings("")).await;
    let authority = server.base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let path = "/assets/builtin-preset/thumbnails";
    let request = |extra: &str| format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n");
    let names = |headers: &[(String, String)]| {
        let mut names: Vec<_> = headers.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    };
    let value = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };

    let (status, gzip) = exchange(
        &mut stream,
        &request(
            "Accept-Encoding: gzip\r\nX-Probe: from-the-request\r\nX-Request-Id: first-one\r\n",
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(value(&gzip, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(value(&gzip, "x-request-id").as_deref(), Some("first-one"));
    let gzip_tag = value(&gzip, "etag").unwrap();

    let (status, plain) = exchange(&mut stream, &request("")).await;
    assert_eq!(status, 200);
    let expected = [
        "cache-control",
        "content-length",
        "content-type",
        "date",
        "etag",
        "referrer-policy",
        "vary",
        "x-content-type-options",
        "x-request-id",
    ];
    assert_eq!(names(&plain), expected, "{plain:?}");
    assert_ne!(value(&plain, "etag").unwrap(), gzip_tag);
    assert_ne!(value(&plain, "x-request-id").as_deref(), Some("first-one"));

    let plain_tag = value(&plain, "etag").unwrap();
    let (status, not_modified) = exchange(
        &mut stream,
        &request(&format!("If-None-Match: {plain_tag}\r\n")),
    )
    .await;
    assert_eq!(status, 304);
    assert!(
        value(&not_modified, "content-type").is_none(),
        "{not_modified:?}"
    );
    assert!(
        value(&not_modified, "if-none-match").is_none(),
        "{not_modified:?}"
    );

    let (status, again) = exchange(&mut stream, &request("")).await;
    assert_eq!(status, 200);
    assert_eq!(names(&again), expected, "{again:?}");
}

#[tokio::test]
async fn cors_only_for_configured_origins() {
    let closed = TestServer::start(settings("")).await;
    let response = closed
        .client
        .get(closed.url("/assets/builtin-preset/thumbnails"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no CORS by default"
    );

    let open = TestServer::start(settings(
        "[api]\ncors_allowed_origins = [\"https://app.example.com\"]\n",
    ))
    .await;
    let preflight = open
        .client
        .request(
            reqwest::Method::OPTIONS,
            open.url("/assets/builtin-preset/thumbnails"),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "if-none-match")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("if-none-match"), "{allowed}");

    let response = open
        .client
        .get(open.url("/assets/builtin-preset/thumbnails"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in ["etag", "x-request-id", "retry-after"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    // A preflight from an origin that is not listed: a problem document, not an empty 200.
    for path in ["/assets/builtin-preset/thumbnails", "/nowhere"] {
        let refused = open
            .client
            .request(reqwest::Method::OPTIONS, open.url(path))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert!(
            refused
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
        assert_problem(refused, 403, "origin-not-allowed").await;
    }
    let foreign = open
        .client
        .get(open.url("/assets/builtin-preset/thumbnails"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        ams_thumbnails::Settings::from_toml(
            "[api]\ncors_allowed_origins = [\"app.example.com\"]\n"
        )
        .is_err()
    );
}

#[tokio::test]
async fn invalidation_forces_a_fresh_load() {
    // sha256("test-admin-key")
    let server = TestServer::start(settings(
        "[auth]\napi_keys = [{ name = \"ops\", sha256 = \"944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9\", roles = [\"admin\"] }]\n",
    ))
    .await;
    let path = "/assets/builtin-preset/thumbnails";
    assert_eq!(server.get(path).await.status(), 200);
    assert_eq!(server.get(path).await.status(), 200);
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 1);
    let response = server
        .client
        .delete(server.url("/assets/builtin-preset/cache"))
        .header("x-api-key", "test-admin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(server.get(path).await.status(), 200);
    assert_eq!(server.probe.locates.load(Ordering::SeqCst), 2);
    let response = server
        .client
        .delete(server.url("/assets/a..b/cache"))
        .header("x-api-key", "test-admin-key")
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid-asset-id").await;
}

#[tokio::test]
async fn metrics_count_requests_cache_and_upstream() {
    let server = TestServer::start(settings("")).await;
    let scrape = || async { server.get("/metrics").await.text().await.unwrap() };
    let before = scrape().await;
    for _ in 0..3 {
        server.get("/assets/virtual-folders/thumbnails").await;
    }
    server.get("/assets/nothing-here/thumbnails").await;
    let after = scrape().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    let route = [("route", "/assets/{assetId}/thumbnails"), ("status", "200")];
    assert!(delta("http_requests_total", &route) >= 3.0, "{after}");
    assert!(
        delta(
            "http_requests_total",
            &[("route", "/assets/{assetId}/thumbnails"), ("status", "404")]
        ) >= 1.0
    );
    assert!(delta("cache_hits_total", &[]) >= 2.0);
    assert!(delta("cache_misses_total", &[]) >= 2.0);
    assert!(
        delta(
            "upstream_requests_total",
            &[
                ("backend", "local"),
                ("operation", "locate"),
                ("outcome", "ok")
            ]
        ) >= 1.0
    );
    assert!(
        delta(
            "upstream_requests_total",
            &[
                ("backend", "local"),
                ("operation", "locate"),
                ("outcome", "not_found")
            ]
        ) >= 1.0
    );
    assert!(
        after.contains("ams_thumbnails_http_request_duration_seconds_bucket"),
        "histograms"
    );
    // `cache_entries` is one process-wide gauge that each app sets as it is scraped: another
    // test's app, scraped at the same moment, may set it between this app's set and render.
    let mut entries = metric(&after, "cache_entries", &[]);
    for _ in 0..5 {
        if entries >= 1.0 {
            break;
        }
        entries = metric(&scrape().await, "cache_entries", &[]);
    }
    assert!(entries >= 1.0, "{after}");
    assert!(!after.contains("nothing-here"), "no raw ids as labels");
}

#[tokio::test]
async fn demo_page_is_served_with_a_strict_policy() {
    let server = TestServer::start(settings("")).await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/demo/app.js", "text/javascript; charset=utf-8"),
        ("/demo/app.css", "text/css; charset=utf-8"),
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type);
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}
