//! Proves the test fakes (tests/it/support/fake_entra.rs, tests/it/support/fake_arm.rs, and the
//! encoding half of fake_arm.rs / fake_mkio.rs in tests/it/support/fake_encoder.rs) behave like
//! the services they stand in for, so tests built on them test the service, not the fakes.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::azurite::Azurite;
use support::fake_arm::{self, ArmOp, FakeArm, FakeAsset};
use support::fake_encoder::{
    self, ImageKind, JobOutcome, OutputSink, PatternValues, WriteRefusal, expand_filename_pattern,
};
use support::fake_entra::{self, EntraFault, FakeEntra, TokenForm};
use support::fake_mkio::{self, FakeMkio, MkioOp};
use support::faults::RestFault;
use support::{seed, tls};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

const ARM: &str = "https://management.azure.com";
const STORAGE: &str = "https://storage.azure.com";

fn https_client() -> reqwest::Client {
    tls::client(tls::shared())
}

/// Serves a router over plain HTTP/1.1 with axum::serve (the fakes do not need TLS to work).
async fn serve_http(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn json_of(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn client_credentials(
    entra: &FakeEntra,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> reqwest::Response {
    https_client()
        .post(entra.token_url())
        .form(&[
            ("client_id", client_id),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token request")
}

async fn msi(
    entra: &FakeEntra,
    resource: &str,
    identity_header: Option<&str>,
) -> reqwest::Response {
    let mut request = https_client()
        .get(entra.msi_endpoint())
        .query(&[("api-version", "2019-08-01"), ("resource", resource)])
        .header("metadata", "true");
    if let Some(value) = identity_header {
        request = request.header("x-identity-header", value);
    }
    request.send().await.expect("msi request")
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

// ------------------------------------------------------------------------------------------
// Fake Entra ID
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn entra_client_credentials_issue_a_jwt_with_the_claims_azurite_and_arm_check() {
    let entra = FakeEntra::start_https(tls::shared()).await;
    let response = client_credentials(
        &entra,
        &entra.client_id(),
        &entra.client_secret(),
        "https://management.azure.com/.default",
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();

    // Header: HS256 JWT.
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));

    let claims = fake_entra::verify_jwt(token).expect("signed by the fake");
    let tenant = entra.tenant_id();
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{tenant}/"));
    assert_eq!(claims["aud"], ARM);
    assert_eq!(claims["tid"], tenant);
    assert_eq!(claims["oid"], entra.object_id());
    assert_eq!(claims["sub"], entra.object_id());
    assert_eq!(claims["appid"], entra.client_id());
    let (nbf, iat, exp) = (
        claims["nbf"].as_i64().unwrap(),
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    let t = now();
    assert!((t - 62..=t - 58).contains(&nbf), "nbf {nbf} vs now {t}");
    assert_eq!(iat, nbf);
    assert!((t + 3598..=t + 3601).contains(&exp), "exp {exp} vs now {t}");

    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 1);
    assert_eq!(entra.token_requests(TokenForm::ManagedIdentity), 0);
    assert_eq!(entra.access_tokens(), vec![token.to_owned()]);
    let issued = &entra.issued_tokens()[0];
    assert_eq!(issued.form, TokenForm::ClientCredentials);
    assert_eq!(issued.audience, ARM);
}

#[tokio::test]
async fn entra_normalizes_the_audience_and_rejects_scopes_without_default() {
    let entra = FakeEntra::start_https(tls::shared()).await;
    for (scope, aud) in [
        ("https://storage.azure.com/.default", STORAGE),
        ("https://management.azure.com//.default", ARM),
    ] {
        let response =
            client_credentials(&entra, &entra.client_id(), &entra.client_secret(), scope).await;
        let body = json_of(response).await;
        let claims = fake_entra::jwt_claims(body["access_token"].as_str().unwrap()).unwrap();
        assert_eq!(claims["aud"], aud, "{scope}");
    }
    let response = client_credentials(
        &entra,
        &entra.client_id(),
        &entra.client_secret(),
        "https://management.azure.com/",
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error"], "invalid_scope");
}

#[tokio::test]
async fn entra_wrong_secret_is_401_invalid_client_and_issues_nothing() {
    let entra = FakeEntra::new()
        .with_client("11111111-2222-4333-8444-555555555555", "right")
        .serve_https(tls::shared())
        .await;
    let response = client_credentials(&entra, &entra.client_id(), "wrong", "x/.default").await;
    assert_eq!(response.status(), 401);
    let body = json_of(response).await;
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"], json!([7000215]));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: ")
    );
    for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[key].is_string(), "{key} in {body}");
    }

    // Unknown client and unknown tenant are told apart too.
    let response = client_credentials(&entra, "someone-else", "right", "x/.default").await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error_codes"], json!([700016]));
    let response = https_client()
        .post(format!(
            "{}/other-tenant/oauth2/v2.0/token",
            entra.base_url()
        ))
        .form(&[("client_id", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error_codes"], json!([90002]));

    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 3);
    assert!(entra.issued_tokens().is_empty());
}

#[tokio::test]
async fn entra_managed_identity_app_service_form() {
    let entra = FakeEntra::new()
        .with_token_lifetime(Duration::from_secs(600))
        .serve_https(tls::shared())
        .await;
    let response = msi(
        &entra,
        "https://storage.azure.com/",
        Some(&entra.identity_header()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://storage.azure.com/");
    let expires_on: i64 = body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .expect("of unix seconds");
    assert!((now() + 598..=now() + 601).contains(&expires_on));
    let claims = fake_entra::verify_jwt(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], STORAGE);
    assert_eq!(claims["oid"], entra.managed_identity_object_id());
    assert_eq!(claims["appid"], entra.managed_identity_client_id());
    assert_eq!(claims["tid"], entra.tenant_id());

    let missing = msi(&entra, STORAGE, None).await;
    assert_eq!(missing.status(), 400);
    let wrong = msi(&entra, STORAGE, Some("nope")).await;
    assert_eq!(wrong.status(), 401);

    assert_eq!(entra.token_requests(TokenForm::ManagedIdentity), 3);
    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 0);
    assert_eq!(entra.issued_tokens().len(), 1);
    assert_eq!(entra.issued_tokens()[0].form, TokenForm::ManagedIdentity);
}

#[tokio::test]
async fn entra_faults_are_consumed_in_order() {
    let entra = FakeEntra::start_https(tls::shared()).await;
    entra.push_faults(EntraFault::Status(500), 2);
    entra.push_fault(EntraFault::Delay(Duration::from_millis(300)));
    assert_eq!(entra.pending_faults(), 3);

    let (id, secret) = (entra.client_id(), entra.client_secret());
    for _ in 0..2 {
        let response = client_credentials(&entra, &id, &secret, "x/.default").await;
        assert_eq!(response.status(), 500);
        assert!(json_of(response).await["error_codes"].is_array());
    }
    // The delay applies to the managed identity form as well: one queue for both.
    let started = Instant::now();
    let response = msi(&entra, ARM, Some(&entra.identity_header())).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), 200);
    let response = client_credentials(&entra, &id, &secret, "x/.default").await;
    assert_eq!(response.status(), 200);
    assert_eq!(entra.pending_faults(), 0);
    assert_eq!(entra.total_token_requests(), 4);
    assert_eq!(entra.issued_tokens().len(), 2);
}

/// The real SDK credential talks to the fake (custom authority host over the test CA), and its
/// token is accepted by the fake ARM.
#[tokio::test]
async fn entra_works_with_azure_identity_client_secret_credential() {
    use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
    use azure_core::credentials::{Secret, TokenCredential};
    use azure_core::http::{ClientOptions, Transport};
    use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};

    let pki = tls::shared();
    let entra = FakeEntra::new()
        .with_token_lifetime(Duration::from_secs(900))
        .serve_https(pki)
        .await;
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = entra.authority_host();
    let credential = ClientSecretCredential::new(
        &entra.tenant_id(),
        entra.client_id(),
        Secret::new(entra.client_secret()),
        Some(ClientSecretCredentialOptions {
            client_options: ClientOptions {
                cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
                transport: Some(Transport::new(Arc::new(tls::client(pki)))),
                ..Default::default()
            },
        }),
    )
    .unwrap();
    let token = credential
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .expect("token from the fake");
    let lifetime = token.expires_on - OffsetDateTime::now_utc();
    assert!(lifetime > time::Duration::seconds(890) && lifetime <= time::Duration::seconds(900));
    // Cached: a second call does not reach the fake.
    credential
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .unwrap();
    assert_eq!(entra.token_requests(TokenForm::ClientCredentials), 1);
    assert_eq!(entra.access_tokens(), vec![token.token.secret().to_owned()]);

    let arm = FakeArm::start_https(pki).await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    let response = https_client()
        .get(arm.asset_url("a"))
        .bearer_auth(token.token.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

// ------------------------------------------------------------------------------------------
// Fake ARM
// ------------------------------------------------------------------------------------------

/// A fake ARM over HTTPS and a valid ARM token for it.
async fn arm() -> (FakeArm, String) {
    let arm = FakeArm::start_https(tls::shared()).await;
    let token = FakeEntra::new().mint_token(ARM);
    (arm, token)
}

async fn arm_get(url: &str, token: &str) -> reqwest::Response {
    https_client()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("ARM request")
}

async fn arm_error_code(response: reqwest::Response) -> String {
    let body = json_of(response).await;
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"]
        .as_str()
        .expect("ARM error code")
        .to_owned()
}

async fn list_sas(arm: &FakeArm, token: &str, name: &str, body: Value) -> reqwest::Response {
    https_client()
        .post(arm.list_container_sas_url(name))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn in_hours(hours: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::hours(hours))
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn arm_get_has_the_shape_of_the_swagger_example() {
    let (arm, token) = arm().await;
    let id = Uuid::parse_str("1b648c1a-2268-461d-a1da-742bde23db40").unwrap();
    arm.add_asset(
        FakeAsset::new("ClimbingMountAdams", id)
            .alternate_id("CLIMB00002")
            .description("A documentary showing the ascent of Mount Adams"),
    );
    let response = arm_get(&arm.asset_url("ClimbingMountAdams"), &token).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-ms-request-id"));
    let mut body = json_of(response).await;

    // Same fields as the example; with the example's values put back for the generated times,
    // the example's asset gives back the example byte for byte.
    let example =
        fake_arm::load_example("assets-get-by-name.json")["responses"]["200"]["body"].clone();
    assert!(
        body["properties"]["created"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    for key in ["created", "lastModified"] {
        body["properties"][key] = example["properties"][key].clone();
    }
    assert_eq!(body, example);
    assert!(body["id"].as_str().unwrap().contains("/mediaservices/"));

    // Defaults: generated container, no storage account, no alternate id / description.
    let other = Uuid::new_v4();
    arm.add_asset(FakeAsset::new("plain", other));
    let body = json_of(arm_get(&arm.asset_url("plain"), &token).await).await;
    assert_eq!(body["properties"]["container"], format!("asset-{other}"));
    assert_eq!(body["properties"]["storageEncryptionFormat"], "None");
    assert_eq!(body["properties"]["assetId"], other.to_string());
    for absent in ["storageAccountName", "alternateId", "description"] {
        assert!(body["properties"].get(absent).is_none(), "{absent}");
    }
    assert_eq!(
        body["id"],
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaservices/{}/assets/plain",
            arm.subscription_id(),
            arm.resource_group(),
            arm.account()
        )
    );

    // And the optional ones when set; the asset's name is case-insensitive as in ARM.
    arm.add_asset(
        FakeAsset::new("stored", other)
            .container("testasset0")
            .storage_account_name("storage0")
            .storage_encryption_format("MediaStorageClientEncryption"),
    );
    let body = json_of(arm_get(&arm.asset_url("STORED"), &token).await).await;
    assert_eq!(body["name"], "stored");
    assert_eq!(body["properties"]["container"], "testasset0");
    assert_eq!(body["properties"]["storageAccountName"], "storage0");
    assert_eq!(
        body["properties"]["storageEncryptionFormat"],
        "MediaStorageClientEncryption"
    );
    assert_eq!(arm.hits(ArmOp::Get), 3);
}

#[tokio::test]
async fn arm_not_found_codes() {
    let (arm, token) = arm().await;
    let response = arm_get(&arm.asset_url("missing"), &token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm_error_code(response).await, "ResourceNotFound");

    let wrong_account = arm
        .asset_url("missing")
        .replace(&arm.account(), "otheraccount");
    let response = arm_get(&wrong_account, &token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm_error_code(response).await, "ParentResourceNotFound");

    let wrong_rg = arm.asset_url("x").replace(&arm.resource_group(), "otherrg");
    assert_eq!(
        arm_error_code(arm_get(&wrong_rg, &token).await).await,
        "ResourceGroupNotFound"
    );

    let response = arm_get(&format!("{}/nothing/here", arm.base_url()), &token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm.hits(ArmOp::Get), 3);
    assert_eq!(arm.total_hits(), 4);
}

#[tokio::test]
async fn arm_requires_an_arm_token_from_the_fake_entra() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    let url = arm.asset_url("a");

    let response = https_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(arm_error_code(response).await, "AuthenticationFailed");

    let entra = FakeEntra::new();
    let storage_token = entra.mint_token("https://storage.azure.com/.default");
    let response = arm_get(&url, &storage_token).await;
    assert_eq!(response.status(), 401);
    assert_eq!(arm_error_code(response).await, "InvalidAuthenticationToken");

    // Same claims, not signed by the fake: rejected.
    let mut forged = token.clone();
    forged.push('x');
    let response = arm_get(&url, &forged).await;
    assert_eq!(response.status(), 401);
    assert_eq!(arm_error_code(response).await, "InvalidAuthenticationToken");

    let mut claims = fake_entra::jwt_claims(&token).unwrap();
    claims["exp"] = json!(now() - 10);
    let expired = fake_entra::mint_jwt(&claims);
    let response = arm_get(&url, &expired).await;
    assert_eq!(response.status(), 401);
    assert_eq!(arm_error_code(response).await, "ExpiredAuthenticationToken");

    // A trailing slash on the audience is fine, as in ARM.
    let slash = FakeEntra::new().mint_token("https://management.azure.com/");
    assert_eq!(arm_get(&url, &slash).await.status(), 200);
}

#[tokio::test]
async fn arm_requires_api_version_2023_01_01() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    let url = arm.asset_url("a");
    let without = url.split('?').next().unwrap().to_owned();
    let response = arm_get(&without, &token).await;
    assert_eq!(response.status(), 400);
    assert_eq!(arm_error_code(response).await, "MissingApiVersionParameter");
    let response = arm_get(&url.replace("2023-01-01", "2018-07-01"), &token).await;
    assert_eq!(response.status(), 400);
    assert_eq!(arm_error_code(response).await, "InvalidApiVersionParameter");
}

#[tokio::test]
async fn arm_forbidden_switch_is_403_authorization_failed() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    arm.set_forbidden(true);
    let response = arm_get(&arm.asset_url("a"), &token).await;
    assert_eq!(response.status(), 403);
    let body = json_of(response).await;
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    let oid = fake_entra::jwt_claims(&token).unwrap()["oid"].clone();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(oid.as_str().unwrap())
    );
    arm.set_forbidden(false);
    assert_eq!(arm_get(&arm.asset_url("a"), &token).await.status(), 200);
}

#[tokio::test]
async fn arm_429_carries_retry_after_and_is_consumed() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    arm.push_fault(
        ArmOp::Get,
        RestFault::TooManyRequests {
            retry_after_secs: Some(7),
        },
    );
    let response = arm_get(&arm.asset_url("a"), &token).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(arm_error_code(response).await, "TooManyRequests");
    assert_eq!(arm.pending_faults(ArmOp::Get), 0);
    assert_eq!(arm_get(&arm.asset_url("a"), &token).await.status(), 200);
}

/// Adds `n` assets named `asset-00`..; returns them in name order.
fn add_assets(arm: &FakeArm, n: usize) -> Vec<FakeAsset> {
    (0..n)
        .map(|i| {
            let asset = FakeAsset::new(format!("asset-{i:02}"), Uuid::new_v4())
                .alternate_id(format!("ALT{i:02}"));
            arm.add_asset(asset.clone());
            asset
        })
        .collect()
}

/// Follows `@odata.nextLink` from `url`; returns the names on each page.
async fn list_pages(url: &str, token: &str, max_pages: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(url.to_owned());
    while let Some(url) = next.take() {
        assert!(pages.len() < max_pages, "more than {max_pages} pages");
        let response = arm_get(&url, token).await;
        assert_eq!(response.status(), 200, "{url}");
        let body = json_of(response).await;
        pages.push(
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["name"].as_str().unwrap().to_owned())
                .collect(),
        );
        next = body["@odata.nextLink"].as_str().map(str::to_owned);
    }
    pages
}

#[tokio::test]
async fn arm_list_pages_with_absolute_next_links() {
    let arm = FakeArm::new()
        .with_page_size(2)
        .serve_https(tls::shared())
        .await;
    let token = FakeEntra::new().mint_token(ARM);
    let assets = add_assets(&arm, 5);

    let first = json_of(arm_get(&arm.assets_url(), &token).await).await;
    let link = first["@odata.nextLink"].as_str().unwrap();
    assert!(link.starts_with(&format!("{}{}/assets?", arm.base_url(), arm.account_path())));
    assert!(link.contains("api-version=2023-01-01") && link.contains("$skiptoken="));
    // The list body is the example's, items shaped like the example's items.
    let example =
        fake_arm::load_example("assets-list-all.json")["responses"]["200"]["body"].clone();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&first["value"][0]), keys(&example["value"][0]));

    let pages = list_pages(&arm.assets_url(), &token, 10).await;
    let names = |r: std::ops::Range<usize>| -> Vec<String> {
        assets[r].iter().map(|a| a.name.clone()).collect()
    };
    assert_eq!(pages, vec![names(0..2), names(2..4), names(4..5)]);
    assert_eq!(arm.hits(ArmOp::List), 4);

    // $top limits the whole listing, across pages.
    let pages = list_pages(&format!("{}&$top=3", arm.assets_url()), &token, 10).await;
    assert_eq!(pages, vec![names(0..2), names(2..3)]);
}

#[tokio::test]
async fn arm_list_filters_by_alternate_id_and_asset_id() {
    let (arm, token) = arm().await;
    let assets = add_assets(&arm, 4);
    let target = &assets[2];
    let list = |filter: &str| {
        let url = reqwest::Url::parse_with_params(&arm.assets_url(), &[("$filter", filter)])
            .unwrap()
            .to_string();
        let token = token.clone();
        async move {
            let response = arm_get(&url, &token).await;
            (response.status().as_u16(), json_of(response).await)
        }
    };
    let id = target.asset_id;
    for filter in [
        "properties/alternateId eq 'ALT02'".to_owned(),
        format!("properties/assetId eq {id}"),
        format!("properties/assetId eq '{id}'"),
        format!("properties/assetId eq guid'{id}'"),
        "name eq 'asset-02'".to_owned(),
    ] {
        let (status, body) = list(&filter).await;
        assert_eq!(status, 200, "{filter}: {body}");
        let value = body["value"].as_array().unwrap();
        assert_eq!(value.len(), 1, "{filter}");
        assert_eq!(value[0]["name"], target.name);
        assert!(body.get("@odata.nextLink").is_none());
    }
    let (status, body) = list("properties/alternateId eq 'nope'").await;
    assert_eq!((status, body["value"].as_array().unwrap().len()), (200, 0));

    let (status, body) = list("properties/description eq 'x'").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadRequest");
}

#[tokio::test]
async fn arm_list_container_sas_uses_the_minter_and_caps_expiry_at_24_hours() {
    let (arm, token) = arm().await;
    let asset = FakeAsset::new("a", Uuid::new_v4()).storage_account_name("devstoreaccount1");
    arm.add_asset(asset.clone());
    let seen: Arc<Mutex<Vec<(String, String, OffsetDateTime)>>> = Arc::default();
    let record = seen.clone();
    arm.set_container_sas_minter(Box::new(move |asset, permissions, expiry| {
        record
            .lock()
            .unwrap()
            .push((asset.container_name(), permissions.to_owned(), expiry));
        vec![format!(
            "https://127.0.0.1:10000/devstoreaccount1/{}?sp=rl&sig=x",
            asset.container_name()
        )]
    }));

    let expiry = in_hours(1);
    let response = list_sas(
        &arm,
        &token,
        "a",
        json!({"permissions": "Read", "expiryTime": expiry}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(
        body,
        json!({"assetContainerSasUrls": [format!(
            "https://127.0.0.1:10000/devstoreaccount1/{}?sp=rl&sig=x",
            asset.container_name()
        )]})
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, asset.container_name());
        assert_eq!(seen[0].1, "Read");
        assert_eq!(seen[0].2, OffsetDateTime::parse(&expiry, &Rfc3339).unwrap());
    }

    for bad in [
        json!({"permissions": "Read", "expiryTime": in_hours(25)}),
        json!({"permissions": "Read", "expiryTime": in_hours(-1)}),
        json!({"permissions": "Write", "expiryTime": in_hours(1)}),
        json!({"permissions": "Read"}),
    ] {
        let response = list_sas(&arm, &token, "a", bad.clone()).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(arm_error_code(response).await, "BadRequest");
    }
    let response = list_sas(
        &arm,
        &token,
        "missing",
        json!({"permissions": "Read", "expiryTime": in_hours(1)}),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(arm.hits(ArmOp::ListContainerSas), 6);
}

#[tokio::test]
async fn arm_list_container_sas_without_a_minter_looks_like_the_example() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()).storage_account_name("storage0"));
    let body = json_of(
        list_sas(
            &arm,
            &token,
            "a",
            json!({"permissions": "ReadWrite", "expiryTime": in_hours(2)}),
        )
        .await,
    )
    .await;
    let urls = body["assetContainerSasUrls"].as_array().unwrap();
    assert_eq!(urls.len(), 2);
    for url in urls {
        let url = reqwest::Url::parse(url.as_str().unwrap()).unwrap();
        assert_eq!(url.host_str(), Some("storage0.blob.core.windows.net"));
        assert!(url.query_pairs().any(|(k, v)| k == "sp" && v == "lrw"));
    }
}

#[tokio::test]
async fn arm_fault_queues_are_per_operation_and_consumed_in_order() {
    let (arm, token) = arm().await;
    add_assets(&arm, 3);
    arm.push_faults(ArmOp::Get, RestFault::Status(503), 2);
    arm.push_fault(ArmOp::Get, RestFault::Delay(Duration::from_millis(300)));
    arm.push_fault(ArmOp::List, RestFault::MalformedJson);
    assert_eq!(arm.pending_faults(ArmOp::Get), 3);

    // List's fault does not touch Get and the other way round.
    let response = arm_get(&arm.assets_url(), &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.starts_with("{\"value\":["), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(arm.pending_faults(ArmOp::List), 0);

    let url = arm.asset_url("asset-00");
    for _ in 0..2 {
        let response = arm_get(&url, &token).await;
        assert_eq!(response.status(), 503);
        assert_eq!(arm_error_code(response).await, "ServiceUnavailable");
    }
    let started = Instant::now();
    assert_eq!(arm_get(&url, &token).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(arm_get(&url, &token).await.status(), 200);
    assert_eq!(arm.pending_faults(ArmOp::Get), 0);
    assert_eq!(arm.hits(ArmOp::Get), 4);
    assert_eq!(arm.hits(ArmOp::List), 1);
    assert_eq!(arm.total_hits(), 5);
}

#[tokio::test]
async fn arm_next_link_loop_points_at_the_same_page_forever() {
    let arm = FakeArm::new()
        .with_page_size(2)
        .serve_https(tls::shared())
        .await;
    let token = FakeEntra::new().mint_token(ARM);
    add_assets(&arm, 3);
    arm.push_fault(ArmOp::List, RestFault::NextLinkLoop);

    let first = json_of(arm_get(&arm.assets_url(), &token).await).await;
    let link = first["@odata.nextLink"].as_str().unwrap().to_owned();
    let mut url = link.clone();
    for _ in 0..5 {
        let page = json_of(arm_get(&url, &token).await).await;
        assert_eq!(page["value"], first["value"]);
        assert_eq!(page["@odata.nextLink"], link);
        url = link.clone();
    }
    assert_eq!(arm.pending_faults(ArmOp::List), 0);
    // A fresh listing without the fault ends normally.
    assert_eq!(list_pages(&arm.assets_url(), &token, 5).await.len(), 2);
}

#[tokio::test]
async fn arm_drop_connection_gives_no_response_over_tls_and_plain_http() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    arm.push_fault(ArmOp::Get, RestFault::DropConnection);
    let error = https_client()
        .get(arm.asset_url("a"))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("no response");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    assert_eq!(arm_get(&arm.asset_url("a"), &token).await.status(), 200);

    // Plain HTTP/1.1 via axum::serve: the socket is closed.
    let plain = FakeArm::new();
    plain.set_base_url(serve_http(plain.router()).await);
    plain.add_asset(FakeAsset::new("a", Uuid::new_v4()));
    plain.push_fault(ArmOp::Get, RestFault::DropConnection);
    let client = reqwest::Client::new();
    let error = client
        .get(plain.asset_url("a"))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("no response");
    assert!(!error.is_status(), "{error:?}");
    let response = client
        .get(plain.asset_url("a"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(plain.hits(ArmOp::Get), 2);
}

#[tokio::test]
async fn arm_counts_hits_and_records_the_last_authorization() {
    let (arm, token) = arm().await;
    add_assets(&arm, 2);
    assert!(arm.last_authorization().is_none());
    arm_get(&arm.asset_url("asset-00"), &token).await;
    arm_get(&arm.assets_url(), &token).await;
    list_sas(
        &arm,
        &token,
        "asset-01",
        json!({"permissions": "Read", "expiryTime": in_hours(1)}),
    )
    .await;
    assert_eq!(
        (
            arm.hits(ArmOp::Get),
            arm.hits(ArmOp::List),
            arm.hits(ArmOp::ListContainerSas),
            arm.total_hits()
        ),
        (1, 1, 1, 3)
    );
    let last = arm.last_authorization().unwrap();
    assert_eq!(last.operation, Some(ArmOp::ListContainerSas));
    assert_eq!(
        last.header.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(last.claims.unwrap()["aud"], ARM);

    https_client().get(arm.assets_url()).send().await.unwrap();
    let last = arm.last_authorization().unwrap();
    assert_eq!((last.operation, last.header), (Some(ArmOp::List), None));
}

#[tokio::test]
async fn arm_router_serves_over_plain_http_with_next_links_to_the_set_base() {
    let arm = FakeArm::new().with_page_size(1);
    let base = serve_http(arm.router()).await;
    arm.set_base_url(&base);
    add_assets(&arm, 2);
    let token = FakeEntra::new().mint_token(ARM);
    let client = reqwest::Client::new();
    let body: Value = client
        .get(arm.assets_url())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = body["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{base}/subscriptions/")),
        "{next}"
    );
    let body: Value = client
        .get(next)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["value"][0]["name"], "asset-01");
    assert!(body.get("@odata.nextLink").is_none());
}

// ------------------------------------------------------------------------------------------
// Encoding (tests/it/support/fake_encoder.rs): the shared rules
// ------------------------------------------------------------------------------------------

#[test]
fn encoder_filename_patterns_expand_the_swagger_macros_and_collapse_the_rest() {
    let values = PatternValues {
        basename: "ocean",
        label: "big",
        index: 7,
        extension: ".jpg",
        resolution: "640x360",
    };
    assert_eq!(
        expand_filename_pattern("{Basename}_{Label}_{Index}{Extension}", &values),
        "ocean_big_000007.jpg"
    );
    assert_eq!(
        expand_filename_pattern("Thumbnail-{Basename}-{Index}{Extension}", &values),
        "Thumbnail-ocean-000007.jpg"
    );
    // Unsubstituted macros collapse (swagger Format.filenamePattern), known ones in any case.
    assert_eq!(
        expand_filename_pattern(
            "{basename}-{Bitrate}{Codec}-{Resolution}{EXTENSION}",
            &values
        ),
        "ocean--640x360.jpg"
    );
    assert_eq!(
        fake_encoder::mkio_image_name("video", "Sprite", 1, ".jpg"),
        "video_Sprite000001.jpg"
    );
    assert_eq!(
        fake_encoder::mkio_vtt_name("video", "Sprite"),
        "video_Sprite.vtt"
    );
    let long = format!("{}.mp4", "x".repeat(80));
    assert_eq!(fake_encoder::video_basename(&long, 32).len(), 32);
    assert_eq!(fake_encoder::video_basename(&long, 64).len(), 64);
    assert_eq!(
        fake_encoder::video_basename("incoming/ocean_960x540_1500.mp4", 32),
        "ocean_960x540_1500"
    );
    assert!(fake_encoder::is_video("a/b.MP4") && !fake_encoder::is_video("ocean.ism"));
}

#[test]
fn encoder_times_follow_start_step_range_over_the_notional_duration() {
    use fake_encoder::{TimeSyntax, TimeValue, parse_time_value, thumbnail_times};
    let ams = |t: &str| parse_time_value(t, TimeSyntax::Ams { best: true }).unwrap();
    assert_eq!(
        fake_encoder::parse_iso8601_duration("PT1M30S"),
        Some(90_000)
    );
    assert_eq!(fake_encoder::parse_iso8601_duration("PT0.5S"), Some(500));
    assert_eq!(fake_encoder::parse_iso8601_duration("PT05S"), Some(5_000));
    assert_eq!(
        fake_encoder::parse_iso8601_duration("P1DT1H"),
        Some(90_000_000)
    );
    for bad in ["P", "PT", "PTS", "PT5", "5S", "PT5S5M"] {
        assert_eq!(fake_encoder::parse_iso8601_duration(bad), None, "{bad}");
    }
    assert_eq!(ams("10%"), TimeValue::Percent(10.0));
    assert_eq!(ams("{Best}"), TimeValue::Best);
    assert_eq!(ams("1"), TimeValue::Frames(1));
    assert!(parse_time_value("1", TimeSyntax::Mkio { one: false }).is_err());
    assert!(parse_time_value("soon", TimeSyntax::Ams { best: true }).is_err());

    let secs = |v: Vec<u64>| {
        v.into_iter()
            .map(|ms| ms as f64 / 1000.0)
            .collect::<Vec<_>>()
    };
    // PT5S every PT10S to the end of 60 s.
    assert_eq!(
        secs(thumbnail_times(
            ams("PT5S"),
            Some(ams("PT10S")),
            Some(ams("100%")),
            60
        )),
        [5.0, 15.0, 25.0, 35.0, 45.0, 55.0]
    );
    // 10% .. +90% every PT30S (MK.IO docs "multiple thumbnails"): 6 s and 36 s.
    assert_eq!(
        secs(thumbnail_times(
            ams("10%"),
            Some(ams("PT30S")),
            Some(ams("90%")),
            60
        )),
        [6.0, 36.0]
    );
    // No step, range "1", {Best}: one image.
    assert_eq!(thumbnail_times(ams("PT10S"), None, None, 60), [10_000]);
    assert_eq!(
        thumbnail_times(ams("PT10S"), Some(ams("PT1S")), Some(ams("1")), 60),
        [10_000]
    );
    assert_eq!(
        thumbnail_times(ams("{Best}"), Some(ams("25%")), Some(ams("80%")), 60),
        [0]
    );
    // Step 1% of 60 s over 100%: 100 images; PT0.1S would be 600, capped at 100.
    assert_eq!(
        thumbnail_times(ams("PT0S"), Some(ams("1%")), Some(ams("100%")), 60).len(),
        100
    );
    assert_eq!(
        thumbnail_times(ams("PT0S"), Some(ams("PT0.1S")), None, 60).len(),
        100
    );
    // A start past the end still gives one image.
    assert_eq!(
        thumbnail_times(ams("PT90S"), Some(ams("PT1S")), None, 60),
        [90_000]
    );
}

#[test]
fn encoder_job_runs_advance_one_step_per_get() {
    use fake_encoder::{Advance, JobRun, JobState};
    let mut run = JobRun::new(2, JobOutcome::Finish);
    assert_eq!((run.state, run.progress), (JobState::Queued, 0));
    assert_eq!(run.advance(), Advance::Done);
    assert_eq!((run.state, run.progress), (JobState::Processing, 50));
    assert!(run.start_time.is_some() && run.end_time.is_none());
    assert_eq!(run.advance(), Advance::Final(JobOutcome::Finish));
    run.finish();
    assert_eq!((run.state, run.progress), (JobState::Finished, 100));
    assert_eq!(run.advance(), Advance::Done);
    assert_eq!(run.state, JobState::Finished);

    let mut run = JobRun::new(4, JobOutcome::Finish);
    let mut seen = Vec::new();
    while run.advance() == Advance::Done {
        seen.push((run.state, run.progress));
    }
    assert_eq!(
        seen,
        [
            (JobState::Scheduled, 0),
            (JobState::Processing, 33),
            (JobState::Processing, 66)
        ]
    );
    let mut run = JobRun::new(
        1,
        JobOutcome::fail("ServiceError", "boom", "Service", "MayRetry"),
    );
    let Advance::Final(outcome) = run.advance() else {
        panic!("one step ends the run")
    };
    run.fail(&outcome);
    assert_eq!(run.state, JobState::Error);
    assert_eq!(run.failure.unwrap().code, "ServiceError");
}

// ------------------------------------------------------------------------------------------
// Encoding: helpers
// ------------------------------------------------------------------------------------------

async fn put_json(url: &str, token: &str, body: &Value) -> reqwest::Response {
    https_client()
        .put(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("PUT request")
}

fn sink_of(az: &Azurite) -> OutputSink {
    OutputSink {
        blob_endpoint: az.blob_endpoint.clone(),
    }
}

/// Every blob name in the container (under `prefix`), sorted.
async fn blob_names(az: &Azurite, container: &str, prefix: &str) -> Vec<String> {
    let mut names = sink_of(az)
        .list_blobs(container, prefix)
        .await
        .expect("List Blobs")
        .unwrap_or_default();
    names.sort();
    names
}

/// A blob's bytes and content type, read back through a SAS URL (seed helpers).
async fn read_blob(az: &Azurite, container: &str, name: &str) -> (String, Vec<u8>) {
    let response = reqwest::Client::new()
        .get(seed::blob_url_with_sas(az, container, name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{container}/{name}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.bytes().await.unwrap().to_vec())
}

fn sample(kind: ImageKind) -> Vec<u8> {
    std::fs::read(kind.sample_path()).unwrap()
}

/// Drops time-dependent values so that an answer compares with its example.
fn without_times(mut v: Value) -> Value {
    for key in ["created", "lastModified"] {
        if v["properties"].get(key).is_some() {
            v["properties"][key] = json!("T");
        }
    }
    if let Some(data) = v.get_mut("systemData").and_then(Value::as_object_mut) {
        for key in ["createdAt", "lastModifiedAt"] {
            data.insert(key.into(), json!("T"));
        }
    }
    v
}

/// A StandardEncoderPreset with three thumbnail codecs: six JPEGs (PT5S every PT10S), one PNG
/// ({Best}) and a 5-column JPEG sprite (every 10%, 160x90 tiles, label "sprite").
fn ams_thumbnail_transform() -> Value {
    json!({ "properties": {
        "description": "thumbnails",
        "outputs": [{ "preset": {
            "@odata.type": "#Microsoft.Media.StandardEncoderPreset",
            "codecs": [
                { "@odata.type": "#Microsoft.Media.JpgImage", "start": "PT5S", "step": "PT10S",
                  "range": "100%", "layers": [{ "width": "640", "height": "360", "quality": 80 }] },
                { "@odata.type": "#Microsoft.Media.PngImage", "start": "{Best}", "step": "25%",
                  "range": "80%", "layers": [{ "width": "50%", "height": "50%" }] },
                { "@odata.type": "#Microsoft.Media.JpgImage", "label": "sprite", "start": "PT0S",
                  "step": "10%", "range": "100%", "spriteColumn": 5,
                  "layers": [{ "width": "160", "height": "90" }] }
            ],
            "formats": [
                { "@odata.type": "#Microsoft.Media.JpgFormat",
                  "filenamePattern": "{Basename}_{Label}{Index}{Extension}" },
                { "@odata.type": "#Microsoft.Media.PngFormat",
                  "filenamePattern": "Thumbnail-{Basename}-{Index}{Extension}" }
            ]
        }}]
    }})
}

fn job_body(input: &str, output: &str) -> Value {
    json!({ "properties": {
        "input": { "@odata.type": "#Microsoft.Media.JobInputAsset", "assetName": input },
        "outputs": [{ "@odata.type": "#Microsoft.Media.JobOutputAsset", "assetName": output }],
        "correlationData": { "request": "r-1" }
    }})
}

// ------------------------------------------------------------------------------------------
// Encoding: fake ARM
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn arm_transform_put_is_201_then_200_shaped_like_the_example() {
    let (arm, token) = arm().await;
    let example = fake_arm::load_example("transforms-create.json");
    let request = &example["parameters"]["parameters"];
    let name = example["parameters"]["transformName"].as_str().unwrap();

    let response = put_json(&arm.transform_url(name), &token, request).await;
    assert_eq!(response.status(), 201);
    let body = json_of(response).await;
    let mut expected = example["responses"]["201"]["body"].clone();
    expected["id"] = json!(format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaservices/{}/transforms/{name}",
        arm.subscription_id(),
        arm.resource_group(),
        arm.account()
    ));
    assert_eq!(without_times(body.clone()), without_times(expected.clone()));
    assert!(
        body["properties"]["created"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(arm.transform(name).unwrap(), request["properties"]);

    let response = put_json(&arm.transform_url(name), &token, request).await;
    assert_eq!(response.status(), 200);
    let again = json_of(response).await;
    assert_eq!(without_times(again.clone()), without_times(expected));
    assert_eq!(
        again["properties"]["created"],
        body["properties"]["created"]
    );

    // The docs' thumbnail transform (PngImage + PngFormat, with an Mp4Format beside it) is
    // stored as sent, the outputs' defaults filled in the answer.
    let docs = fake_arm::load_example("docs-transform-generate-thumbnails-rest.json");
    let response = put_json(&arm.transform_url("thumbs"), &token, &docs).await;
    assert_eq!(response.status(), 201);
    let body = json_of(response).await;
    assert_eq!(
        body["properties"]["outputs"][0]["preset"],
        docs["properties"]["outputs"][0]["preset"]
    );
    assert_eq!(arm.transform("THUMBS").unwrap(), docs["properties"]);
    let response = put_json(&arm.transform_url("t2"), &token, &ams_thumbnail_transform()).await;
    assert_eq!(response.status(), 201);
    let body = json_of(response).await;
    assert_eq!(
        body["properties"]["outputs"][0]["onError"],
        "StopProcessingJob"
    );
    assert_eq!(
        body["properties"]["outputs"][0]["relativePriority"],
        "Normal"
    );
    assert_eq!(arm.hits(ArmOp::PutTransform), 4);
}

#[tokio::test]
async fn arm_transform_put_rejects_bad_presets_naming_the_field() {
    let (arm, token) = arm().await;
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|t| {
                t["properties"]["outputs"][0]["preset"]["codecs"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("start");
            }),
            "codecs[0].start",
        ),
        (
            Box::new(|t| {
                t["properties"]["outputs"][0]["preset"]["codecs"][1]["step"] = json!("soon")
            }),
            "codecs[1].step",
        ),
        (
            Box::new(|t| {
                t["properties"]["outputs"][0]["preset"]["codecs"][0]["@odata.type"] =
                    json!("#Microsoft.Media.H264Video")
            }),
            "codecs[0].@odata.type",
        ),
        (
            Box::new(|t| {
                t["properties"]["outputs"][0]["preset"]["codecs"][1]["spriteColumn"] = json!(4)
            }),
            "codecs[1].spriteColumn",
        ),
        (
            Box::new(|t| {
                t["properties"]["outputs"][0]["preset"]["codecs"][0]["layers"][0]["quality"] =
                    json!(101)
            }),
            "layers[0].quality",
        ),
        (
            Box::new(|t| {
                t["properties"]["outputs"][0]["preset"]["formats"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("filenamePattern");
            }),
            "formats[1].filenamePattern",
        ),
        (
            Box::new(|t| {
                t["properties"]["outputs"][0]["preset"]["formats"]
                    .as_array_mut()
                    .unwrap()
                    .remove(1);
            }),
            "formats has no #Microsoft.Media.PngFormat",
        ),
        (
            Box::new(|t| t["properties"]["outputs"][0]["preset"]["@odata.type"] = json!("#Nope")),
            "preset.@odata.type",
        ),
        (
            Box::new(|t| t["properties"]["outputs"] = json!([])),
            "properties.outputs",
        ),
    ];
    for (mutate, field) in cases {
        let mut body = ams_thumbnail_transform();
        mutate(&mut body);
        let response = put_json(&arm.transform_url("bad"), &token, &body).await;
        assert_eq!(response.status(), 400, "{field}");
        let error = json_of(response).await;
        assert_eq!(error["error"]["code"], "BadRequest", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{field}: {message}");
    }
    assert!(arm.transform("bad").is_none());

    // Not JSON, wrong api-version (assets' one), no token.
    let response = https_client()
        .put(arm.transform_url("bad"))
        .bearer_auth(&token)
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(arm_error_code(response).await, "InvalidRequestContent");
    let url = arm.transform_url("x").replace("2022-07-01", "2023-01-01");
    let response = put_json(&url, &token, &ams_thumbnail_transform()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(arm_error_code(response).await, "InvalidApiVersionParameter");
    let response = https_client()
        .put(arm.transform_url("x"))
        .json(&ams_thumbnail_transform())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(arm.transform("x").is_none());
}

#[tokio::test]
async fn arm_asset_put_creates_an_asset_that_assets_get_returns() {
    let (arm, token) = arm().await;
    let example = fake_arm::load_example("assets-create.json");
    let name = example["parameters"]["assetName"].as_str().unwrap();
    let request = &example["parameters"]["parameters"];

    let response = put_json(&arm.asset_url(name), &token, request).await;
    assert_eq!(response.status(), 201);
    let created = json_of(response).await;
    let asset = arm.asset(name).expect("the PUT asset is stored");
    // The example's answer, with our scope, the new assetId and its generated container.
    let mut expected = example["responses"]["201"]["body"].clone();
    expected["id"] = json!(format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaservices/{}/assets/{name}",
        arm.subscription_id(),
        arm.resource_group(),
        arm.account()
    ));
    expected["properties"]["assetId"] = json!(asset.asset_id);
    expected["properties"]["container"] = json!(format!("asset-{}", asset.asset_id));
    assert_eq!(without_times(created.clone()), without_times(expected));
    assert_eq!(asset.storage_account_name.as_deref(), Some("storage0"));

    // Assets - Get and List ($filter) serve it like any other.
    let got = json_of(arm_get(&arm.asset_url(name), &token).await).await;
    assert_eq!(got["properties"], created["properties"]);
    let filter = format!(
        "{}&$filter={}",
        arm.assets_url(),
        utf8_percent_encode_all(&format!("name eq '{name}'"))
    );
    let listed = json_of(arm_get(&filter, &token).await).await;
    assert_eq!(
        listed["value"][0]["properties"]["assetId"],
        json!(asset.asset_id)
    );

    // Update: 200, same asset id and container; a given container and no storage account.
    let response = put_json(
        &arm.asset_url(name),
        &token,
        &json!({ "properties": { "description": "changed", "container": "elsewhere" } }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let updated = json_of(response).await;
    assert_eq!(updated["properties"]["assetId"], json!(asset.asset_id));
    assert_eq!(
        updated["properties"]["container"],
        created["properties"]["container"]
    );
    assert_eq!(updated["properties"]["description"], "changed");
    let response = put_json(
        &arm.asset_url("out"),
        &token,
        &json!({ "properties": { "container": "thumbs-out" } }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let out = json_of(response).await;
    assert_eq!(out["properties"]["container"], "thumbs-out");
    assert!(out["properties"].get("storageAccountName").is_none());

    // Assets keep api-version 2023-01-01.
    let url = arm.asset_url("x").replace("2023-01-01", "2022-07-01");
    let response = put_json(&url, &token, &json!({ "properties": {} })).await;
    assert_eq!(arm_error_code(response).await, "InvalidApiVersionParameter");
    assert!(arm.asset("x").is_none());
    assert_eq!(arm.hits(ArmOp::PutAsset), 4);
}

fn utf8_percent_encode_all(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A fake ARM writing into a fresh Azurite, with an input asset holding `files` and an empty
/// output asset, both created through Assets - CreateOrUpdate; the thumbnail transform "thumbs".
async fn arm_with_assets(files: &[&str]) -> (FakeArm, String, Azurite, String, String) {
    let (arm, token) = arm().await;
    let az = Azurite::start_http().await;
    arm.set_output_sink(sink_of(&az));
    for name in ["input", "output"] {
        let response = put_json(&arm.asset_url(name), &token, &json!({ "properties": {} })).await;
        assert_eq!(response.status(), 201);
    }
    let input = arm.asset("input").unwrap().container_name();
    let output = arm.asset("output").unwrap().container_name();
    // Creating the assets created their containers.
    assert_eq!(blob_names(&az, &output, "").await, Vec::<String>::new());
    let client = reqwest::Client::new();
    for file in files {
        seed::put_blob(
            &client,
            &az,
            &input,
            file,
            b"not really a video",
            "video/mp4",
        )
        .await;
    }
    let response = put_json(
        &arm.transform_url("thumbs"),
        &token,
        &ams_thumbnail_transform(),
    )
    .await;
    assert_eq!(response.status(), 201);
    (arm, token, az, input, output)
}

#[tokio::test]
async fn arm_job_runs_to_finished_and_writes_the_thumbnails_into_azurite() {
    let (arm, token, az, _input, output) =
        arm_with_assets(&["ocean.ism", "ocean_960x540_1500.mp4", "zz-notes.txt"]).await;

    let response = put_json(
        &arm.job_url("thumbs", "job1"),
        &token,
        &job_body("input", "output"),
    )
    .await;
    assert_eq!(response.status(), 201);
    let created = json_of(response).await;
    // jobs-create.json's answer: same fields, Queued, the input's defaults, label
    // {presetName}_{index}, correlationData echoed.
    let example = fake_arm::load_example("jobs-create.json")["responses"]["201"]["body"].clone();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&created), keys(&example));
    assert_eq!(keys(&created["properties"]), keys(&example["properties"]));
    assert_eq!(
        keys(&created["properties"]["outputs"][0]),
        keys(&example["properties"]["outputs"][0])
    );
    assert_eq!(
        keys(&created["properties"]["input"]),
        keys(&example["properties"]["input"])
    );
    assert_eq!(created["type"], example["type"]);
    assert_eq!(
        created["id"],
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaservices/{}/transforms/thumbs/jobs/job1",
            arm.subscription_id(),
            arm.resource_group(),
            arm.account()
        )
    );
    assert_eq!(created["properties"]["state"], "Queued");
    assert_eq!(created["properties"]["priority"], "Normal");
    assert_eq!(
        created["properties"]["correlationData"],
        json!({ "request": "r-1" })
    );
    let out = &created["properties"]["outputs"][0];
    assert_eq!(out["state"], "Queued");
    assert_eq!(out["progress"], 0);
    assert_eq!(out["label"], "StandardEncoderPreset_0");
    assert_eq!(out["assetName"], "output");
    assert_eq!(out["@odata.type"], "#Microsoft.Media.JobOutputAsset");
    // job() shows it without advancing.
    assert_eq!(
        arm.job("thumbs", "job1").unwrap()["properties"]["state"],
        "Queued"
    );
    assert_eq!(
        arm.job("thumbs", "job1").unwrap()["properties"]["state"],
        "Queued"
    );

    let first = json_of(arm_get(&arm.job_url("thumbs", "job1"), &token).await).await;
    assert_eq!(first["properties"]["state"], "Processing");
    assert_eq!(first["properties"]["outputs"][0]["state"], "Processing");
    assert_eq!(first["properties"]["outputs"][0]["progress"], 50);
    assert!(first["properties"]["startTime"].is_string());
    assert!(first["properties"].get("endTime").is_none());
    assert!(
        blob_names(&az, &output, "").await.is_empty(),
        "nothing written yet"
    );

    let done = json_of(arm_get(&arm.job_url("thumbs", "job1"), &token).await).await;
    assert_eq!(done["properties"]["state"], "Finished", "{done}");
    assert_eq!(done["properties"]["outputs"][0]["state"], "Finished");
    assert_eq!(done["properties"]["outputs"][0]["progress"], 100);
    assert!(done["properties"]["endTime"].is_string());
    assert!(done["properties"]["outputs"][0]["endTime"].is_string());
    assert!(done["properties"]["outputs"][0].get("error").is_none());

    let mut expected: Vec<String> = (1..=6)
        .map(|i| format!("ocean_960x540_1500_{i:06}.jpg"))
        .collect();
    expected.push("Thumbnail-ocean_960x540_1500-000001.png".into());
    expected.push("ocean_960x540_1500_sprite000001.jpg".into());
    expected.push("ocean_960x540_1500_sprite000001.vtt".into());
    expected.sort();
    assert_eq!(blob_names(&az, &output, "").await, expected);
    let (content_type, bytes) = read_blob(&az, &output, "ocean_960x540_1500_000006.jpg").await;
    assert_eq!(
        (content_type.as_str(), bytes),
        ("image/jpeg", sample(ImageKind::Jpeg))
    );
    let (content_type, bytes) =
        read_blob(&az, &output, "Thumbnail-ocean_960x540_1500-000001.png").await;
    assert_eq!(
        (content_type.as_str(), bytes),
        ("image/png", sample(ImageKind::Png))
    );
    let (content_type, bytes) =
        read_blob(&az, &output, "ocean_960x540_1500_sprite000001.jpg").await;
    assert_eq!(
        (content_type.as_str(), bytes),
        ("image/jpeg", sample(ImageKind::Jpeg))
    );
    let (content_type, vtt) = read_blob(&az, &output, "ocean_960x540_1500_sprite000001.vtt").await;
    assert_eq!(content_type, "text/vtt");
    let vtt = String::from_utf8(vtt).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:06.000\nocean_960x540_1500_sprite000001.jpg#xywh=0,0,160,90\n"), "{vtt}");
    assert!(
        vtt.contains(
            "00:00:30.000 --> 00:00:36.000\nocean_960x540_1500_sprite000001.jpg#xywh=0,90,160,90\n"
        ),
        "{vtt}"
    );
    assert!(vtt.ends_with("00:00:54.000 --> 00:01:00.000\nocean_960x540_1500_sprite000001.jpg#xywh=640,90,160,90\n"), "{vtt}");
    assert_eq!(vtt.matches("#xywh=").count(), 10);

    // Final states stay; a PUT on the same name is 200 with the job unchanged: no new run.
    let again = json_of(arm_get(&arm.job_url("thumbs", "job1"), &token).await).await;
    assert_eq!(again["properties"]["state"], "Finished");
    let response = put_json(
        &arm.job_url("thumbs", "JOB1"),
        &token,
        &job_body("input", "output"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let unchanged = json_of(response).await;
    assert_eq!(unchanged["properties"]["state"], "Finished");
    assert_eq!(
        unchanged["properties"]["created"],
        created["properties"]["created"]
    );
    assert_eq!(
        arm.job("thumbs", "job1").unwrap()["properties"]["state"],
        "Finished"
    );
    assert_eq!(blob_names(&az, &output, "").await.len(), 9);
    assert_eq!((arm.hits(ArmOp::PutJob), arm.hits(ArmOp::GetJob)), (2, 3));
}

#[tokio::test]
async fn arm_job_failures_report_error_with_the_job_error_fields() {
    let (arm, token, az, input, output) = arm_with_assets(&["readme.txt"]).await;

    // A configured failure, after more steps: Scheduled, Processing 33, 66, then Error.
    arm.set_job_steps(4);
    arm.set_next_job_outcome(JobOutcome::fail(
        "ServiceError",
        "The encoder crashed.",
        "Service",
        "MayRetry",
    ));
    let response = put_json(
        &arm.job_url("thumbs", "failing"),
        &token,
        &job_body("input", "output"),
    )
    .await;
    assert_eq!(response.status(), 201);
    let mut states = Vec::new();
    for _ in 0..4 {
        let job = json_of(arm_get(&arm.job_url("thumbs", "failing"), &token).await).await;
        states.push((
            job["properties"]["state"].as_str().unwrap().to_owned(),
            job["properties"]["outputs"][0]["progress"]
                .as_u64()
                .unwrap(),
        ));
    }
    assert_eq!(
        states,
        [
            ("Scheduled".to_owned(), 0),
            ("Processing".to_owned(), 33),
            ("Processing".to_owned(), 66),
            ("Error".to_owned(), 66)
        ]
    );
    let job = arm.job("thumbs", "failing").unwrap();
    let out = &job["properties"]["outputs"][0];
    assert_eq!(out["state"], "Error");
    assert_eq!(
        out["error"],
        json!({ "code": "ServiceError", "message": "The encoder crashed.", "category": "Service",
                "retry": "MayRetry", "details": [] })
    );
    assert!(job["properties"]["endTime"].is_string());
    assert!(blob_names(&az, &output, "").await.is_empty());

    // The outcome is back to Finish, but the input asset has no video: ContentMalformed.
    arm.set_job_steps(1);
    put_json(
        &arm.job_url("thumbs", "novideo"),
        &token,
        &job_body("input", "output"),
    )
    .await;
    let job = json_of(arm_get(&arm.job_url("thumbs", "novideo"), &token).await).await;
    assert_eq!(job["properties"]["state"], "Error", "{job}");
    let error = &job["properties"]["outputs"][0]["error"];
    assert_eq!(error["code"], "ContentMalformed");
    assert_eq!(error["category"], "Content");
    assert_eq!(error["retry"], "DoNotRetry");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("No video file was found") && message.contains(&input),
        "{message}"
    );
    assert!(blob_names(&az, &output, "").await.is_empty());

    // Outcome Fail beats a present video; a built-in preset cannot be encoded by the fake.
    seed::put_blob(
        &reqwest::Client::new(),
        &az,
        &input,
        "clip.mov",
        b"x",
        "video/quicktime",
    )
    .await;
    let example = fake_arm::load_example("transforms-create.json");
    put_json(
        &arm.transform_url("builtin"),
        &token,
        &example["parameters"]["parameters"],
    )
    .await;
    put_json(
        &arm.job_url("builtin", "b"),
        &token,
        &job_body("input", "output"),
    )
    .await;
    let job = json_of(arm_get(&arm.job_url("builtin", "b"), &token).await).await;
    assert_eq!(
        job["properties"]["outputs"][0]["error"]["code"],
        "ConfigurationUnsupported"
    );
    assert_eq!(
        job["properties"]["outputs"][0]["label"],
        "BuiltInStandardEncoderPreset_0"
    );
}

#[tokio::test]
async fn arm_job_put_and_get_errors() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("in", Uuid::new_v4()));
    let response = put_json(&arm.job_url("nope", "j"), &token, &job_body("in", "in")).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm_error_code(response).await, "ResourceNotFound");
    put_json(&arm.transform_url("t"), &token, &ams_thumbnail_transform()).await;

    let response = put_json(&arm.job_url("t", "j"), &token, &job_body("missing", "in")).await;
    assert_eq!(response.status(), 400);
    let body = json_of(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input asset 'missing'"),
        "{body}"
    );
    let response = put_json(&arm.job_url("t", "j"), &token, &job_body("in", "out")).await;
    assert_eq!(response.status(), 400);
    let body = json_of(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output asset 'out'"),
        "{body}"
    );
    let mut http_input = job_body("in", "in");
    http_input["properties"]["input"]["@odata.type"] = json!("#Microsoft.Media.JobInputHttp");
    let response = put_json(&arm.job_url("t", "j"), &token, &http_input).await;
    assert_eq!(response.status(), 400);
    assert!(arm.job("t", "j").is_none());

    let response = arm_get(&arm.job_url("t", "j"), &token).await;
    assert_eq!(response.status(), 404);
    assert_eq!(arm_error_code(response).await, "ResourceNotFound");
    let url = arm.job_url("t", "j").replace("2022-07-01", "2023-01-01");
    assert_eq!(
        arm_error_code(arm_get(&url, &token).await).await,
        "InvalidApiVersionParameter"
    );

    // Faults apply to the new operations: a fault does not create or advance a job.
    arm.push_fault(ArmOp::PutJob, RestFault::Status(503));
    let response = put_json(&arm.job_url("t", "j"), &token, &job_body("in", "in")).await;
    assert_eq!(response.status(), 503);
    assert!(arm.job("t", "j").is_none());
    let response = put_json(&arm.job_url("t", "j"), &token, &job_body("in", "in")).await;
    assert_eq!(response.status(), 201);
    arm.push_fault(
        ArmOp::GetJob,
        RestFault::TooManyRequests {
            retry_after_secs: Some(3),
        },
    );
    let response = arm_get(&arm.job_url("t", "j"), &token).await;
    assert_eq!(response.status(), 429);
    assert_eq!(arm.job("t", "j").unwrap()["properties"]["state"], "Queued");
    arm.push_fault(ArmOp::GetJob, RestFault::MalformedJson);
    let response = arm_get(&arm.job_url("t", "j"), &token).await;
    assert!(serde_json::from_str::<Value>(&response.text().await.unwrap()).is_err());
    assert_eq!(arm.hits(ArmOp::GetJob), 4);
}

#[tokio::test]
async fn arm_refused_writes_answer_the_configured_error_and_change_nothing() {
    let (arm, token) = arm().await;
    arm.add_asset(FakeAsset::new("in", Uuid::new_v4()));
    put_json(&arm.transform_url("t"), &token, &ams_thumbnail_transform()).await;
    arm.set_writes_refused(Some(WriteRefusal {
        status: 403,
        code: "AuthorizationFailed".into(),
        message: "The account is retired.".into(),
    }));
    for (url, body) in [
        (arm.transform_url("t2"), ams_thumbnail_transform()),
        (arm.asset_url("new"), json!({ "properties": {} })),
        (arm.job_url("t", "j"), job_body("in", "in")),
    ] {
        let response = put_json(&url, &token, &body).await;
        assert_eq!(response.status(), 403, "{url}");
        assert_eq!(
            json_of(response).await,
            json!({ "error": { "code": "AuthorizationFailed", "message": "The account is retired." } })
        );
    }
    assert!(
        arm.transform("t2").is_none() && arm.asset("new").is_none() && arm.job("t", "j").is_none()
    );
    // Reads keep working; writes come back when the refusal is lifted.
    assert_eq!(arm_get(&arm.asset_url("in"), &token).await.status(), 200);
    assert_eq!(arm_get(&arm.job_url("t", "j"), &token).await.status(), 404);
    arm.set_writes_refused(None);
    let response = put_json(&arm.job_url("t", "j"), &token, &job_body("in", "in")).await;
    assert_eq!(response.status(), 201);
}

// ------------------------------------------------------------------------------------------
// Encoding: fake MK.IO
// ------------------------------------------------------------------------------------------

async fn mkio() -> FakeMkio {
    FakeMkio::start_https(tls::shared()).await
}

async fn mkio_get(mkio: &FakeMkio, url: &str) -> reqwest::Response {
    https_client()
        .get(url)
        .bearer_auth(mkio.token())
        .send()
        .await
        .unwrap()
}

async fn mkio_put(mkio: &FakeMkio, url: &str, body: &Value) -> reqwest::Response {
    put_json(url, &mkio.token(), body).await
}

#[tokio::test]
async fn mkio_transform_put_is_201_then_200_and_validates_the_thumbnail_preset() {
    let mkio = mkio().await;
    let docs = fake_mkio::load_example("docs-transform-thumbnail-sprite-and-png.json");
    let response = mkio_put(&mkio, &mkio.transform_url("sprites"), &docs).await;
    assert_eq!(response.status(), 201);
    let body = json_of(response).await;
    assert_eq!(body["name"], "sprites");
    assert_eq!(
        body["properties"]["outputs"][0]["preset"],
        docs["properties"]["outputs"][0]["preset"]
    );
    assert_eq!(
        body["properties"]["outputs"][0]["relativePriority"],
        "Normal"
    );
    for key in ["created", "lastModified"] {
        assert!(body["properties"][key].is_string(), "{key}");
    }
    for key in ["internalId", "createdBy", "createdAt", "lastModifiedAt"] {
        assert!(body["systemData"][key].is_string(), "{key}");
    }
    assert_eq!(mkio.transform("sprites").unwrap(), docs["properties"]);
    let response = mkio_put(&mkio, &mkio.transform_url("sprites"), &docs).await;
    assert_eq!(response.status(), 200);
    for file in [
        "docs-transform-thumbnail-single-png.json",
        "docs-transform-thumbnail-multiple-jpeg.json",
        "docs-transform-thumbnail-sprite.json",
    ] {
        let body = fake_mkio::load_example(file);
        let response = mkio_put(
            &mkio,
            &mkio.transform_url(file.trim_end_matches(".json")),
            &body,
        )
        .await;
        assert_eq!(response.status(), 201, "{file}");
    }

    let thumbs = "/properties/outputs/0/preset/thumbnails/0";
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/format", json!("Gif"), "thumbnails[0].format"),
        ("/format", Value::Null, "thumbnails[0].format"),
        ("/label", json!("bad label!"), "thumbnails[0].label"),
        ("/label", json!("x".repeat(65)), "thumbnails[0].label"),
        ("/spriteColumn", json!(11), "thumbnails[0].spriteColumn"),
        ("/step", json!("fast"), "thumbnails[0].step"),
        ("/range", json!("2"), "thumbnails[0].range"),
        ("/quality", json!(-1), "thumbnails[0].quality"),
    ];
    for (pointer, value, field) in cases {
        let mut body = docs.clone();
        *body
            .pointer_mut(&format!("{thumbs}{pointer}"))
            .unwrap_or_else(|| panic!("{pointer}")) = value;
        let response = mkio_put(&mkio, &mkio.transform_url("bad"), &body).await;
        assert_eq!(response.status(), 400, "{field}");
        let error = json_of(response).await;
        let detail = error["error"]["detail"].as_str().unwrap();
        assert!(detail.contains(field), "{field}: {detail}");
        assert_eq!(error["status"], 400);
        assert!(error["ref"].is_string());
    }
    let builtin = fake_mkio::load_example("docs-transform-put-builtin-encoder.json");
    let response = mkio_put(&mkio, &mkio.transform_url("bad"), &builtin).await;
    assert_eq!(response.status(), 400);
    assert!(
        json_of(response).await["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("preset.@odata.type")
    );
    let mut bad_base = docs.clone();
    bad_base["properties"]["outputs"][0]["preset"]["baseFilename"] = json!("no/slashes");
    let response = mkio_put(&mkio, &mkio.transform_url("bad"), &bad_base).await;
    assert!(
        json_of(response).await["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("baseFilename")
    );
    assert!(mkio.transform("bad").is_none());

    // The token is checked like for the other operations.
    let response = https_client()
        .put(mkio.transform_url("x"))
        .bearer_auth("wrong")
        .json(&docs)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(mkio.hits(MkioOp::PutTransform), 16);
}

#[tokio::test]
async fn mkio_asset_put_creates_an_asset_that_get_asset_returns() {
    let mkio = mkio().await;
    let docs = fake_mkio::load_example("docs-asset-put-request.json");
    let response = mkio_put(&mkio, &mkio.asset_url("source-video"), &docs).await;
    assert_eq!(response.status(), 201);
    let created = json_of(response).await;
    for key in ["storageAccountName", "container", "description", "subPath"] {
        assert_eq!(created["properties"][key], docs["properties"][key], "{key}");
    }
    assert_eq!(created["labels"], docs["labels"]);
    let asset = mkio.asset("source-video").unwrap();
    assert_eq!(created["properties"]["assetId"], json!(asset.asset_id));
    let got = json_of(mkio_get(&mkio, &mkio.asset_url("source-video")).await).await;
    assert_eq!(got, created);

    // Update: 200, only the description changes.
    let response = mkio_put(
        &mkio,
        &mkio.asset_url("source-video"),
        &json!({ "properties": { "storageAccountName": "primary-azure", "description": "new",
                                 "container": "moved" } }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let updated = json_of(response).await;
    assert_eq!(updated["properties"]["description"], "new");
    assert_eq!(updated["properties"]["container"], "source-video");
    assert_eq!(updated["properties"]["assetId"], json!(asset.asset_id));

    // A generated container; the storage instance is required and must exist.
    let response = mkio_put(
        &mkio,
        &mkio.asset_url("out"),
        &json!({ "properties": { "storageAccountName": "primary-azure" } }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let out = json_of(response).await;
    let id = out["properties"]["assetId"].as_str().unwrap().to_owned();
    assert_eq!(out["properties"]["container"], format!("asset-{id}"));
    assert!(out["properties"].get("subPath").is_none());
    for (body, field) in [
        (
            json!({ "properties": { "container": "x-y-z" } }),
            "storageAccountName",
        ),
        (
            json!({ "properties": { "storageAccountName": "elsewhere" } }),
            "storageAccountName",
        ),
        (
            json!({ "properties": { "storageAccountName": "primary-azure", "subPath": "/abs" } }),
            "subPath",
        ),
        (
            json!({ "properties": { "storageAccountName": "primary-azure", "container": "Bad_Name" } }),
            "container",
        ),
    ] {
        let response = mkio_put(&mkio, &mkio.asset_url("rejected"), &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let detail = json_of(response).await["error"]["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(detail.contains(field), "{detail}");
    }
    assert!(mkio.asset("rejected").is_none());
    assert_eq!(mkio.hits(MkioOp::PutAsset), 7);
}

#[tokio::test]
async fn mkio_job_runs_to_finished_and_writes_sprites_and_thumbnails_under_the_sub_paths() {
    let mkio = mkio().await;
    let az = Azurite::start_http().await;
    mkio.set_output_sink(sink_of(&az));
    let docs_asset = fake_mkio::load_example("docs-asset-put-request.json");
    mkio_put(&mkio, &mkio.asset_url("input-video"), &docs_asset).await;
    let response = mkio_put(
        &mkio,
        &mkio.asset_url("thumbs"),
        &json!({ "properties": { "storageAccountName": "primary-azure", "subPath": "out/thumbs" } }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let output = mkio.asset("thumbs").unwrap().container_name();
    let client = reqwest::Client::new();
    // The input's folder is `incoming`: a video beside it is not taken.
    seed::put_blob(
        &client,
        &az,
        "source-video",
        "a-root-video.mp4",
        b"x",
        "video/mp4",
    )
    .await;
    seed::put_blob(
        &client,
        &az,
        "source-video",
        "incoming/cover.jpg",
        b"x",
        "image/jpeg",
    )
    .await;
    seed::put_blob(
        &client,
        &az,
        "source-video",
        "incoming/video.mp4",
        b"x",
        "video/mp4",
    )
    .await;

    let docs = fake_mkio::load_example("docs-transform-thumbnail-sprite-and-png.json");
    mkio_put(&mkio, &mkio.transform_url("sprites"), &docs).await;
    let job = fake_mkio::load_example("docs-job-put-request.json");
    let mut job = job.clone();
    job["properties"]["input"]["assetName"] = json!("input-video");
    job["properties"]["outputs"][0]["assetName"] = json!("thumbs");
    let response = mkio_put(&mkio, &mkio.job_url("sprites", "job-001"), &job).await;
    assert_eq!(response.status(), 201);
    let created = json_of(response).await;
    assert_eq!(created["name"], "job-001");
    assert_eq!(created["properties"]["state"], "Queued");
    assert_eq!(
        created["properties"]["description"],
        job["properties"]["description"]
    );
    assert_eq!(created["properties"]["input"], job["properties"]["input"]);
    assert_eq!(
        created["properties"]["outputs"][0]["label"],
        "ThumbnailGeneratorPreset_0"
    );
    assert_eq!(created["properties"]["outputs"][0]["progress"], 0);

    let first = json_of(mkio_get(&mkio, &mkio.job_url("sprites", "job-001")).await).await;
    assert_eq!(first["properties"]["state"], "Processing");
    assert_eq!(first["properties"]["outputs"][0]["progress"], 50);
    let done = json_of(mkio_get(&mkio, &mkio.job_url("sprites", "job-001")).await).await;
    assert_eq!(done["properties"]["state"], "Finished", "{done}");
    assert_eq!(done["properties"]["outputs"][0]["progress"], 100);
    assert!(done["properties"]["endTime"].is_string());

    // The input named `files: ["video.mp4"]`: base name "video".
    assert_eq!(
        blob_names(&az, &output, "").await,
        [
            "out/thumbs/video_Sprite.vtt",
            "out/thumbs/video_Sprite000001.jpg",
            "out/thumbs/video_Thumbnail000001.png"
        ]
    );
    let (content_type, bytes) =
        read_blob(&az, &output, "out/thumbs/video_Thumbnail000001.png").await;
    assert_eq!(
        (content_type.as_str(), bytes),
        ("image/png", sample(ImageKind::Png))
    );
    let (content_type, bytes) = read_blob(&az, &output, "out/thumbs/video_Sprite000001.jpg").await;
    assert_eq!(
        (content_type.as_str(), bytes),
        ("image/jpeg", sample(ImageKind::Jpeg))
    );
    let (content_type, vtt) = read_blob(&az, &output, "out/thumbs/video_Sprite.vtt").await;
    assert_eq!(content_type, "text/vtt");
    let vtt = String::from_utf8(vtt).unwrap();
    // Step 1% of 60 s over 100%: 100 tiles of 160x90 (10% sizes) on 10 columns.
    assert_eq!(vtt.matches("video_Sprite000001.jpg#xywh=").count(), 100);
    assert!(
        vtt.contains("\n00:00:00.600 --> 00:00:01.200\nvideo_Sprite000001.jpg#xywh=160,0,160,90\n"),
        "{vtt}"
    );
    assert!(
        vtt.ends_with(
            "\n00:00:59.400 --> 00:01:00.000\nvideo_Sprite000001.jpg#xywh=1440,810,160,90\n"
        ),
        "{vtt}"
    );

    // Without `files`, the first video under the folder; baseFilename wins over its name.
    let mut multi = fake_mkio::load_example("docs-transform-thumbnail-multiple-jpeg.json");
    multi["properties"]["outputs"][0]["preset"]["baseFilename"] = json!("poster");
    mkio_put(&mkio, &mkio.transform_url("multi"), &multi).await;
    mkio_put(
        &mkio,
        &mkio.job_url("multi", "j2"),
        &job_body("input-video", "thumbs"),
    )
    .await;
    mkio.set_input_duration(120);
    mkio_get(&mkio, &mkio.job_url("multi", "j2")).await;
    let done = json_of(mkio_get(&mkio, &mkio.job_url("multi", "j2")).await).await;
    assert_eq!(done["properties"]["state"], "Finished");
    // 10% of 120 s = 12 s, then every 30 s while < 12 + 108: 12, 42, 72, 102.
    let names = blob_names(&az, &output, "out/thumbs/poster").await;
    assert_eq!(
        names,
        (1..=4)
            .map(|i| format!("out/thumbs/poster_{i:06}.jpg"))
            .collect::<Vec<_>>()
    );

    // A PUT on an existing job: 200, unchanged, no new run.
    let response = mkio_put(&mkio, &mkio.job_url("sprites", "job-001"), &job).await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_of(response).await["properties"]["state"], "Finished");
    assert_eq!(
        (mkio.hits(MkioOp::PutJob), mkio.hits(MkioOp::GetJob)),
        (3, 4)
    );
}

#[tokio::test]
async fn mkio_job_failures_errors_and_refused_writes() {
    let mkio = mkio().await;
    let az = Azurite::start_http().await;
    mkio.set_output_sink(sink_of(&az));
    mkio.set_job_steps(1);
    let storage =
        json!({ "properties": { "storageAccountName": "primary-azure", "subPath": "in" } });
    mkio_put(&mkio, &mkio.asset_url("in"), &storage).await;
    mkio_put(&mkio, &mkio.asset_url("out"), &storage).await;
    let input = mkio.asset("in").unwrap().container_name();
    // A video, but not under the asset's subPath.
    seed::put_blob(
        &reqwest::Client::new(),
        &az,
        &input,
        "video.mp4",
        b"x",
        "video/mp4",
    )
    .await;
    let single = fake_mkio::load_example("docs-transform-thumbnail-single-png.json");

    let response = mkio_put(&mkio, &mkio.job_url("t", "j"), &job_body("in", "out")).await;
    assert_eq!(response.status(), 404);
    assert_eq!(json_of(response).await["error"]["code"], "NotFound");
    mkio_put(&mkio, &mkio.transform_url("t"), &single).await;
    let response = mkio_put(&mkio, &mkio.job_url("t", "j"), &job_body("missing", "out")).await;
    assert_eq!(response.status(), 400);
    assert!(
        json_of(response).await["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("'missing'")
    );
    let response = mkio_get(&mkio, &mkio.job_url("t", "j")).await;
    assert_eq!(response.status(), 404);

    mkio_put(&mkio, &mkio.job_url("t", "novideo"), &job_body("in", "out")).await;
    let job = json_of(mkio_get(&mkio, &mkio.job_url("t", "novideo")).await).await;
    assert_eq!(job["properties"]["state"], "Error");
    let error = &job["properties"]["outputs"][0]["error"];
    assert_eq!(
        (&error["code"], &error["category"], &error["retry"]),
        (
            &json!("ContentMalformed"),
            &json!("Content"),
            &json!("DoNotRetry")
        )
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("No video file was found")
    );
    assert!(
        error.get("details").is_none(),
        "MK.IO's JobError has no details"
    );

    mkio.set_next_job_outcome(JobOutcome::fail(
        "DownloadNotAccessible",
        "gone",
        "Download",
        "MayRetry",
    ));
    mkio_put(&mkio, &mkio.job_url("t", "failing"), &job_body("in", "out")).await;
    let job = json_of(mkio_get(&mkio, &mkio.job_url("t", "failing")).await).await;
    assert_eq!(
        job["properties"]["outputs"][0]["error"]["code"],
        "DownloadNotAccessible"
    );
    assert_eq!(job["properties"]["outputs"][0]["error"]["message"], "gone");
    assert!(
        blob_names(&az, &mkio.asset("out").unwrap().container_name(), "")
            .await
            .is_empty()
    );

    // Faults, then a read-only token: every PUT refused with MK.IO's envelope, reads work.
    mkio.push_fault(MkioOp::PutAsset, RestFault::Status(500));
    assert_eq!(
        mkio_put(&mkio, &mkio.asset_url("x"), &storage)
            .await
            .status(),
        500
    );
    assert!(mkio.asset("x").is_none());
    mkio.set_writes_refused(Some(WriteRefusal {
        status: 403,
        code: "Forbidden".into(),
        message: "The token is read-only.".into(),
    }));
    for (url, body) in [
        (mkio.transform_url("t2"), single.clone()),
        (mkio.asset_url("x"), storage.clone()),
        (mkio.job_url("t", "j3"), job_body("in", "out")),
    ] {
        let response = mkio_put(&mkio, &url, &body).await;
        assert_eq!(response.status(), 403);
        let body = json_of(response).await;
        assert_eq!(body["error"]["code"], "Forbidden");
        assert_eq!(body["error"]["detail"], "The token is read-only.");
        assert_eq!(body["status"], 403);
        assert!(body["ref"].is_string());
    }
    assert!(
        mkio.transform("t2").is_none()
            && mkio.asset("x").is_none()
            && mkio.job("t", "j3").is_none()
    );
    assert_eq!(mkio_get(&mkio, &mkio.asset_url("in")).await.status(), 200);
    assert_eq!(
        mkio_get(&mkio, &mkio.job_url("t", "failing"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn encoding_without_an_output_sink_fails_loudly_instead_of_writing_nothing() {
    let (arm, token) = arm().await;
    arm.set_job_steps(1);
    arm.add_asset(FakeAsset::new("in", Uuid::new_v4()));
    put_json(&arm.transform_url("t"), &token, &ams_thumbnail_transform()).await;
    put_json(&arm.job_url("t", "j"), &token, &job_body("in", "in")).await;
    // The handler panics ("no output sink is set"): the request gets no answer at all.
    let result = https_client()
        .get(arm.job_url("t", "j"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_ne!(
        arm.job("t", "j").unwrap()["properties"]["state"],
        "Finished"
    );

    let mkio = mkio().await;
    mkio.set_job_steps(1);
    let storage = json!({ "properties": { "storageAccountName": "primary-azure" } });
    mkio_put(&mkio, &mkio.asset_url("in"), &storage).await;
    let single = fake_mkio::load_example("docs-transform-thumbnail-single-png.json");
    mkio_put(&mkio, &mkio.transform_url("t"), &single).await;
    mkio_put(&mkio, &mkio.job_url("t", "j"), &job_body("in", "in")).await;
    let result = https_client()
        .get(mkio.job_url("t", "j"))
        .bearer_auth(mkio.token())
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
}

/// A client assertion signed with `key` (PKCS#8 DER) by hand, with the given header and claims.
fn hand_signed_assertion(key: &[u8], header: Value, claims: Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn entra_checks_certificate_and_federated_assertions() {
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;

    let (pem, der) = crate::default_credential::generated_certificate();
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let key = key.secret_der().to_vec();
    let (_, other_der) = crate::default_credential::generated_certificate();
    let entra = FakeEntra::new()
        .with_certificate(der.clone())
        .with_federated_token("projected-token-7e57")
        .serve_https(tls::shared())
        .await;
    let client_id = entra.client_id();
    let x5t = |der: &[u8]| URL_SAFE_NO_PAD.encode(digest(&SHA1_FOR_LEGACY_USE_ONLY, der));
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "aud": entra.token_url(), "iss": client_id, "sub": client_id,
        "jti": Uuid::new_v4().to_string(), "nbf": now, "iat": now, "exp": now + 300,
    });
    let header = json!({ "alg": "RS256", "typ": "JWT", "x5t": x5t(&der) });
    let post = |client: String, assertion: String| {
        let entra = entra.clone();
        async move {
            https_client()
                .post(entra.token_url())
                .form(&[
                    ("client_id", client.as_str()),
                    ("client_assertion", assertion.as_str()),
                    ("client_assertion_type", fake_entra::JWT_BEARER),
                    ("grant_type", "client_credentials"),
                    ("scope", "https://storage.azure.com/.default"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let good = hand_signed_assertion(&key, header.clone(), claims.clone());
    let response = post(client_id.clone(), good).await;
    assert_eq!(response.status(), 200);
    assert_eq!(entra.issued_tokens()[0].form, TokenForm::ClientCertificate);

    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("https://login.microsoftonline.com/other/oauth2/v2.0/token");
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 1);
    let mut other_cert = header.clone();
    other_cert["x5t"] = json!(x5t(&other_der));
    // One character inside the signature changed (the last one may hold only padding bits,
    // and may already be the replacement: the test then passed a valid signature).
    let signed = hand_signed_assertion(&key, header.clone(), claims.clone());
    let at = signed.len() - 10;
    let flipped = if &signed[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &signed[..at], &signed[at + 1..]);
    for (case, assertion, expected) in [
        (
            "aud",
            hand_signed_assertion(&key, header.clone(), wrong_aud),
            "aud",
        ),
        (
            "exp",
            hand_signed_assertion(&key, header.clone(), expired),
            "time range",
        ),
        (
            "x5t",
            hand_signed_assertion(&key, other_cert, claims.clone()),
            "x5t",
        ),
        ("signature", tampered, "signature"),
    ] {
        let response = post(client_id.clone(), assertion).await;
        assert_eq!(response.status(), 401, "{case}");
        let body = json_of(response).await;
        assert_eq!(body["error"], "invalid_client", "{case}");
        assert_eq!(body["error_codes"], json!([700027]), "{case}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(expected), "{case}: {description}");
    }

    // The workload identity presents the projected token itself.
    let wi = entra.workload_identity_client_id();
    assert_eq!(
        post(wi.clone(), "projected-token-7e57".into())
            .await
            .status(),
        200
    );
    let refused = json_of(post(wi, "some-other-token".into()).await).await;
    assert_eq!(refused["error_codes"], json!([700213]));
    assert_eq!(entra.token_requests(TokenForm::WorkloadIdentity), 2);
    assert_eq!(
        entra.issued_tokens().len(),
        2,
        "one certificate, one federated token"
    );
}

#[tokio::test]
async fn entra_imds_form_needs_the_metadata_header_and_a_known_api_version() {
    let entra = FakeEntra::start_https(tls::shared()).await;
    let proxy = entra.serve_imds_proxy().await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).unwrap())
        .build()
        .unwrap();
    let imds = "http://169.254.169.254/metadata/identity/oauth2/token";
    let get = |query: &'static str, metadata: bool| {
        let mut request = client.get(format!("{imds}?{query}"));
        if metadata {
            request = request.header("Metadata", "true");
        }
        request.send()
    };
    let ok = get(
        "api-version=2018-02-01&resource=https://storage.azure.com/",
        true,
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let body = json_of(ok).await;
    assert_eq!(body["resource"], "https://storage.azure.com/");
    assert!(
        body["expires_on"].is_string(),
        "IMDS sends numbers as strings"
    );
    let claims = fake_entra::verify_jwt(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(claims["oid"], entra.managed_identity_object_id());

    for (query, metadata, description) in [
        (
            "api-version=2018-02-01&resource=r",
            false,
            "metadata header",
        ),
        ("api-version=2017-01-01&resource=r", true, "api-version"),
        ("api-version=2019-08-01", true, "resource"),
        (
            "api-version=2019-08-01&resource=r&client_id=someone",
            true,
            "Identity not found",
        ),
    ] {
        let response = get(query, metadata).await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body = json_of(response).await;
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(description),
            "{query}: {body}"
        );
    }
    let requests = entra.imds_requests();
    assert_eq!(requests.len(), 5);
    assert!(requests.iter().all(|r| r.host == "169.254.169.254"));
    assert_eq!(entra.token_requests(TokenForm::Imds), 5);
}
