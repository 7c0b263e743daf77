//! Who may mint URLs: API keys per route group (hashed, several active), the admin role for
//! cache invalidation, rate limits per identity, hostile-input limits and security headers.

use crate::support;

use std::sync::atomic::Ordering;

use support::{TestServer, assert_problem, settings};

const FRONTEND_KEY: &str = "frontend-key-0123456789";
const NEXT_KEY: &str = "rotated-frontend-key-abcdef";
const OPERATOR_KEY: &str = "operator-key-9876543210";

pub(crate) fn sha256(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn keyed(extra: &str) -> ams_thumbnails::Settings {
    settings(&format!(
        "[auth]\napi = \"api-key\"\nops = \"api-key\"\napi_keys = [\n\
         {{ name = \"frontend\", sha256 = \"{}\", roles = [\"api\"] }},\n\
         {{ name = \"frontend-next\", sha256 = \"{}\", roles = [\"api\"] }},\n\
         {{ name = \"operator\", sha256 = \"{}\", roles = [\"admin\", \"ops\"] }},\n]\n{extra}",
        sha256(FRONTEND_KEY),
        sha256(NEXT_KEY),
        sha256(OPERATOR_KEY)
    ))
}

async fn get_with(
    server: &TestServer,
    path: &str,
    header: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = server.client.get(server.url(path));
    if let Some((k, v)) = header {
        request = request.header(k, v);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn api_keys_guard_the_asset_routes() {
    let logs = support::logs::capture();
    let server = TestServer::start(keyed("")).await;
    let path = "/assets/builtin-preset/thumbnails";

    let response = get_with(&server, path, None).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"ams-thumbnails\""
    );
    assert_problem(response, 401, "unauthorized").await;
    assert_problem(
        get_with(&server, path, Some(("x-api-key", "guess"))).await,
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(
        server.probe.calls(),
        0,
        "nothing reaches the backend without a key"
    );

    for header in [
        ("x-api-key", FRONTEND_KEY.to_owned()),
        ("authorization", format!("Bearer {FRONTEND_KEY}")),
        ("authorization", format!("bearer {NEXT_KEY}")),
    ] {
        let response = get_with(&server, path, Some((header.0, &header.1))).await;
        assert_eq!(response.status(), 200, "{}", header.0);
    }
    // A key without the role: 403.
    assert_problem(
        get_with(&server, "/metrics", Some(("x-api-key", FRONTEND_KEY))).await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        get_with(&server, "/metrics", Some(("x-api-key", OPERATOR_KEY)))
            .await
            .status(),
        200
    );
    assert_problem(
        get_with(&server, "/readyz", None).await,
        401,
        "unauthorized",
    )
    .await;

    // Public: liveness, the demo page, the spec, and the local files an <img> loads.
    for public in [
        "/healthz",
        "/",
        "/openapi.yaml",
        "/local/builtin-preset/Thumbnail000001.jpg",
    ] {
        assert_eq!(
            get_with(&server, public, None).await.status(),
            200,
            "{public}"
        );
    }
    let logs = logs.text();
    for key in [FRONTEND_KEY, NEXT_KEY, OPERATOR_KEY] {
        assert!(!logs.contains(key), "a key in the logs");
    }
    assert!(
        logs.contains("client=\"frontend\"") || logs.contains("client=frontend"),
        "the key's name is logged"
    );
}

#[tokio::test]
async fn cache_invalidation_needs_the_admin_role_even_when_the_api_is_open() {
    let server = TestServer::start(settings(&format!(
        "[auth]\napi_keys = [{{ name = \"operator\", sha256 = \"{}\", roles = [\"admin\"] }}]\n",
        sha256(OPERATOR_KEY)
    )))
    .await;
    assert_eq!(
        server
            .get("/assets/builtin-preset/thumbnails")
            .await
            .status(),
        200,
        "open API"
    );
    let url = server.url("/assets/builtin-preset/cache");
    let anonymous = server.client.delete(&url).send().await.unwrap();
    assert_problem(anonymous, 401, "unauthorized").await;
    let admin = server
        .client
        .delete(&url)
        .header("x-api-key", OPERATOR_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 204);
    assert_eq!(
        server
            .get("/assets/builtin-preset/thumbnails")
            .await
            .status(),
        200
    );
    assert_eq!(
        server.probe.locates.load(Ordering::SeqCst),
        2,
        "invalidated, loaded again"
    );
}

#[tokio::test]
async fn signed_urls_without_authentication_refuse_to_start_unless_waived() {
    let base = "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\nauth = \"account-key\"\naccount_key = \"c2VjcmV0\"\n[links]\nmode = \"account-key-sas\"\n";
    let err = ams_thumbnails::Settings::from_toml(base)
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.api"), "{err}");
    assert!(
        ams_thumbnails::Settings::from_toml(&format!(
            "{base}[auth]\nallow_anonymous_signed_urls = true\n"
        ))
        .is_ok()
    );
    let err = ams_thumbnails::Settings::from_toml("[auth]\napi = \"api-key\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auth.api"),
        "api-key mode needs a key with the api role: {err}"
    );
    let err = ams_thumbnails::Settings::from_toml(
        "[auth]\napi_keys = [{ name = \"x\", sha256 = \"plain-text-key\", roles = [\"api\"] }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("auth.api_keys[0].sha256"), "{err}");
}

#[tokio::test]
async fn rate_limits_apply_per_identity() {
    let server = TestServer::start(keyed(
        "[api]\nbatch_limit = 3\n[rate_limit]\nrequests_per_second = 1\nburst = 3\n",
    ))
    .await;
    let path = "/assets/builtin-preset/thumbnails";
    for _ in 0..3 {
        assert_eq!(
            get_with(&server, path, Some(("x-api-key", FRONTEND_KEY)))
                .await
                .status(),
            200
        );
    }
    let limited = get_with(&server, path, Some(("x-api-key", FRONTEND_KEY))).await;
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_problem(limited, 429, "rate-limited").await;
    // Another key has its own budget; liveness is never limited.
    assert_eq!(
        get_with(&server, path, Some(("x-api-key", NEXT_KEY)))
            .await
            .status(),
        200
    );
    for _ in 0..5 {
        assert_eq!(server.get("/healthz").await.status(), 200);
    }
}

#[tokio::test]
async fn hostile_sizes_are_refused_and_headers_are_safe() {
    let server = TestServer::start(settings("")).await;
    let long = format!("/assets/builtin-preset/thumbnails?x={}", "a".repeat(9000));
    assert_problem(server.get(&long).await, 414, "uri-too-long").await;
    let mut request = server.client.get(server.url("/healthz"));
    for i in 0..40 {
        request = request.header(format!("x-padding-{i}"), "p".repeat(1000));
    }
    assert_problem(request.send().await.unwrap(), 431, "headers-too-large").await;
    let response = server.get("/assets/builtin-preset/thumbnails").await;
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    // A hostile request id is replaced, not echoed into logs.
    let response = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "a\tb")
        .send()
        .await;
    if let Ok(r) = response {
        assert_ne!(r.headers()["x-request-id"], "a\tb");
    }
}

#[test]
fn secrets_can_come_from_files_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("account-key");
    std::fs::write(&key_file, "c2VjcmV0LWZyb20tZmlsZQ==\n").unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "file-secret-value\n").unwrap();
    let toml = format!(
        "[source]\nkind = \"storage\"\n[storage]\naccount = \"acct\"\nauth = \"account-key\"\naccount_key_file = {:?}\n\
         [links]\nmode = \"account-key-sas\"\n[auth]\nallow_anonymous_signed_urls = true\n\
         [credential]\nkind = \"client-secret\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_file = {:?}\n",
        key_file.display().to_string(),
        secret_file.display().to_string()
    );
    let settings = ams_thumbnails::Settings::from_toml(&toml).unwrap();
    assert_eq!(
        settings.storage.account_key.as_ref().unwrap().expose(),
        "c2VjcmV0LWZyb20tZmlsZQ==",
        "trimmed"
    );
    let shown = format!("{}{settings:?}", settings.to_redacted_toml());
    assert!(!shown.contains("c2VjcmV0LWZyb20tZmlsZQ==") && !shown.contains("file-secret-value"));
    // Both forms at once, or a missing file: refused, naming the key.
    let both = toml.replace(
        "account_key_file",
        "account_key = \"eA==\"\naccount_key_file",
    );
    let err = ams_thumbnails::Settings::from_toml(&both)
        .unwrap_err()
        .to_string();
    assert!(err.contains("storage.account_key_file"), "{err}");
    let missing = toml.replace(&secret_file.display().to_string(), "/nonexistent/secret");
    let err = ams_thumbnails::Settings::from_toml(&missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("credential.client_secret_file"), "{err}");
}

#[tokio::test]
async fn a_path_that_matches_no_route_is_404_for_everyone() {
    let server = TestServer::start(keyed("")).await;
    for path in [
        "/nowhere",
        "/assets",
        "/assets/x/unknown",
        "/jobs",
        "/local/x",
    ] {
        for header in [
            None,
            Some(("x-api-key", FRONTEND_KEY)),
            Some(("x-api-key", OPERATOR_KEY)),
        ] {
            assert_problem(
                get_with(&server, path, header).await,
                404,
                "route-not-found",
            )
            .await;
        }
    }
    // A route that exists still asks for its credential first.
    assert_problem(
        get_with(&server, "/assets/x/thumbnails", None).await,
        401,
        "unauthorized",
    )
    .await;
    // A method the route does not take: the route's access first, then 405.
    let response = server
        .client
        .post(server.url("/metrics"))
        .header("x-api-key", OPERATOR_KEY)
        .send()
        .await
        .unwrap();
    assert_problem(response, 405, "method-not-allowed").await;
}
