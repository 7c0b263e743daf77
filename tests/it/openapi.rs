//! `openapi.yaml` is the truth about the HTTP API: the router's routes and the spec's operations
//! are the same set, and real answers (successes and problems) match the documented status,
//! media type and schema.

use crate::support;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use support::{app_with_probe, settings};
use tower::ServiceExt;

fn spec() -> Value {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(ams_thumbnails::http::OPENAPI_YAML).expect("openapi.yaml parses");
    serde_json::to_value(yaml).expect("YAML maps to JSON")
}

fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn spec_is_openapi_3_1_with_the_schemas_tests_rely_on() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for name in [
        "AssetThumbnails",
        "Thumbnail",
        "Storyboard",
        "StoryboardTile",
        "Problem",
        "Health",
        "Readiness",
        "ReadinessCheck",
        "GenerateRequest",
        "Job",
        "JobError",
    ] {
        assert!(
            spec["components"]["schemas"].get(name).is_some(),
            "schema {name}"
        );
    }
    // Every problem code the service can emit is documented.
    let codes = &spec["components"]["schemas"]["Problem"]["properties"]["code"]["enum"];
    for code in [
        "invalid-asset-id",
        "invalid-parameter",
        "asset-not-found",
        "asset-unservable",
        "thumbnail-not-found",
        "no-thumbnails",
        "no-storyboard",
        "invalid-body",
        "malformed-event",
        "payload-too-large",
        "unsupported-media-type",
        "overloaded",
        "file-not-found",
        "route-not-found",
        "method-not-allowed",
        "upstream-error",
        "upstream-unavailable",
        "upstream-timeout",
        "request-timeout",
        "job-not-found",
        "generation-unsupported",
        "generation-refused",
        "generation-failed",
        "no-video",
        "internal-error",
    ] {
        assert!(
            codes.as_array().unwrap().iter().any(|c| c == code),
            "code {code} missing from Problem.code"
        );
    }
}

#[test]
fn router_and_spec_have_the_same_routes() {
    let (_, state, _) = app_with_probe(settings(""));
    let router: BTreeSet<(String, String)> = ams_thumbnails::http::route_table(&state)
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    let spec = spec_operations(&spec());
    let missing_in_spec: Vec<_> = router.difference(&spec).collect();
    let missing_in_router: Vec<_> = spec.difference(&router).collect();
    assert!(
        missing_in_spec.is_empty() && missing_in_router.is_empty(),
        "undocumented routes: {missing_in_spec:?}; documented but not routed: {missing_in_router:?}"
    );
}

/// Validates `instance` against a schema from the spec (refs to components resolved).
fn validate(spec: &Value, schema: &Value, instance: &Value, what: &str) {
    let rewrite = |v: &Value| -> Value {
        serde_json::from_str(
            &serde_json::to_string(v)
                .unwrap()
                .replace("#/components/schemas/", "#/$defs/"),
        )
        .unwrap()
    };
    let mut root = rewrite(schema);
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    root["$defs"] = rewrite(&spec["components"]["schemas"]);
    let validator = jsonschema::validator_for(&root).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance}");
}

fn resolve_ref<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            spec.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {r}"))
        }
        None => v,
    }
}

/// The documented response for a status (`"404"`, else `"4XX"`, else `default`).
fn documented<'a>(spec: &'a Value, op: &'a Value, status: u16) -> Option<&'a Value> {
    let responses = op.get("responses")?;
    let exact = status.to_string();
    let range = format!("{}XX", status / 100);
    responses
        .get(&exact)
        .or_else(|| responses.get(&range))
        .or_else(|| responses.get("default"))
        .map(|r| resolve_ref(spec, r))
}

/// Sends a request and checks the answer against the operation `(method, spec_path)`.
async fn check(app: &axum::Router, spec: &Value, method: &str, spec_path: &str, uri: &str) -> u16 {
    check_with(app, spec, method, spec_path, uri, &[], None).await
}

/// As [`check`], with request headers and a body.
async fn check_with(
    app: &axum::Router,
    spec: &Value,
    method: &str,
    spec_path: &str,
    uri: &str,
    request_headers: &[(&str, &str)],
    body: Option<&str>,
) -> u16 {
    let op = &spec["paths"][spec_path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {spec_path} is documented");
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    for (name, value) in request_headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let what = format!("{method} {uri} -> {status}");
    let doc =
        documented(spec, op, status).unwrap_or_else(|| panic!("{what}: status not documented"));
    let headers = response.headers().clone();
    for (name, header) in doc
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let header = resolve_ref(spec, header);
        if header.get("required") == Some(&Value::Bool(true)) {
            assert!(
                headers.contains_key(name.as_str()),
                "{what}: header {name} documented as required"
            );
        }
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let Some(content) = doc.get("content").and_then(Value::as_object) else {
        assert!(body.is_empty(), "{what}: body where none is documented");
        return status;
    };
    let content_type = headers
        .get("content-type")
        .map(|v| {
            v.to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim()
                .to_owned()
        })
        .unwrap_or_default();
    let media = content
        .get(&content_type)
        .or_else(|| {
            content
                .iter()
                .find(|(k, _)| {
                    k.ends_with("/*") && content_type.starts_with(k.trim_end_matches('*'))
                })
                .map(|(_, v)| v)
        })
        .unwrap_or_else(|| panic!("{what}: content type {content_type:?} not documented"));
    let compressed = headers.contains_key("content-encoding");
    if content_type.ends_with("json") && !compressed {
        let instance: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
        });
        let schema = media.get("schema").expect("a schema for JSON");
        validate(spec, schema, &instance, &what);
    }
    status
}

#[tokio::test]
async fn real_answers_match_the_spec() {
    let spec = spec();
    // sha256("test-admin-key"): an admin key for the cache route.
    let (app, _, _) = app_with_probe(settings(
        "[auth]\napi_keys = [{ name = \"ops\", sha256 = \"944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9\", roles = [\"admin\"] }]\n\
         [events]\nenabled = true\nsecret = \"events-secret-0123456789\"\n",
    ));
    let t = "/assets/{assetId}/thumbnails";
    let i = "/assets/{assetId}/thumbnails/{index}";
    let p = "/assets/{assetId}/poster";
    let l = "/local/{container}/{blob}";
    let cases: &[(&str, &str, u16)] = &[
        (t, "/assets/builtin-preset/thumbnails", 200),
        (t, "/assets/multi-rendition/thumbnails", 200),
        (t, "/assets/sprite-storyboard/thumbnails", 200),
        (t, "/assets/virtual-folders/thumbnails", 200),
        (t, "/assets/no-thumbnails/thumbnails", 200),
        (t, "/assets/ghost/thumbnails", 404),
        (t, "/assets/a..b/thumbnails", 400),
        (i, "/assets/multi-rendition/thumbnails/1?width=200", 302),
        (i, "/assets/multi-rendition/thumbnails/1?label=nope", 404),
        (i, "/assets/multi-rendition/thumbnails/0", 400),
        (i, "/assets/no-thumbnails/thumbnails/1", 404),
        (p, "/assets/sprite-storyboard/poster?time=PT3S", 302),
        (p, "/assets/sprite-storyboard/poster?time=never", 400),
        (p, "/assets/no-thumbnails/poster", 404),
        ("/healthz", "/healthz", 200),
        ("/readyz", "/readyz", 200),
        ("/openapi.yaml", "/openapi.yaml", 200),
        (l, "/local/builtin-preset/Thumbnail000001.jpg", 200),
        (l, "/local/sprite-storyboard/forest_sprite.vtt", 200),
        (
            l,
            "/local/virtual-folders/thumbnails/Thumbnail-harbour-000001.png",
            200,
        ),
        (l, "/local/builtin-preset/missing.jpg", 404),
        (l, "/local/builtin-preset/.hidden", 404),
    ];
    let mut covered = BTreeSet::new();
    for (spec_path, uri, expected) in cases {
        let status = check(&app, &spec, "GET", spec_path, uri).await;
        assert_eq!(status, *expected, "GET {uri}");
        covered.insert(("GET".to_owned(), spec_path.to_string()));
    }
    let sv = "/assets/{assetId}/storyboard.vtt";
    let sj = "/assets/{assetId}/storyboard.json";
    for (spec_path, uri, expected) in [
        (sv, "/assets/sprite-storyboard/storyboard.vtt", 200),
        (sv, "/assets/builtin-preset/storyboard.vtt", 404),
        (sj, "/assets/sprite-storyboard/storyboard.json", 200),
        (sj, "/assets/builtin-preset/storyboard.json", 404),
        (sj, "/assets/a..b/storyboard.json", 400),
        ("/metrics", "/metrics", 200),
        ("/", "/", 200),
        ("/demo/app.js", "/demo/app.js", 200),
        ("/demo/app.css", "/demo/app.css", 200),
    ] {
        assert_eq!(
            check(&app, &spec, "GET", spec_path, uri).await,
            expected,
            "GET {uri}"
        );
        covered.insert(("GET".to_owned(), spec_path.to_string()));
    }
    let c = "/assets/{assetId}/cache";
    let admin = [("x-api-key", "test-admin-key")];
    for (uri, headers, expected) in [
        ("/assets/builtin-preset/cache", &[][..], 401),
        (
            "/assets/builtin-preset/cache",
            &[("x-api-key", "wrong")][..],
            401,
        ),
        ("/assets/builtin-preset/cache", &admin[..], 204),
        ("/assets/a..b/cache", &admin[..], 400),
    ] {
        let status = check_with(&app, &spec, "DELETE", c, uri, headers, None).await;
        assert_eq!(status, expected, "DELETE {uri}");
    }
    covered.insert(("DELETE".to_owned(), c.to_owned()));
    // Generation: an admin route. Without ffmpeg there is no encoder, which is checked before
    // the body (so even a bad body answers 501 there). With it (installed by the test command)
    // the local source generates: only answers that write nothing are asked for here (the
    // ffmpeg tests generate into folders of their own, never into the samples).
    let g = "/assets/{assetId}/thumbnails:generate";
    let admin_json = [
        ("x-api-key", "test-admin-key"),
        ("content-type", "application/json"),
    ];
    let (no_ffmpeg, _, _) = app_with_probe(settings(
        "[auth]\napi_keys = [{ name = \"ops\", sha256 = \"944650a7cd0f9e14d5c4fb15edbffb7fa45fb9ed36a4fa9be3d7e5476ae51bd9\", roles = [\"admin\"] }]\n\
         [jobs]\nffmpeg_path = \"/nonexistent/ffmpeg\"\n",
    ));
    for (uri, headers, body, expected) in [
        (
            "/assets/builtin-preset/thumbnails:generate",
            &admin[..],
            None,
            501,
        ),
        (
            "/assets/builtin-preset/thumbnails:generate",
            &admin_json[..],
            Some(r#"{"step":"PT5S","spriteColumns":4}"#),
            501,
        ),
        (
            "/assets/builtin-preset/thumbnails:generate",
            &admin_json[..],
            Some(r#"{"nope":1}"#),
            501,
        ),
    ] {
        let status = check_with(&no_ffmpeg, &spec, "POST", g, uri, headers, body).await;
        assert_eq!(status, expected, "POST {uri} {body:?} without ffmpeg");
    }
    let j = "/jobs/{jobName}";
    let status = check_with(
        &no_ffmpeg,
        &spec,
        "GET",
        j,
        "/jobs/ams-thumbnails-0123abcd-0123456789ab.YQ",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 501, "GET a job without ffmpeg");
    for (uri, headers, body, expected) in [
        (
            "/assets/builtin-preset/thumbnails:generate",
            &[][..],
            None,
            401,
        ),
        (
            "/assets/builtin-preset/thumbnails:generate",
            &[("x-api-key", "wrong")][..],
            None,
            401,
        ),
        (
            "/assets/builtin-preset/thumbnails:generate",
            &admin_json[..],
            Some(r#"{"nope":1}"#),
            400,
        ),
        ("/assets/ghost/thumbnails:generate", &admin[..], None, 404),
        ("/assets/a..b/thumbnails:generate", &admin[..], None, 400),
    ] {
        let status = check_with(&app, &spec, "POST", g, uri, headers, body).await;
        assert_eq!(status, expected, "POST {uri} {body:?}");
    }
    covered.insert(("POST".to_owned(), g.to_owned()));
    for (uri, headers, expected) in [
        ("/jobs/ams-thumbnails-0123abcd-0123456789ab", &[][..], 401),
        (
            "/jobs/ams-thumbnails-0123abcd-0123456789ab",
            &admin[..],
            400,
        ),
        // Ours in shape, for an asset that does not exist (base64url of "ghost").
        (
            "/jobs/ams-thumbnails-0123abcd-0123456789ab.Z2hvc3Q",
            &admin[..],
            404,
        ),
        ("/jobs/not-one-of-ours", &admin[..], 400),
        ("/jobs/%FF", &admin[..], 400),
    ] {
        let status = check_with(&app, &spec, "GET", j, uri, headers, None).await;
        assert_eq!(status, expected, "GET {uri}");
    }
    covered.insert(("GET".to_owned(), j.to_owned()));
    for (uri, headers, expected) in [
        ("/jobs/ams-thumbnails-0123abcd-0123456789ab", &[][..], 401),
        (
            "/jobs/ams-thumbnails-0123abcd-0123456789ab",
            &admin[..],
            400,
        ),
        (
            "/jobs/ams-thumbnails-0123abcd-0123456789ab.Z2hvc3Q",
            &admin[..],
            404,
        ),
    ] {
        let status = check_with(&app, &spec, "DELETE", j, uri, headers, None).await;
        assert_eq!(status, expected, "DELETE {uri}");
    }
    let status = check_with(
        &no_ffmpeg,
        &spec,
        "DELETE",
        j,
        "/jobs/ams-thumbnails-0123abcd-0123456789ab.YQ",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 501, "DELETE a job without ffmpeg");
    covered.insert(("DELETE".to_owned(), j.to_owned()));
    let b = "/assets:batchGet";
    let json = [("content-type", "application/json")];
    for (body, expected) in [
        (
            r#"{"assetIds":["builtin-preset","ghost","a/b","sprite-storyboard"]}"#,
            200,
        ),
        (r#"{"assetIds":"x"}"#, 400),
        ("{", 400),
    ] {
        assert_eq!(
            check_with(&app, &spec, "POST", b, b, &json, Some(body)).await,
            expected,
            "{body}"
        );
    }
    let text = [("content-type", "text/plain")];
    assert_eq!(
        check_with(&app, &spec, "POST", b, b, &text, Some("{}")).await,
        415
    );
    let huge = format!(r#"{{"assetIds":["{}"]}}"#, "a".repeat(300 * 1024));
    assert_eq!(
        check_with(&app, &spec, "POST", b, b, &json, Some(&huge)).await,
        413
    );
    covered.insert(("POST".to_owned(), b.to_owned()));
    // Event Grid deliveries: the handshakes, a delivery, and the refusals.
    let e = "/events/storage";
    let coded = "/events/storage?code=events-secret-0123456789";
    let validation = include_str!("../fixtures/eventgrid/subscription-validation.eventgrid.json");
    let created = include_str!("../fixtures/eventgrid/blob-created.eventgrid.json");
    let cloud = include_str!("../fixtures/eventgrid/blob-deleted.cloudevents.json");
    let batch = [("content-type", "application/cloudevents-batch+json")];
    for (uri, headers, body, expected) in [
        (coded, &json[..], validation, 200),
        (coded, &json[..], created, 200),
        (coded, &batch[..], cloud, 200),
        (coded, &json[..], "[{\"eventType\":\"x\"}]", 400),
        (coded, &json[..], "not json", 400),
        (coded, &text[..], created, 415),
        (e, &json[..], created, 401),
        ("/events/storage?code=wrong", &json[..], created, 401),
    ] {
        let status = check_with(&app, &spec, "POST", e, uri, headers, Some(body)).await;
        assert_eq!(status, expected, "POST {uri} {body}");
    }
    let huge_events = format!("[{}]", "{},".repeat(100 * 1024));
    assert_eq!(
        check_with(&app, &spec, "POST", e, coded, &json, Some(&huge_events)).await,
        413
    );
    covered.insert(("POST".to_owned(), e.to_owned()));
    let origin = [("webhook-request-origin", "eventgrid.azure.net")];
    for (uri, expected) in [(coded, 200), (e, 401)] {
        let status = check_with(&app, &spec, "OPTIONS", e, uri, &origin, None).await;
        assert_eq!(status, expected, "OPTIONS {uri}");
    }
    covered.insert(("OPTIONS".to_owned(), e.to_owned()));
    // Conditional and compressed forms of the list.
    let etag = {
        let r = app
            .clone()
            .oneshot(
                Request::get("/assets/builtin-preset/thumbnails")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        r.headers()["etag"].to_str().unwrap().to_owned()
    };
    let inm = [("if-none-match", etag.as_str())];
    assert_eq!(
        check_with(
            &app,
            &spec,
            "GET",
            t,
            "/assets/builtin-preset/thumbnails",
            &inm,
            None
        )
        .await,
        304
    );
    let gz = [("accept-encoding", "gzip")];
    assert_eq!(
        check_with(
            &app,
            &spec,
            "GET",
            t,
            "/assets/builtin-preset/thumbnails",
            &gz,
            None
        )
        .await,
        200
    );

    let all = spec_operations(&spec);
    let uncovered: Vec<_> = all.difference(&covered).collect();
    assert!(
        uncovered.is_empty(),
        "operations without a conformance case: {uncovered:?}"
    );
}
